"""The engine's own change stream (`RawStream`): the events and resume tokens pymongo's
`ChangeStream` gives, read across `getMore`s without inflating an event."""

from __future__ import annotations

from typing import Any

import pytest
from bson.raw_bson import RawBSONDocument
from pymongo.database import Database

from syncd.mongo import changestream
from syncd.mongo.changestream import RawStream, current_token, operation_time


def _read(stream: Any, db: Database[Any]) -> tuple[list[tuple[Any, ...]], bytes]:
    events = [
        (
            event["operationType"],
            event.get("ns").get("coll"),
            bytes(event["documentKey"].raw),
            None if event.get("fullDocument") is None else bytes(event["fullDocument"].raw),
            event["clusterTime"],
            bytes(event["_id"].raw),
        )
        for event in changestream._to_the_end(stream, operation_time(db))
    ]
    return events, bytes(stream.resume_token.raw)


def test_the_raw_stream_reads_what_pymongos_reads(
    local_db: Database[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    start, _ = changestream._unwrap(current_token(local_db))
    local_db.things.insert_many([{"_id": i, "v": "x" * i} for i in range(23)])
    local_db.things.update_one({"_id": 3}, {"$set": {"v": "changed"}})
    local_db.things.replace_one({"_id": 5}, {"w": 1})
    local_db.things.delete_one({"_id": 4})
    local_db.others.insert_one({"_id": "not asked for"})
    pipeline = changestream.stream_pipeline(["things"])
    monkeypatch.setattr(changestream, "BATCH", 4)  # many getMores
    options = {"await_ms": changestream.AWAIT_MS, "full_document": "updateLookup"}
    with RawStream(local_db, pipeline, start, **options) as stream:
        raw_events, raw_token = _read(stream, local_db)
    with changestream.raw_database(local_db).watch(
        pipeline,
        resume_after=start,
        max_await_time_ms=changestream.AWAIT_MS,
        batch_size=4,
        full_document="updateLookup",
    ) as theirs:
        events, token = _read(theirs, local_db)
    assert [e[0] for e in raw_events] == ["insert"] * 23 + ["update", "replace", "delete"]
    assert {e[1] for e in raw_events} == {"things"}
    assert raw_events == events
    assert raw_token == token
    assert isinstance(stream.resume_token, RawBSONDocument)
