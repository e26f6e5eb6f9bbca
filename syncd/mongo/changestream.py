"""Reading what changed in a database since a resume point, from its change stream.

One database-level stream per side and resume point (collections synced together share
one), filtered to the collections asked for. Each event's last word on a document goes
into that collection's scratch (`ChangeLog`): an insert or replace carries the document,
a delete its `_id`, an update the document as it is now where the server looks it up
(else it only names the document, read afterwards by `_id`).

The stream is read until the server has nothing more (`_to_the_end`); the resume token at
that point is where the next sync starts. It is taken before any document is read, so a write that
lands while the sync runs is seen by the next one.

What makes a collection fall back to a full read, with the reason said: a drop, a rename
from or onto it, a dropped database or an invalidated stream, an event of a kind syncd
does not know, and a resume point the server's history no longer holds.

A stored resume point must resume under whatever filter the next read asks for: `-C`, a
continuous job's batches, a collection gone to a full read or the tally after the writes
may list fewer collections. MongoDB resumes from an event's own token only when that event
passes the new `$match` (else "resume token was not found", ChangeStreamFatalError 280;
SecantusDB does not check). A token past every event (a batch's high-water mark) resumes
under any filter. So when a read stops on an event (a batch's `limit`, the fence, every
collection gone to a full read), the point stored keeps that event's collection with the
token (`_stored`), and the next read lets that collection through its `$match` as well,
routing nothing of it unless asked for.

Update events are read with `updateDescription` projected away (syncd never reads it): an
event with the looked-up document and the update's description can pass 16 MB
(BSONObjectTooLarge). Should one still not fit, the read goes on from the last event
without the lookup: updates then name their documents, which are read by `_id`.

Behind mongos an empty read does not mean the end: mongos releases an event only once
every shard has passed its time, so a read waits for the fence (`at_end`).
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import bson
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from bson.son import SON
from bson.timestamp import Timestamp
from pymongo.database import Database
from pymongo.errors import OperationFailure
from pymongo.server_type import SERVER_TYPE

from syncd import pause
from syncd.mongo import server
from syncd.mongo.rawbson import document, elements, raw_id, value_end
from syncd.mongo.rawcursor import RAW, ROUTED, array_documents
from syncd.mongo.retry import first_line, is_transient
from syncd.mongo.sharding import is_mongos

log = logging.getLogger("syncd.engine")
T = TypeVar("T")

HISTORY_LOST = {286, 280}  # ChangeStreamHistoryLost, ChangeStreamFatalError
BSON_TOO_LARGE = 10334  # BSONObjectTooLarge: an event over 16 MB
AWAIT_MS = 5  # how long an empty read waits: a stream is read to its fence, not tailed
MONGOS_AWAIT_MS = 500  # behind mongos the fence can be a shard's idle write away (~10 s)
WRAPPED = "syncd.resume"  # a stored point that keeps its event's collection (`_stored`)
DRAIN_SECONDS = 120.0
_INT32 = struct.Struct("<i")
_INT64 = struct.Struct("<q")
_UINT32S = struct.Struct("<II")  # a BSON timestamp: increment, then seconds
BATCH = 5000
DOCUMENT_EVENTS = {"insert", "replace", "update", "delete"}
COLLECTION_EVENTS = {"drop": "dropped", "rename": "renamed"}
DATABASE_EVENTS = {
    "dropDatabase": "its database was dropped",
    "invalidate": "the stream was invalidated",
}


class ChangeSink(Protocol):
    """Where one collection's changes go (scratch.ChangeLog, or a tally after writing)."""

    def put(self, raw: bytes, *, inserted: bool = False) -> None: ...
    def gone(self, rid: bytes) -> None: ...
    def named(self, rid: bytes, *, inserted: bool = False) -> None: ...


Router = Callable[[str], ChangeSink | None]


@dataclass
class Drained:
    """What reading one stream found: where it ended, and which collections must be read
    whole instead (name -> reason)."""

    token: bytes | None
    fallbacks: dict[str, str] = field(default_factory=dict)
    events: int = 0
    more: bool = False  # stopped at `limit` events: more are waiting
    per_collection: dict[str, int] = field(default_factory=dict)


STANDALONE = "a standalone server has no change streams"


def raw_database(db: Database[Any]) -> Database[Any]:
    return db.with_options(codec_options=CodecOptions(document_class=RawBSONDocument))


def unsupported_reason(db: Database[Any]) -> str | None:
    """Why this server has no change streams (a standalone mongod), or None. From what
    the client's connection handshake learnt of the server when it knows (no round trip),
    else from a `hello`."""
    servers = db.client.topology_description.server_descriptions().values()
    kinds = {server.server_type for server in servers}
    if kinds and SERVER_TYPE.Unknown not in kinds:
        return STANDALONE if kinds == {SERVER_TYPE.Standalone} else None
    hello = server.hello(db.client)
    if hello.get("setName") or hello.get("msg") == "isdbgrid":
        return None
    return STANDALONE


def current_token(db: Database[Any]) -> bytes:
    """A resume point at the stream's present end (nothing read): the first batch's
    high-water mark, or the token of an event written just then (kept with its collection,
    see `_stored`). The stream is closed in the background (`close_later`)."""
    stream = raw_database(db).watch(max_await_time_ms=AWAIT_MS)
    try:
        token = stream.resume_token
        if token is None:
            event = stream.try_next()
            token = stream.resume_token
            if event is not None and _token_bytes(token) == _token_bytes(event["_id"]):
                return _stored(token, _collections_of(event))
        return _token_bytes(token)
    finally:
        close_later(stream)


_closing: list[threading.Thread] = []
_closing_lock = threading.Lock()


def close_later(stream: Any) -> None:
    """Close a change stream without waiting for the server's answer: its `killCursors`
    is a round trip nothing after it needs (over a slow link, one of a sync's few).
    `wait_closed` waits for every such close; a client is closed only after it."""

    def close() -> None:
        try:
            stream.close()
        except Exception as exc:  # noqa: BLE001 - the server drops an idle cursor itself
            log.debug(f"closing a change stream failed: {first_line(exc)}")

    thread = threading.Thread(target=close, name="syncd-close-stream", daemon=True)
    with _closing_lock:
        _closing[:] = [t for t in _closing if t.is_alive()]
        _closing.append(thread)
    thread.start()


def meanwhile(work: Callable[..., T], *args: Any) -> Future[T]:
    """`work(*args)` in a thread of its own (a daemon: nothing waits for it at exit but
    who asks for its result)."""
    done: Future[T] = Future()

    def run() -> None:
        try:
            done.set_result(work(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to who asks for the result
            done.set_exception(exc)

    threading.Thread(target=run, name="syncd-meanwhile", daemon=True).start()
    return done


def wait_closed() -> None:
    """Every change stream handed to `close_later` is closed (before its client is)."""
    with _closing_lock:
        threads, _closing[:] = list(_closing), []
    for thread in threads:
        thread.join()


def drain(
    db: Database[Any],
    token: bytes,
    names: Iterable[str],
    route: Router,
    *,
    label: str,
    limit: int | None = None,
    lookup: bool = True,
    budgets: Mapping[str, int] | None = None,
    fence: Timestamp | None = None,
) -> Drained:
    """Read `db`'s changes after `token` for `names` until the server has no more, or
    `limit` events (a continuous job's batch): the token then stands after the last one.

    `fence`: the time the read goes up to at least, when the caller knows one (a plan: the
    time of the stream state its run took first); else the server's operation time now
    (a `ping`, asked while the stream opens: a fence taken a moment later only reads on
    a moment longer).

    `lookup`: update events carry the document as it is now (the server reads it, cheaper
    than reading it by `_id` afterwards); an update without it is read later.
    `budgets`: past this many events a collection is read whole instead (a full read costs
    less than following most of a collection's documents); once every collection is, the
    read stops. Raises HistoryLost when the resume point has left the server's history, or
    the stream fails for good (then the collections are read whole instead)."""
    wanted = sorted(set(names))
    found = Drained(token=token)
    asking: Future[Timestamp | None] | None = None
    if fence is None:
        asking = meanwhile(operation_time, db)
    else:
        pause.point("changes.fence", db.name)
    mongos = is_mongos(db)
    position, passes = _unwrap(token)
    pipeline = stream_pipeline(sorted(set(wanted) | set(passes)))
    final: Any = None
    while True:
        try:
            stream = _watch(
                db,
                pipeline,
                position,
                await_ms=MONGOS_AWAIT_MS if mongos else AWAIT_MS,
                full_document="updateLookup" if lookup else None,
            )
            try:
                if asking is not None:
                    fence, asking = asking.result(), None
                    pause.point("changes.fence", db.name)
                for event in _to_the_end(stream, fence, mongos=mongos):
                    found.events += 1
                    _route(event, wanted, route, found, label, budgets or {})
                    position, passes = event["_id"], _collections_of(event)
                    if limit is not None and found.events >= limit:
                        found.more = True
                        break
                    if len(found.fallbacks) == len(wanted):
                        break  # every collection is read whole: the rest of the stream is moot
                final = stream.resume_token
            finally:
                close_later(stream)
            break
        except OperationFailure as exc:
            if exc.code == BSON_TOO_LARGE and lookup:
                log.warning(
                    f"an update event of {label} is over 16 MB with its document: reading "
                    "on without the lookup (updated documents are read by _id)",
                    extra={"endpoint": label},
                )
                lookup = False
                continue
            if exc.code in HISTORY_LOST:
                raise HistoryLost(
                    f"the resume point is no longer in the change history of {label}"
                ) from None
            if is_transient(exc):
                raise
            raise HistoryLost(  # what the stream holds is out of reach
                f"the change stream of {label} failed ({first_line(exc)})"
            ) from None
    if final is not None:
        on_event = _token_bytes(final) == _token_bytes(position)
        found.token = _stored(final, passes if on_event else [])
    return found


def _watch(
    db: Database[Any],
    pipeline: list[dict[str, Any]],
    position: RawBSONDocument,
    *,
    await_ms: int,
    full_document: str | None,
) -> Any:
    """The database's change stream after `position`: read raw (`RawStream`), or behind
    mongos or a load balancer, where a getMore must reach the router its aggregate went
    to, pymongo's own (pinned to its server; each event then inflated)."""
    if db.client.topology_description.topology_type_name in ROUTED:
        return raw_database(db).watch(
            pipeline,
            resume_after=position,
            max_await_time_ms=await_ms,
            batch_size=BATCH,
            full_document=full_document,
        )
    return RawStream(db, pipeline, position, await_ms=await_ms, full_document=full_document)


class RawStream:
    """A database's change stream as `aggregate` and `getMore` commands whose replies stay
    one `RawBSONDocument` each (as `rawcursor.find_documents`): the events are sliced out
    of the batch and read field by field (`RawEvent`), never inflated whole, and no resume
    token is copied per event. What of pymongo's `ChangeStream` `drain` uses: `try_next`
    (at most one getMore), `resume_token` (after an event its own, after the last of a
    batch or an empty read the batch's high-water mark). No resuming on an error of its
    own: the caller reads again from its start point (`with_retries`)."""

    def __init__(
        self,
        db: Database[Any],
        pipeline: list[dict[str, Any]],
        position: RawBSONDocument,
        *,
        await_ms: int,
        full_document: str | None,
    ) -> None:
        self.db, self.await_ms = db, await_ms
        stage: dict[str, Any] = {"resumeAfter": position}
        if full_document is not None:
            stage["fullDocument"] = full_document
        command = SON(
            [
                ("aggregate", 1),
                ("pipeline", [{"$changeStream": stage}, *pipeline]),
                ("cursor", {"batchSize": BATCH}),
            ]
        )
        self.session = db.client.start_session(causal_consistency=False)
        self.cursor_id, self.namespace = 0, "$cmd.aggregate"
        try:
            reply = db.command(command, codec_options=RAW, session=self.session)
        except BaseException:
            self.session.end_session()
            raise
        self.token: RawBSONDocument = position
        self._take(reply)

    @property
    def resume_token(self) -> RawBSONDocument:
        return self.token

    def _take(self, reply: RawBSONDocument) -> None:
        cursor_id, batch, high, namespace = change_batch(reply)
        self.cursor_id, self.batch, self.high, self.index = cursor_id, batch, high, 0
        if namespace is not None:
            self.namespace = namespace
        if not batch and high is not None:
            self.token = high

    def try_next(self) -> RawEvent | None:
        if self.index >= len(self.batch):
            if self.cursor_id == 0:
                return None
            more = SON(
                [
                    ("getMore", self.cursor_id),
                    ("collection", self.namespace),
                    ("batchSize", BATCH),
                    ("maxTimeMS", self.await_ms),
                ]
            )
            self._take(self.db.command(more, codec_options=RAW, session=self.session))
            if not self.batch:
                return None
        event = RawEvent(self.batch[self.index])
        self.index += 1
        if self.index == len(self.batch) and self.high is not None:
            self.token = self.high
        else:
            self.token = event["_id"]
        return event

    def close(self) -> None:
        try:
            if self.cursor_id:
                command = SON([("killCursors", self.namespace), ("cursors", [self.cursor_id])])
                self.db.command(command, session=self.session)
        except Exception:  # noqa: BLE001, S110 - best effort: the server times cursors out
            pass
        finally:
            self.cursor_id = 0
            self.session.end_session()

    def __enter__(self) -> RawStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def change_batch(
    reply: RawBSONDocument,
) -> tuple[int, list[bytes], RawBSONDocument | None, str | None]:
    """(cursor id, events, postBatchResumeToken, collection of the cursor's namespace) of
    an `aggregate` or `getMore` reply."""
    raw = reply.raw if isinstance(reply.raw, bytes) else bytes(reply.raw)
    cursor_id, events, high, namespace = 0, [], None, None
    for etype, key, _, start, end in elements(raw):
        if key != b"cursor" or etype != 0x03:
            continue
        for vtype, name, _, vstart, vend in elements(raw, start, end):
            if name == b"id" and vtype == 0x12:
                (cursor_id,) = _INT64.unpack_from(raw, vstart)
            elif name in (b"firstBatch", b"nextBatch") and vtype == 0x04:
                events = array_documents(raw, vstart, vend)
            elif name == b"postBatchResumeToken" and vtype == 0x03:
                high = RawBSONDocument(raw[vstart:vend])
            elif name == b"ns" and vtype == 0x02:
                namespace = raw[vstart + 4 : vend - 1].decode().split(".", 1)[1]
        return int(cursor_id), events, high, namespace
    raise ValueError("reply has no cursor")


class RawEvent:
    """A change event read field by field from its raw BSON: strings and timestamps
    decoded, embedded documents as `RawBSONDocument`s (`raw_of`: their bytes), the rest
    decoded alone; each at most once."""

    __slots__ = ("decoded", "fields", "raw")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.fields = _top_level(raw)
        self.decoded: dict[str, Any] = {}

    def raw_of(self, key: str) -> bytes | None:
        """The bytes of an embedded document (None: absent, or not a document)."""
        found = self.fields.get(key.encode())
        if found is None or found[0] != 0x03:
            return None
        return self.raw[found[2] : found[3]]

    def get(self, key: str, default: Any = None) -> Any:
        if key in self.decoded:
            return self.decoded[key]
        found = self.fields.get(key.encode())
        if found is None:
            return default
        etype, at, start, end = found
        raw = self.raw
        value: Any
        if etype == 0x02:
            value = raw[start + 4 : end - 1].decode()
        elif etype == 0x03 and key in SMALL:
            value = bson.decode(raw[start:end])
        elif etype == 0x03:
            value = RawBSONDocument(raw[start:end])
        elif etype == 0x11:
            (inc, seconds) = _UINT32S.unpack_from(raw, start)
            value = Timestamp(seconds, inc)
        else:
            value = bson.decode(document([raw[at:end]]), codec_options=RAW)[key]
        self.decoded[key] = value
        return value

    def __getitem__(self, key: str) -> Any:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value


def _top_level(raw: bytes) -> dict[bytes, tuple[int, int, int, int]]:
    """name -> (type, element start, value start, value end) of a document's elements;
    the types of a change event's fields measured inline (`elements` for any other)."""
    fields = {}
    offset, last = 4, len(raw) - 1
    find, unpack = raw.find, _INT32.unpack_from
    while offset < last:
        etype = raw[offset]
        name_end = find(b"\x00", offset + 1)
        start = name_end + 1
        if etype in (0x02, 0x03):  # a string's length leaves out its own 4 bytes
            end = start + unpack(raw, start)[0] + (4 if etype == 0x02 else 0)
        elif etype in (0x09, 0x11, 0x12):
            end = start + 8
        else:
            end = value_end(raw, etype, start)
        fields[raw[offset + 1 : name_end]] = (etype, offset, start, end)
        offset = end
    return fields


_MISSING = object()
SMALL = {"ns", "to"}  # embedded documents of an event decoded whole: a namespace each


def stream_pipeline(collections: list[str]) -> list[dict[str, Any]]:
    """The events of `collections` and of the database itself, without `updateDescription`."""
    return [
        {
            "$match": {
                "$or": [
                    {"ns.coll": {"$in": collections}},
                    {"to.coll": {"$in": collections}},
                    {"operationType": {"$in": sorted(DATABASE_EVENTS)}},
                ]
            }
        },
        {"$project": {"updateDescription": 0}},
    ]


def _collections_of(event: Any) -> list[str]:
    """What a `$match` must let through for `event`'s own token to resume."""
    if str(event.get("operationType")) in DATABASE_EVENTS:
        return []  # let through by operationType
    coll = (event.get("ns") or {}).get("coll")
    return [coll] if isinstance(coll, str) else []


def _stored(token: Any, passes: list[str]) -> bytes:
    """The resume point to store: the token alone when it resumes under any filter (a
    high-water mark, or an event the next `$match` lets through whatever it lists), else
    with the collections whose events the next `$match` must let through."""
    if not passes:
        return _token_bytes(token)
    return bson.encode({WRAPPED: RawBSONDocument(_token_bytes(token)), "passes": passes})


def point_time(stored: bytes | None) -> Timestamp | None:
    """The cluster time a stored point stands for, where its token's format tells one."""
    return None if stored is None else token_time(_unwrap(stored)[0])


def _unwrap(stored: bytes) -> tuple[RawBSONDocument, list[str]]:
    """(the server's token, collections its `$match` must let through) of a stored point."""
    document = RawBSONDocument(stored)
    if WRAPPED not in document:
        return document, []
    return RawBSONDocument(bytes(document[WRAPPED].raw)), [str(c) for c in document["passes"]]


def _to_the_end(stream: Any, fence: Timestamp | None, *, mongos: bool = False) -> Iterator[Any]:
    """Every event up to the end of the server's history as of `fence` (its operation
    time when the read began).

    An empty read alone does not mean the end: a server may stop scanning its history
    after a while and answer with no event and a later resume token (SecantusDB does every
    200 entries). The end is an empty read that `at_end` says is one, or an event written
    at or after the fence: on a busy server the stream never runs dry, and reading on would
    follow the writes as they happen instead of catching up to the moment the read began.
    Stopping early is safe (the next sync goes on from the token reached), so a stream that
    keeps moving is left after `DRAIN_SECONDS`. (The opening batch's mark is not taken for
    the end: taken so, a tally after writing on SecantusDB missed the sync's own write,
    tests/test_lease_database.py.)"""
    last = stream.resume_token
    deadline = time.monotonic() + DRAIN_SECONDS
    while True:
        event = stream.try_next()
        if event is not None:
            yield event
            written = event.get("clusterTime")
            if fence is not None and isinstance(written, Timestamp) and written >= fence:
                return
            continue
        token = stream.resume_token
        if at_end(token, last, fence, mongos=mongos):
            return
        if time.monotonic() > deadline:
            return
        last = token


def at_end(token: Any, last: Any, fence: Timestamp | None, *, mongos: bool) -> bool:
    """Whether an empty read whose resume token is `token` (`last` before it) ends a read
    up to `fence`: its token is at or past the fence, or (not behind mongos) it no longer
    moves. mongos holds back events until every shard has passed their time, so an empty
    read there that does not move only means a shard is behind: the read waits for the
    fence (where the token's time is known)."""
    reached = token_time(token)
    if fence is not None and reached is not None:
        if reached >= fence:
            return True
        if mongos:
            return False
    return bool(token == last)


def token_time(token: Any) -> Timestamp | None:
    """The cluster time a resume token stands for, where its format is known: MongoDB's
    (hex KeyString, a Timestamp first) and SecantusDB's (hex BSON with a field `t`)."""
    data = token.get("_data") if token is not None else None
    if not isinstance(data, str):
        return None
    try:
        if data.startswith("82") and len(data) >= 18:
            return Timestamp(int(data[2:10], 16), int(data[10:18], 16))
        value = bson.decode(bytes.fromhex(data)).get("t")
    except (ValueError, bson.errors.BSONError):
        return None
    return value if isinstance(value, Timestamp) else None


def operation_time(db: Database[Any]) -> Timestamp | None:
    """The server's latest operation time: the fence a read of the stream goes up to."""
    reply = db.client.admin.command("ping")
    value = reply.get("operationTime") or (reply.get("$clusterTime") or {}).get("clusterTime")
    return value if isinstance(value, Timestamp) else None


def _route(
    event: Any,
    wanted: list[str],
    route: Router,
    found: Drained,
    label: str,
    budgets: Mapping[str, int],
) -> None:
    kind = str(event.get("operationType"))
    ns = event.get("ns") or {}
    coll = str(ns.get("coll"))
    if kind in DATABASE_EVENTS:
        for name in wanted:
            found.fallbacks.setdefault(name, f"{DATABASE_EVENTS[kind]} on {label}")
        return
    if kind in COLLECTION_EVENTS:
        renamed_to = str((event.get("to") or {}).get("coll"))
        for hit in {coll, renamed_to} & set(wanted):
            found.fallbacks.setdefault(hit, f"{COLLECTION_EVENTS[kind]} on {label}")
        return
    if coll not in wanted or coll in found.fallbacks:
        return
    log = route(coll)
    if kind not in DOCUMENT_EVENTS or log is None:
        found.fallbacks[coll] = f"an event syncd does not understand ({kind}) on {label}"
        return
    seen = found.per_collection[coll] = found.per_collection.get(coll, 0) + 1
    if coll in budgets and seen > budgets[coll]:
        found.fallbacks[coll] = (
            f"more than {budgets[coll]} changes on {label}: reading it whole costs less"
        )
        return
    if isinstance(event, RawEvent):
        key, full = event.raw_of("documentKey"), event.raw_of("fullDocument")
        if key is None:
            raise KeyError("documentKey")
    else:
        key = bytes(event["documentKey"].raw)
        document = event.get("fullDocument")
        full = None if document is None else bytes(document.raw)
    rid = raw_id(key)
    if kind == "delete":
        log.gone(rid)
    elif full is not None:  # insert, replace; an update where the server looked it up
        log.put(full, inserted=kind == "insert")
    else:
        log.named(rid)


def _token_bytes(token: Any) -> bytes:
    if isinstance(token, RawBSONDocument):
        return bytes(token.raw)
    return bson.encode(dict(token))


class HistoryLost(Exception):
    """The resume point is older than what the server's change history still holds."""
