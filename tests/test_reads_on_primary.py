"""Issue 22, point 2: every read syncd makes goes to the primary, whatever the URI asks.

An Atlas connection string often says `readPreference=secondaryPreferred`; a sync that read
its resume point from one member and its documents from a lagging one would lose writes.
Each endpoint's URI here reaches a replica set (the set's name, no directConnection, so
pymongo routes by read preference: with a direct connection it sends primaryPreferred
whatever the URI says) and asks for secondaryPreferred. Command monitoring records every
command syncd sends in a push, a sync by change streams, `verify`, `diff`, `status` and a
backup: none asks for a member other than the primary, each goes to the primary, and the
log says once per endpoint that the URI's preference is not followed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import MongoClient, monitoring

from syncd import endpoints, primary_reads
from tests.engine_kit import Pair, make_pair, syncd
from tests.support.servers import Server

Capsys = pytest.CaptureFixture[str]


class Recorder(monitoring.CommandListener):
    def __init__(self) -> None:
        self.events: list[monitoring.CommandStartedEvent] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.events.append(event)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def replica_set_uri(server: Server, database: str) -> str | None:
    """A URI that lets pymongo discover the set and route by read preference, or None
    where the server is no replica set member."""
    with server.client() as client:
        hello = client.admin.command("hello")
    if not hello.get("setName") or not hello.get("primary"):
        return None
    uri = server.uri_for(database).replace(
        "directConnection=true", f"replicaSet={hello['setName']}"
    )
    return f"{uri}&readPreference=secondaryPreferred"


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    """Every client syncd opens for an endpoint reports its commands here."""
    recorder = Recorder()

    def client(uri: str, **options: Any) -> MongoClient[Any]:
        return MongoClient(uri, event_listeners=[recorder], **options)

    monkeypatch.setattr(endpoints, "MongoClient", client)
    monkeypatch.setattr(primary_reads, "_said", set())
    yield recorder


def test_every_read_goes_to_the_primary_whatever_the_uri_asks(
    server_local: Server,
    server_production: Server,
    local_db: Any,
    production_db: Any,
    tmp_path: Any,
    recorded: Recorder,
    capsys: Capsys,
) -> None:
    local_uri = replica_set_uri(server_local, local_db.name)
    production_uri = replica_set_uri(server_production, production_db.name)
    if local_uri is None or production_uri is None:
        pytest.skip("needs replica set members (a standalone has one member to read from)")
    pair: Pair = make_pair(local_db, production_db, local_uri, production_uri, tmp_path, hook=False)
    pair.local.contracts.insert_many([{"_id": i, "n": i} for i in range(20)])

    steps = [
        ("sync", "to_production", "--yes"),  # a first copy
        ("status",),
        ("verify", "to_production"),
    ]
    outcomes = [syncd(capsys, pair.config, *step) for step in steps]
    pair.local.contracts.update_one({"_id": 3}, {"$set": {"n": 33}})
    pair.production.contracts.delete_one({"_id": 4})  # drift: overwritten below
    for step in [
        ("diff", "to_production"),
        ("sync", "to_production", "--yes", "--drift", "overwrite"),  # by change streams
        ("backup", "create", "production"),
    ]:
        outcomes.append(syncd(capsys, pair.config, *step))
    for step, outcome in zip([*steps, "diff", "sync", "backup"], outcomes, strict=True):
        assert outcome.code in (0, 1), (step, outcome.text)
    assert outcomes[-2].code == 0 and outcomes[-1].code == 0, outcomes[-2].text

    primaries = {
        _address(server_local),
        _address(server_production),
    }
    # endSessions is pymongo's own clean-up when a client closes (primaryPreferred by the
    # driver specs); it reads nothing.
    sent = [e for e in recorded.events if e.command_name != "endSessions"]
    assert {e.command_name for e in sent} >= {"find", "aggregate", "listCollections"}
    asked = {
        e.command_name: e.command["$readPreference"]
        for e in sent
        if e.command.get("$readPreference", {"mode": "primary"}).get("mode") != "primary"
    }
    assert asked == {}, f"commands that asked for another member than the primary: {asked}"
    assert {_address_of(e) for e in sent} <= primaries
    text = "".join(o.text for o in outcomes)
    said = text.count("the URI asks for readPreference=secondaryPreferred")
    assert said == 2, text  # once per endpoint (local and production), not once per run


def _address(server: Server) -> str:
    with server.client() as client:
        return str(client.admin.command("hello")["primary"])


def _address_of(event: monitoring.CommandStartedEvent) -> str:
    host, port = event.connection_id
    return f"{host}:{port}"
