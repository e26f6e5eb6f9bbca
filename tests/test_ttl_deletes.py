"""Issue 22, point 5: a document the target's own TTL index deleted is not drift.

A sync copies the source's TTL index, and the target's TTL monitor then deletes expired
documents by itself, often before the source's does. SecantusDB runs a TTL monitor, as
mongod does, every 60 s; so that the test decides when it runs, both servers here have
the background pass off (`ttl_sweep_seconds = 0`) and the target's pass is run on demand
with SecantusDB's `secantusAdmin.pruneTtl`, the same code its monitor runs: the delete
reaches syncd as any TTL delete does, a delete on the target (and its change stream).
The source keeps the expired document (its monitor has not run yet), as happens on real
servers for up to a minute.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bson
import pytest

from syncd.engine.ttl import expired_by, expiry_rules
from syncd.mongo.source import CollectionSpec
from tests.engine_kit import make_pair, snapshot, syncd
from tests.support.servers import MongoServer

Capsys = pytest.CaptureFixture[str]
NO_TTL_MONITOR = "[storage]\nttl_sweep_seconds = 0\n"
PUSH = ("sync", "to_production", "--yes")


@pytest.fixture
def quiet_servers(mongo_server_factory: Callable[..., MongoServer]) -> list[MongoServer]:
    return [mongo_server_factory(config_text=NO_TTL_MONITOR) for _ in range(2)]


def test_a_document_the_targets_ttl_index_deleted_is_not_drift(
    quiet_servers: list[MongoServer], tmp_path: Path, capsys: Capsys
) -> None:
    local, production = quiet_servers
    with local.client() as local_client, production.client() as production_client:
        local_db, production_db = local_client.app, production_client.app
        pair = make_pair(
            local_db,
            production_db,
            local.uri_for("app"),
            production.uri_for("app"),
            tmp_path,
            hook=False,
        )
        now = dt.datetime.now(dt.UTC)
        sessions: list[dict[str, Any]] = [
            {"_id": f"live-{i}", "expires_at": now + dt.timedelta(days=1)} for i in range(3)
        ]
        sessions += [{"_id": "ended", "expires_at": now - dt.timedelta(hours=2)}]
        local_db.sessions.insert_many(sessions)
        local_db.sessions.create_index("expires_at", expireAfterSeconds=3600)
        assert syncd(capsys, pair.config, *PUSH).code == 0
        assert production_db.sessions.count_documents({}) == 4

        # The target's TTL monitor passes; the source's has not yet.
        pruned = production_client.admin.command({"secantusAdmin.pruneTtl": 1})
        assert pruned["pruned"] == 1
        assert production_db.sessions.find_one({"_id": "ended"}) is None
        assert local_db.sessions.find_one({"_id": "ended"}) is not None

        status = syncd(capsys, pair.config, "status", "to_production", "--json")
        push = syncd(capsys, pair.config, *PUSH)
        assert push.code == 0, push.text  # by change streams
        full = syncd(capsys, pair.config, *PUSH, "--full")
        assert full.code == 0, full.text
        planned = json.loads(status.out)["flows"]["to_production"]["collections"]
        assert [(c["collection"], c["drift"], c["inserts"]) for c in planned] == [
            ("sessions", 0, 1)  # the source's copy goes back; the monitor deletes it again
        ]
        assert snapshot(production_db) == snapshot(local_db)

        # Someone's delete of a document no TTL index expired is still drift.
        production_client.admin.command({"secantusAdmin.pruneTtl": 1})
        production_db.sessions.delete_one({"_id": "live-1"})
        refused = syncd(capsys, pair.config, *PUSH)
        assert refused.code == 3, refused.text
        assert "live-1" in refused.text and "ended" not in refused.text


def test_expiry_follows_the_ttl_monitors_rules() -> None:
    now = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)
    hour = dt.timedelta(hours=1)
    spec = CollectionSpec(
        "sessions",
        indexes=(
            {"v": 2, "key": {"_id": 1}, "name": "_id_"},
            {"v": 2, "key": {"meta.seen": 1}, "name": "seen", "expireAfterSeconds": 3600},
            {
                "v": 2,
                "key": {"at": 1},
                "name": "at",
                "expireAfterSeconds": 0,
                "partialFilterExpression": {"kind": "temp"},
            },
            {"v": 2, "key": {"a": 1, "b": 1}, "name": "ab"},
        ),
    )
    assert expiry_rules(spec) == (("meta.seen", 3600.0),)
    expired = expired_by(expiry_rules(spec), now)
    assert expired is not None
    assert expired(bson.encode({"_id": 1, "meta": {"seen": now - 2 * hour}}))
    assert expired(bson.encode({"_id": 2, "meta": [{"seen": [now, now - 2 * hour]}]}))
    assert not expired(bson.encode({"_id": 3, "meta": {"seen": now - hour / 2}}))
    assert not expired(bson.encode({"_id": 4, "meta": {"seen": "yesterday"}}))
    assert not expired(bson.encode({"_id": 5, "at": now - 2 * hour, "kind": "temp"}))
    assert expired_by(expiry_rules(None)) is None
