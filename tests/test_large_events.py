"""Issue 22, point 7: change events over 16 MB, and writes whose write concern failed.

An update event with the looked-up document can pass 16 MB on MongoDB (BSONObjectTooLarge,
code 10334), which SecantusDB does not produce: the fault proxy answers the source's change
stream with that error, as MongoDB would, and the pull goes on by change streams (the
updated documents read by `_id`), not by reading the collection whole. A write the server
applied but whose write concern failed (SecantusDB's `failCommand` fail point appends the
`writeConcernError`, as mongod's does) fails the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import bson
import pytest
from pymongo import monitoring
from pymongo.database import Database
from pymongo.errors import OperationFailure

from syncd.engine.apply import apply_deletes, apply_writes
from syncd.errors import SyncdError
from syncd.mongo import changestream
from syncd.mongo.rawbson import raw_id
from tests.engine_kit import snapshot, syncd
from tests.support.proxied import production_behind_proxy
from tests.support.servers import MongoServer, Server

Capsys = pytest.CaptureFixture[str]
PULL = ("sync", "from_production")


class TooLarge:
    """Answers the first change stream with the document lookup as MongoDB answers an
    update event over 16 MB; records the change streams opened."""

    def __init__(self) -> None:
        self.answered = 0
        self.streams: list[dict[str, Any]] = []

    def __call__(self, command: dict[str, Any]) -> dict[str, Any] | None:
        stage = next(
            (s["$changeStream"] for s in command.get("pipeline") or [] if "$changeStream" in s),
            None,
        )
        if stage is None or command.get("aggregate") != 1:
            return None
        self.streams.append(command)
        if self.answered or stage.get("fullDocument") != "updateLookup":
            return None
        self.answered += 1
        return {
            "ok": 0,
            "code": 10334,
            "codeName": "BSONObjectTooLarge",
            "errmsg": "BSONObj size: 17825792 (0x1100000) is invalid. "
            "Size must be between 0 and 16793600(16MB)",
        }


def test_an_update_event_over_16_mb_is_read_by_id_not_by_a_full_read(
    server_production: Server,
    local_db: Database[Any],
    production_db: Database[Any],
    local_uri: str,
    tmp_path: Path,
    capsys: Capsys,
) -> None:
    production_db.contracts.insert_many([{"_id": i, "n": i} for i in range(40)])
    proxied = production_behind_proxy(
        server_production, local_db, production_db, local_uri, tmp_path
    )
    with proxied as (pair, proxy):
        assert syncd(capsys, pair.config, *PULL).code == 0
        production_db.contracts.update_one({"_id": 7}, {"$set": {"n": "x" * 1000}})
        too_large = TooLarge()
        proxy.answer(too_large)
        result = syncd(capsys, pair.config, *PULL, "--log-level", "debug")
        proxy.answer(None)

    assert too_large.answered == 1
    assert result.code == 0, result.text
    assert "over 16 MB" in result.text
    assert "reading both sides whole" not in result.text
    assert snapshot(local_db, ["contracts"]) == snapshot(production_db, ["contracts"])
    # Every read of changes leaves `updateDescription` out; after the refusal the stream
    # goes on from where it was, without the lookup.
    for command in filter(_resume, too_large.streams):
        assert {"$project": {"updateDescription": 0}} in command["pipeline"]
    refused = next(i for i, c in enumerate(too_large.streams) if _lookup(c))
    retried = too_large.streams[refused + 1]
    assert not _lookup(retried)
    assert _resume(retried) == _resume(too_large.streams[refused])


def _lookup(command: dict[str, Any]) -> bool:
    return bool(command["pipeline"][0]["$changeStream"].get("fullDocument") == "updateLookup")


def _resume(command: dict[str, Any]) -> Any:
    return command["pipeline"][0]["$changeStream"].get("resumeAfter")


@pytest.fixture
def fail_points(mongo_server_factory: Callable[..., MongoServer]) -> MongoServer:
    return mongo_server_factory(extra_args=("--enable-test-commands",))


def test_a_write_whose_write_concern_failed_is_not_success(fail_points: MongoServer) -> None:
    with fail_points.client() as client:
        coll = client.wce.contracts
        try:
            client.admin.command(
                {
                    "configureFailPoint": "failCommand",
                    "mode": {"times": 2},
                    "data": {
                        "failCommands": ["insert", "update", "delete"],
                        "writeConcernError": {
                            "code": 64,
                            "codeName": "WriteConcernFailed",
                            "errmsg": "waiting for replication timed out",
                            "errInfo": {"wtimeout": True},
                        },
                    },
                }
            )
        except OperationFailure:
            pytest.skip("this server has no failCommand fail point")
        raw = bson.encode({"_id": 1, "n": 1})

        with pytest.raises(SyncdError, match="did not confirm the writes' write concern"):
            apply_writes(coll, [("insert", raw_id(raw), raw)])
        # The server did apply it: only the confirmation failed.
        assert coll.count_documents({}) == 1
        with pytest.raises(SyncdError, match="did not confirm the writes' write concern"):
            apply_deletes(coll, [raw_id(raw)])
        assert coll.count_documents({}) == 0


class Replies(monitoring.CommandListener):
    def __init__(self) -> None:
        self.events: list[Mapping[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        cursor = event.reply.get("cursor") or {}
        self.events += cursor.get("firstBatch", cursor.get("nextBatch", []))

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def test_update_events_leave_update_description_out(
    server_local: Server, local_db: Database[Any]
) -> None:
    """A 9 MB field set anew on a 9 MB document: with `updateDescription` the event is
    18 MB (MongoDB refuses it; SecantusDB sends it, see the README); the event syncd reads
    holds the document once."""
    replies = Replies()
    with server_local.client(event_listeners=[replies]) as client:
        db = client[local_db.name]
        if changestream.unsupported_reason(db) is not None:
            pytest.skip("needs change streams")
        mb9 = 9 * 1024 * 1024
        db.big.insert_one({"_id": 1, "a": "x" * mb9})
        start = changestream.current_token(db)
        db.big.update_one({"_id": 1}, {"$set": {"a": "z" * mb9}})
        found: list[str] = []

        class Sink:
            def put(self, raw: bytes, *, inserted: bool = False) -> None:
                found.append(str(bson.decode(raw)["a"][:1]))

            def gone(self, rid: bytes) -> None:
                raise AssertionError("no delete here")

            def named(self, rid: bytes, *, inserted: bool = False) -> None:
                raise AssertionError("the update event carries its document")

        drained = changestream.drain(db, start, ["big"], lambda name: Sink(), label="local")

    assert drained.events == 1 and drained.fallbacks == {} and found == ["z"]
    (event,) = [e for e in replies.events if e.get("operationType") == "update"]
    assert "updateDescription" not in event
    assert len(bson.encode(event)) < 16 * 1024 * 1024
