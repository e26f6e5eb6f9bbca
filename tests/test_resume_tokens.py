"""Issue 22, point 3: resume points that MongoDB resumes under any later filter, and a tally
whose stream fails after the writes.

MongoDB resumes from an event's own token only under a `$match` that lets that event
through ("resume token was not found", ChangeStreamFatalError 280); SecantusDB does not
check (shown by `test_secantusdb_resumes_an_event_token_under_a_filter_that_drops_it`).
So these tests record what syncd stores and what it sends: a point taken on an event keeps
that event's collection, and the next read's `$match` lets that collection through; a
point taken at the end of the stream is the server's high-water mark
(postBatchResumeToken) alone.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from bson.raw_bson import RawBSONDocument
from pymongo import monitoring
from pymongo.database import Database

from syncd.mongo import changestream
from syncd.mongo.changestream import drain
from tests.engine_kit import snapshot, syncd
from tests.support.proxied import production_behind_proxy
from tests.support.servers import Server

Capsys = pytest.CaptureFixture[str]


class Recorder(monitoring.CommandListener):
    """Commands sent and replies received, in order."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.replies: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.sent.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self.replies.append(dict(event.reply))

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def change_streams(self) -> list[dict[str, Any]]:
        return [c for c in self.sent if c.get("aggregate") == 1 and _stage(c, "$changeStream")]


class Sink:
    def __init__(self) -> None:
        self.ids: list[Any] = []

    def put(self, raw: bytes, *, inserted: bool = False) -> None:
        self.ids.append(RawBSONDocument(raw)["_id"])

    def gone(self, rid: bytes) -> None:
        self.ids.append(RawBSONDocument(rid)["_id"])

    def named(self, rid: bytes, *, inserted: bool = False) -> None:
        self.ids.append(RawBSONDocument(rid)["_id"])


@pytest.fixture
def watched(
    server_local: Server, local_db: Database[Any]
) -> Iterator[tuple[Database[Any], Recorder]]:
    recorder = Recorder()
    with server_local.client(event_listeners=[recorder]) as client:
        db = client[local_db.name]
        if changestream.unsupported_reason(db) is not None:
            pytest.skip("needs change streams")
        yield db, recorder


def test_secantusdb_resumes_an_event_token_under_a_filter_that_drops_it(
    watched: tuple[Database[Any], Recorder],
) -> None:
    """Why the other tests look at what is sent, not at what the server does: MongoDB
    refuses this resume (code 280), SecantusDB accepts it."""
    db, _ = watched
    with db.watch([{"$match": {"ns.coll": {"$in": ["a", "b"]}}}]) as stream:
        db.a.insert_one({"_id": 1})
        event = stream.next()
    try:
        with db.watch([{"$match": {"ns.coll": "b"}}], resume_after=event["_id"]) as resumed:
            resumed.try_next()
    except Exception as exc:  # noqa: BLE001 - a real mongod refuses: the point of the test
        assert getattr(exc, "code", None) == 280, exc
        pytest.skip("this server checks resume tokens against the filter, as MongoDB does")


def test_a_point_taken_on_an_event_resumes_under_a_narrower_filter(
    watched: tuple[Database[Any], Recorder],
) -> None:
    db, recorder = watched
    start = changestream.current_token(db)
    db.a.insert_one({"_id": "a1"})
    db.b.insert_one({"_id": "b1"})
    db.a.insert_one({"_id": "a2"})

    # A continuous job's batch of one event stops on that event (an event token).
    first = drain(db, start, ["a", "b"], lambda name: Sink(), label="local", limit=1)
    stored = RawBSONDocument(first.token)
    assert first.more
    assert stored[changestream.WRAPPED] == _event_ids(recorder)[0]  # a1's own token
    assert list(stored["passes"]) == ["a"]

    # The next read asks for `b` only (say `-C b`): its $match still lets `a` through,
    # so MongoDB finds the event the token names; nothing of `a` is routed.
    db.c.insert_one({"_id": "c1"})  # past every event the next read asks for
    sinks: dict[str, Sink] = {"b": Sink()}
    recorder.sent.clear()
    second = drain(db, first.token, ["b"], sinks.get, label="local")
    resumed = [
        c for c in recorder.change_streams() if _stage(c, "$changeStream").get("resumeAfter")
    ]
    assert resumed, recorder.sent
    for command in resumed:
        token = _stage(command, "$changeStream")["resumeAfter"]
        assert RawBSONDocument(bytes(token.raw)) == stored[changestream.WRAPPED]
        assert "a" in _matched_collections(command) and "b" in _matched_collections(command)
        assert _stage(command, "$project") == {"updateDescription": 0}
    assert sinks["b"].ids == ["b1"]

    # Read to the end, the point is the server's last postBatchResumeToken. A high-water
    # mark past every event is stored alone; where the mark is an event's own token (as
    # SecantusDB's is: it does not move past entries the filter drops), it keeps that
    # event's collection, whatever this read's filter listed.
    point, passes = _point(second.token)
    assert point == _last_post_batch_token(recorder)
    events = {e.raw: c for e, c in zip(_event_ids(recorder), _event_colls(recorder), strict=True)}
    assert passes == ([events[point.raw]] if point.raw in events else [])

    # A point taken where nothing was read is the first batch's high-water mark, alone.
    recorder.replies.clear()
    now = changestream.current_token(db)
    assert changestream.WRAPPED not in RawBSONDocument(now)
    assert RawBSONDocument(now) == _last_post_batch_token(recorder)


def test_a_failed_tally_after_the_writes_verifies_by_reading_back(
    server_production: Server,
    local_db: Database[Any],
    production_db: Database[Any],
    local_uri: str,
    tmp_path: Path,
    capsys: Capsys,
) -> None:
    """The target's stream fails after the writes, as MongoDB fails an unresumable point:
    the sync reads back what it wrote instead, and says so; no traceback."""
    local_db.contracts.insert_many([{"_id": i, "n": i} for i in range(30)])
    proxied = production_behind_proxy(
        server_production, local_db, production_db, local_uri, tmp_path
    )
    with proxied as (pair, proxy):
        assert syncd(capsys, pair.config, "sync", "to_production", "--yes").code == 0
        local_db.contracts.update_many({"_id": {"$lt": 3}}, {"$set": {"n": -1}})
        failing = TallyFailure()
        proxy.answer(failing)
        result = syncd(capsys, pair.config, "sync", "to_production", "--yes")
        proxy.answer(None)

    assert failing.answered == 1, "the tally's stream was not read after the writes"
    assert result.code == 0, result.text
    assert "Traceback" not in result.text
    assert "verifying by reading the documents written" in result.text
    assert snapshot(production_db, ["contracts"]) == snapshot(local_db, ["contracts"])


class TallyFailure:
    """Answers the first change stream opened after a write to `contracts` with the error
    MongoDB gives for a point it cannot resume from."""

    def __init__(self) -> None:
        self.written = False
        self.answered = 0

    def __call__(self, command: dict[str, Any]) -> dict[str, Any] | None:
        if any(command.get(kind) == "contracts" for kind in ("insert", "update", "delete")):
            self.written = True
        if not self.written or self.answered or not _stage(command, "$changeStream"):
            return None
        self.answered += 1
        return {
            "ok": 0,
            "code": 280,
            "codeName": "ChangeStreamFatalError",
            "errmsg": "cannot resume stream; the resume token was not found (injected)",
        }


def _stage(command: dict[str, Any], name: str) -> Any:
    for stage in command.get("pipeline") or []:
        if name in stage:
            return stage[name]
    return None


def _matched_collections(command: dict[str, Any]) -> set[str]:
    match = _stage(command, "$match")
    names: set[str] = set()
    for clause in match["$or"]:
        for path in ("ns.coll", "to.coll"):
            if path in clause:
                names |= set(clause[path]["$in"])
    return names


def _batches(recorder: Recorder) -> Iterator[Mapping[str, Any]]:
    for reply in recorder.replies:
        cursor = reply.get("cursor")
        if isinstance(cursor, Mapping):
            yield cursor


def _event_ids(recorder: Recorder) -> list[RawBSONDocument]:
    return [
        RawBSONDocument(bytes(event["_id"].raw))
        for cursor in _batches(recorder)
        for event in cursor.get("firstBatch", cursor.get("nextBatch", []))
        if "operationType" in event
    ]


def _event_colls(recorder: Recorder) -> list[str]:
    return [
        str(event["ns"]["coll"])
        for cursor in _batches(recorder)
        for event in cursor.get("firstBatch", cursor.get("nextBatch", []))
        if "operationType" in event
    ]


def _point(stored: bytes) -> tuple[RawBSONDocument, list[str]]:
    document = RawBSONDocument(stored)
    if changestream.WRAPPED not in document:
        return document, []
    token = RawBSONDocument(bytes(document[changestream.WRAPPED].raw))
    return token, [str(c) for c in document["passes"]]


def _last_post_batch_token(recorder: Recorder) -> RawBSONDocument:
    tokens = [c["postBatchResumeToken"] for c in _batches(recorder) if "postBatchResumeToken" in c]
    return RawBSONDocument(bytes(tokens[-1].raw))
