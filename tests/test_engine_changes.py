"""Finding changes through change streams (SPEC §4 "Finding changes"): after a first sync,
a sync reads only what changed on either side; it reads both sides whole, and says why,
on a first sync, with --full, on a standalone server, when the resume point left the
server's history, and after a collection was dropped or recreated. The result is the
same either way.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from bson import ObjectId
from pymongo import MongoClient
from pymongo.database import Database

from tests.engine_kit import Pair, make_pair, snapshot, syncd
from tests.support.daemon import wait_until
from tests.support.pause import during
from tests.support.servers import MongoServer

PUSH = ("sync", "to_production", "--yes")
PULL = ("sync", "from_production")
Capsys = pytest.CaptureFixture[str]
RULES = """
- name: contracts
- name: people
"""


def seed(db: Database[Any], n: int = 50) -> None:
    db.contracts.insert_many([{"_id": i, "status": "draft", "n": i} for i in range(n)])
    db.people.insert_many([{"_id": ObjectId(), "name": f"p{i}"} for i in range(10)])


def modes(outcome_json: str) -> dict[str, tuple[str, str | None]]:
    plan = json.loads(outcome_json)
    return {c["collection"]: (c["mode"], c["full_read_reason"]) for c in plan["collections"]}


def plan_json(capsys: Capsys, pair: Pair, *args: str) -> dict[str, Any]:
    result = syncd(capsys, pair.config, "sync", *args, "--dry-run", "--json")
    assert result.code == 0, result.err
    return dict(json.loads(result.out))


def counts(plan: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """What a plan would do per collection, without how it was found."""
    keys = ("source_docs", "target_docs", "inserts", "updates", "deletes", "drift", "kept")
    return {c["collection"]: tuple(c[k] for k in keys) for c in plan["collections"]}


@pytest.fixture
def pushed(pair: Pair, capsys: Capsys) -> Pair:
    pair.configure(collections=RULES, hook=False, before_sync="changes")
    seed(pair.local)
    first = syncd(capsys, pair.config, *PUSH)
    assert first.code == 0, first.err
    return pair


def test_the_first_sync_reads_both_sides_whole_and_says_why(pair: Pair, capsys: Capsys) -> None:
    pair.configure(collections=RULES, hook=False)
    seed(pair.local)

    first = syncd(capsys, pair.config, *PUSH)

    assert first.code == 0, first.err
    assert "contracts: reading both sides whole: first sync" in first.err
    assert re.search(r"^contracts .* full read \(first sync", first.out, re.M), first.out


def test_a_sync_after_a_sync_finds_the_changes_by_change_streams(
    pushed: Pair, capsys: Capsys
) -> None:
    pair = pushed
    pair.local.contracts.update_one({"_id": 3}, {"$set": {"status": "signed"}})
    pair.local.contracts.insert_one({"_id": 1000, "status": "new"})
    pair.local.contracts.delete_one({"_id": 7})

    plan = plan_json(capsys, pair, "to_production")
    assert {c["collection"]: c["mode"] for c in plan["collections"]} == {
        "contracts": "changes",
        "people": "changes",
    }
    assert counts(plan)["contracts"] == (50, 50, 1, 1, 1, 0, 0)
    result = syncd(capsys, pair.config, *PUSH)

    assert result.code == 0, result.err
    assert "reading both sides whole" not in result.err
    assert snapshot(pair.production) == snapshot(pair.local)
    assert counts(plan_json(capsys, pair, "to_production"))["contracts"] == (50, 50, 0, 0, 0, 0, 0)


def test_status_shows_how_changes_are_found(pushed: Pair, capsys: Capsys) -> None:
    status = syncd(capsys, pushed.config, "status", "to_production")

    assert status.code == 0, status.err
    assert re.search(r"^contracts .* change streams ", status.out, re.M), status.out
    as_json = json.loads(syncd(capsys, pushed.config, "status", "--json").out)
    entries = as_json["flows"]["from_production"]["collections"]
    assert {e["collection"]: e["mode"] for e in entries} == {
        "contracts": "changes",
        "people": "changes",
    }


def test_a_sync_on_a_busy_source_catches_up_to_its_start_and_ends(
    pushed: Pair, capsys: Capsys
) -> None:
    """A source that never stops writing: the sync reads the changes up to the moment it
    began, not the writes that follow it, and ends while they go on. The writer starts
    once the source's stream read has its fence (held there until 100 writes are past it),
    so the writes before the fence never pass the change budget, however fast they are."""
    pair = pushed
    stop, written = threading.Event(), [0]

    def keep_writing() -> None:
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            written[0] += 1
            pair.local.contracts.update_one({"_id": written[0] % 50}, {"$inc": {"n": 1000}})

    writer = threading.Thread(target=keep_writing, daemon=True)

    def start_writing() -> None:
        writer.start()
        wait_until(lambda: written[0] >= 100, what="writes past the fence")

    try:
        with during(pair.root, {f"changes.fence@{pair.local.name}": start_writing}):
            result = syncd(capsys, pair.config, *PUSH)
        still_writing = writer.is_alive() and not stop.is_set()
    finally:
        stop.set()
        if writer.is_alive():
            writer.join()

    assert result.code == 0, result.err
    assert still_writing, "the sync followed the writes until the writer gave up"
    assert "reading both sides whole" not in result.err
    again = syncd(capsys, pair.config, *PUSH)
    assert again.code == 0, again.err
    assert snapshot(pair.production) == snapshot(pair.local)


def test_a_target_edit_between_syncs_is_drift_found_without_a_full_read(
    pushed: Pair, capsys: Capsys
) -> None:
    pair = pushed
    pair.production.contracts.update_one({"_id": 5}, {"$set": {"status": "edited in UI"}})
    pair.local.contracts.update_one({"_id": 5}, {"$set": {"status": "edited locally"}})

    refused = syncd(capsys, pair.config, *PUSH)

    assert refused.code == 3
    assert "contracts: changed on production since the last sync: 5" in refused.err
    assert "reading both sides whole" not in refused.err
    assert pair.production.contracts.find_one({"_id": 5})["status"] == "edited in UI"
    # A pull the other way takes production's edit, found by change streams as well.
    pulled = syncd(capsys, pair.config, *PULL, "--drift", "overwrite")
    assert pulled.code == 0, pulled.err
    assert "reading both sides whole" not in pulled.err
    assert snapshot(pair.local) == snapshot(pair.production)


def test_full_reads_both_sides_whole_and_plans_the_same(pushed: Pair, capsys: Capsys) -> None:
    pair = pushed
    pair.local.contracts.update_many({"_id": {"$lt": 10}}, {"$set": {"status": "bulk"}})
    pair.production.people.insert_one({"_id": ObjectId(), "name": "added in production"})

    by_changes = plan_json(capsys, pair, "to_production")
    full = plan_json(capsys, pair, "to_production", "--full")

    assert counts(by_changes) == counts(full)
    assert {c["mode"] for c in full["collections"]} == {"full"}
    assert {c["full_read_reason"] for c in full["collections"]} == {"--full asked for a full read"}
    result = syncd(capsys, pair.config, *PUSH, "--full", "--drift", "overwrite")
    assert result.code == 0, result.err
    assert "contracts: reading both sides whole: --full asked for a full read" in result.err
    assert snapshot(pair.production) == snapshot(pair.local)


def test_a_source_collection_dropped_and_recreated_falls_back_and_converges(
    pushed: Pair, capsys: Capsys
) -> None:
    pair = pushed
    pair.local.contracts.drop()
    pair.local.contracts.insert_many([{"_id": i, "status": "recreated"} for i in range(20)])

    result = syncd(capsys, pair.config, *PUSH)

    assert result.code == 0, result.err
    assert re.search(
        r"contracts: reading local whole \((dropped|the collection was).*\); production: by its "
        r"change stream",
        result.err,
    )
    assert snapshot(pair.production) == snapshot(pair.local)
    again = plan_json(capsys, pair, "to_production")
    assert modes(json.dumps(again))["contracts"] == ("changes", None)
    assert counts(again)["contracts"] == (20, 20, 0, 0, 0, 0, 0)


def test_a_collection_run_advances_only_its_own_resume_points(pushed: Pair, capsys: Capsys) -> None:
    pair = pushed
    pair.local.contracts.update_one({"_id": 1}, {"$set": {"status": "one"}})
    pair.local.people.insert_one({"_id": ObjectId(), "name": "new person"})

    only = syncd(capsys, pair.config, *PUSH, "-C", "contracts")
    assert only.code == 0, only.err

    plan = plan_json(capsys, pair, "to_production")
    assert counts(plan)["contracts"][2:5] == (0, 0, 0)
    assert counts(plan)["people"][2:5] == (1, 0, 0)  # still pending: its point did not move
    assert {c["mode"] for c in plan["collections"]} == {"changes"}
    assert syncd(capsys, pair.config, *PUSH).code == 0
    assert snapshot(pair.production) == snapshot(pair.local)


@pytest.fixture
def own_servers(
    local_db: Database[Any],
    local_uri: str,
    mongo_server_factory: Callable[..., MongoServer],
    tmp_path: Any,
) -> Iterator[Callable[..., tuple[Pair, MongoServer]]]:
    """A pair whose production is a server of the test's own (it may be restarted)."""
    clients: list[MongoClient[Any]] = []

    def make(**server_options: Any) -> tuple[Pair, MongoServer]:
        server = mongo_server_factory(**server_options)
        client = server.client()
        clients.append(client)
        pair = make_pair(
            local_db,
            client["prod"],
            local_uri,
            server.uri_for("prod"),
            tmp_path,
            hook=False,
            collections=RULES,
            before_sync="changes",
        )
        return pair, server

    yield make
    for client in clients:
        client.close()


def test_a_server_restarted_between_syncs_is_resumed_not_reread(
    own_servers: Callable[..., tuple[Pair, MongoServer]], capsys: Capsys
) -> None:
    pair, server = own_servers()
    seed(pair.local)
    assert syncd(capsys, pair.config, *PUSH).code == 0
    pair.local.contracts.update_one({"_id": 2}, {"$set": {"status": "after restart"}})
    server.restart()

    result = syncd(capsys, pair.config, *PUSH)

    assert result.code == 0, result.err
    assert "reading both sides whole" not in result.err
    with server.client() as client:
        assert snapshot(client["prod"]) == snapshot(pair.local)


def test_a_standalone_server_is_read_whole_and_says_so(
    own_servers: Callable[..., tuple[Pair, MongoServer]], capsys: Capsys
) -> None:
    pair, _ = own_servers(extra_args=("--standalone",))
    seed(pair.local)
    assert syncd(capsys, pair.config, *PUSH).code == 0
    pair.local.contracts.update_one({"_id": 2}, {"$set": {"status": "x"}})

    result = syncd(capsys, pair.config, *PUSH)

    assert result.code == 0, result.err
    assert (
        "reading production whole (a standalone server has no change streams); local: by its "
        "change stream" in result.err
    ), result.err
    assert "reading both sides whole" not in result.err
    assert snapshot(pair.production) == snapshot(pair.local)


def test_a_resume_point_gone_from_the_history_falls_back_to_a_full_read(
    own_servers: Callable[..., tuple[Pair, MongoServer]], capsys: Capsys
) -> None:
    pair, server = own_servers(extra_args=("--oplog-max-entries", "50"))
    seed(pair.local)
    assert syncd(capsys, pair.config, *PUSH).code == 0
    pair.production.scratch.insert_many([{"n": i} for i in range(300)])  # pushes history out
    pair.production.client.admin.command("secantusAdmin.pruneOplog")
    pair.local.contracts.update_one({"_id": 2}, {"$set": {"status": "x"}})

    result = syncd(capsys, pair.config, *PUSH)

    assert result.code == 0, result.err
    assert re.search(
        r"reading production whole \(the resume point is no longer in the change "
        r"history of 'production'.*\); local: by its change stream",
        result.err,
    ), result.err
    assert snapshot(pair.production, ["contracts", "people"]) == snapshot(pair.local)
    again = syncd(capsys, pair.config, *PUSH)
    assert "reading both sides whole" not in again.err
    assert server.is_running


def test_an_endpoint_pointed_at_another_database_starts_the_pair_afresh(
    pushed: Pair, capsys: Capsys
) -> None:
    """The memory belongs to the two databases: local repointed at a new, empty database
    is not taken for 60 deleted documents (drift), and syncd says the pair starts afresh."""
    pair = pushed
    fresh = pair.local.client[pair.local.name + "_fresh"]
    fresh_uri = pair.local_uri.replace(f"/{pair.local.name}", f"/{fresh.name}")
    assert fresh_uri != pair.local_uri
    moved = Pair(fresh, pair.production, fresh_uri, pair.production_uri, pair.root)
    moved.configure(collections=RULES, hook=False, before_sync="changes")
    try:
        pulled = syncd(capsys, moved.config, *PULL)

        assert pulled.code == 0, pulled.err
        assert "now point at other databases than at their last sync" in pulled.err
        assert "starts afresh" in pulled.err
        assert snapshot(fresh) == snapshot(pair.production)
        again = syncd(capsys, moved.config, *PULL)
        assert "starts afresh" not in again.err
    finally:
        pair.local.client.drop_database(fresh.name)
