"""A standalone on one side (SPEC §4 "Finding changes"): that side is read whole and only
that side; the other side's change stream is followed from its resume point. The plans,
refusals and end states are those of `--full` (the property test checks that at large);
`--dry-run`, `status` and the log line say per side how the changes were found; and a
pull into a standalone local sends production no read of a whole collection."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId
from pymongo import monitoring
from pymongo.database import Database

from tests.engine_kit import Pair, make_pair, snapshot, syncd
from tests.support.delayproxy import DelayProxy
from tests.support.servers import MongoServer

Capsys = pytest.CaptureFixture[str]
PULL = ("sync", "from_production")
PUSH = ("sync", "to_production", "--yes")
RULES = """
- name: contracts
- name: people
"""
STANDALONE = "a standalone server has no change streams"


class Commands(monitoring.CommandListener):
    """The commands this process sends, per server port, while `recording`."""

    def __init__(self) -> None:
        self.recording = False
        self.lock = threading.Lock()
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.recording:
            with self.lock:
                self.sent.append((event.database_name, event.command_name, dict(event.command)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        return None

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        return None

    def whole_reads(self, database: str, names: set[str]) -> list[tuple[str, dict[str, Any]]]:
        """Reads of a whole collection (a find or aggregate not by `_id`) of `database`."""
        found = []
        for at, name, command in self.sent:
            if at != database or name not in ("find", "aggregate", "count", "countDocuments"):
                continue
            if command.get(name) not in names:
                continue
            wanted = command.get("filter") or {}
            if name == "find" and "_id" in wanted:
                continue
            found.append((name, command))
        return found


COMMANDS = Commands()
monitoring.register(COMMANDS)  # clients made from here on; records only while asked


@pytest.fixture
def recorded() -> Iterator[Commands]:
    COMMANDS.sent = []
    COMMANDS.recording = True
    try:
        yield COMMANDS
    finally:
        COMMANDS.recording = False


@pytest.fixture
def standalone_local(
    production_db: Database[Any],
    production_uri: str,
    mongo_server_factory: Callable[..., MongoServer],
    tmp_path: Path,
) -> Iterator[tuple[Pair, MongoServer]]:
    """A pair whose local is a standalone mongod of the test's own; production a replica set."""
    server = mongo_server_factory(extra_args=("--standalone",))
    with server.client() as client:
        pair = make_pair(
            client["loc"],
            production_db,
            server.uri_for("loc"),
            production_uri,
            tmp_path,
            hook=False,
            collections=RULES,
            before_sync="changes",
        )
        yield pair, server


def seed(db: Database[Any], n: int = 40) -> None:
    db.contracts.insert_many([{"_id": i, "status": "draft", "n": i} for i in range(n)])
    db.people.insert_many([{"_id": ObjectId(), "name": f"p{i}"} for i in range(10)])


def test_a_pull_into_a_standalone_local_follows_production_and_reads_only_local_whole(
    standalone_local: tuple[Pair, MongoServer], capsys: Capsys, recorded: Commands
) -> None:
    pair, _ = standalone_local
    seed(pair.production)
    assert syncd(capsys, pair.config, *PULL).code == 0
    pair.production.contracts.update_one({"_id": 7}, {"$set": {"status": "signed"}})

    recorded.sent = []
    plan = json.loads(syncd(capsys, pair.config, *PULL, "--dry-run", "--json").out)
    status = syncd(capsys, pair.config, "status", "from_production")
    pulled = syncd(capsys, pair.config, *PULL)
    recorded.recording = False

    assert pulled.code == 0, pulled.err
    by_name = {c["collection"]: c for c in plan["collections"]}
    assert {n: (c["mode"], c["updates"]) for n, c in by_name.items()} == {
        "contracts": ("source-changes", 1),
        "people": ("source-changes", 0),
    }
    assert by_name["contracts"]["found_by"] == {
        "production": "change stream",
        "local": f"read whole ({STANDALONE})",
    }
    assert f"production: change stream; local: read whole ({STANDALONE})" in status.out
    assert (
        f"2 collections: reading local whole ({STANDALONE}); production: by its change stream"
        in (pulled.err)
    )
    assert "reading both sides whole" not in pulled.err
    assert snapshot(pair.local) == snapshot(pair.production)
    assert recorded.whole_reads(pair.production.name, {"contracts", "people"}) == []


def test_a_push_from_a_standalone_local_follows_production_for_drift(
    standalone_local: tuple[Pair, MongoServer], capsys: Capsys
) -> None:
    pair, _ = standalone_local
    seed(pair.local)
    assert syncd(capsys, pair.config, *PUSH).code == 0
    pair.local.contracts.update_one({"_id": 3}, {"$set": {"status": "edited locally"}})
    pair.production.contracts.update_one({"_id": 5}, {"$set": {"status": "edited in prod"}})

    for args in ((), ("--full",)):
        plan = json.loads(syncd(capsys, pair.config, *PUSH, *args, "--dry-run", "--json").out)
        contracts = next(c for c in plan["collections"] if c["collection"] == "contracts")
        assert (contracts["updates"], contracts["drift"]) == (2, 1)
        assert contracts["mode"] == ("full" if args else "target-changes")
    refused = syncd(capsys, pair.config, *PUSH)
    assert refused.code != 0 and "1 document(s) changed on the target" in refused.err

    pair.production.contracts.update_one({"_id": 5}, {"$set": {"status": "draft"}})
    pushed = syncd(capsys, pair.config, *PUSH)
    assert pushed.code == 0, pushed.err
    assert snapshot(pair.production) == snapshot(pair.local)
    again = json.loads(syncd(capsys, pair.config, *PUSH, "--dry-run", "--json").out)
    assert {c["mode"] for c in again["collections"]} == {"target-changes"}
    assert not any(c["inserts"] + c["updates"] + c["deletes"] for c in again["collections"])


def test_a_no_op_pull_into_a_standalone_reads_no_whole_collection_through_the_link(
    standalone_local: tuple[Pair, MongoServer], capsys: Capsys
) -> None:
    """Through the benchmark's proxy (bench/far.py), with no delay: a no-op pull into a
    standalone local reads a small share of what production holds (its stream, its
    listings), not production whole."""
    pair, _ = standalone_local
    pair.production.contracts.insert_many(
        [{"_id": i, "status": "draft", "text": "x" * 2000} for i in range(500)]
    )
    size = pair.production.command("dbStats")["dataSize"]
    host, port = pair.production.client.address or ("127.0.0.1", 0)
    with DelayProxy(host, port, delay=0.0) as proxy:
        far = pair.production_uri.replace(f"{host}:{port}", f"127.0.0.1:{proxy.port}")
        pair = dataclasses.replace(pair, production_uri=far)
        pair.configure(hook=False, collections=RULES, before_sync="changes")
        first = syncd(capsys, pair.config, *PULL)
        assert first.code == 0, first.err
        copied = proxy.reset()
        noop = syncd(capsys, pair.config, *PULL)
        counted = proxy.reset()

    assert noop.code == 0, noop.err
    assert copied.bytes_down > size  # the first pull read production whole, through the proxy
    assert counted.bytes_down < 0.05 * size, counted
    assert counted.requests > 0


def _through_proxy(pair: Pair, proxy: DelayProxy) -> Pair:
    host, port = pair.production.client.address or ("127.0.0.1", 0)
    far = pair.production_uri.replace(f"{host}:{port}", f"127.0.0.1:{proxy.port}")
    pair = dataclasses.replace(pair, production_uri=far)
    pair.configure(hook=False, collections=RULES, before_sync="changes")
    return pair


def test_status_reads_each_listing_and_spec_of_production_once_for_all_its_flows(
    standalone_local: tuple[Pair, MongoServer], capsys: Capsys
) -> None:
    """`status` plans both flows at once; what they would each read of production (its
    listing, each collection's indexes, a resume point) is read once for both."""
    pair, _ = standalone_local
    seed(pair.production)
    host, port = pair.production.client.address or ("127.0.0.1", 0)
    with DelayProxy(host, port, delay=0.0, trace=True) as proxy:
        pair = _through_proxy(pair, proxy)
        assert syncd(capsys, pair.config, *PULL).code == 0
        proxy.take_trace()
        status = syncd(capsys, pair.config, "status")
        sent = [m.command for m in proxy.take_trace() if m.up]

    assert status.code == 0, status.err
    assert "from_production" in status.out and "to_production" in status.out
    assert sent.count("listCollections") == 1, sent
    assert sent.count("listIndexes") == 2, sent  # contracts, people: once each
    # one resume point taken, and each flow's read of production's stream
    assert sent.count("aggregate") == 3, sent


def test_a_pull_reads_production_s_stream_up_to_where_the_run_began_without_asking_the_time(
    standalone_local: tuple[Pair, MongoServer], capsys: Capsys
) -> None:
    """The stream is read up to the point the run took first: no `ping` for a fence once
    the run has its resume point (over a slow link, a round trip saved)."""
    pair, _ = standalone_local
    seed(pair.production)
    host, port = pair.production.client.address or ("127.0.0.1", 0)
    with DelayProxy(host, port, delay=0.0, trace=True) as proxy:
        pair = _through_proxy(pair, proxy)
        assert syncd(capsys, pair.config, *PULL).code == 0
        pair.production.contracts.update_one({"_id": 3}, {"$set": {"status": "signed"}})
        proxy.take_trace()
        pulled = syncd(capsys, pair.config, *PULL)
        sent = [m.command for m in proxy.take_trace() if m.up]

    assert pulled.code == 0, pulled.err
    assert pair.local.contracts.find_one({"_id": 3})["status"] == "signed"
    first_stream = sent.index("aggregate")
    assert "ping" not in sent[first_stream:], sent
