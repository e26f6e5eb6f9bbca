"""The seam for "what changed in this collection since the last sync".

A `ChangeFinder` fills one collection's scratch with what the plan needs to know of each
side. Three implementations, one per way of finding a collection's changes:

- `FullRead`: both sides read whole (a first sync, `--full`, a collection policy other
  than the last sync's: filter, deletes, mask or masking key, see policy.py; or neither
  side can be followed);
- `FirstCopy`: a first sync into an empty target: nothing to read before writing, the
  source is streamed into the target and its scan filled meanwhile (stream.py);
- `ByChanges`: only the documents that changed on either side since the last sync, and
  those the memory does not hold settled; the memory stands for the rest. Each side is
  found by its own means, a `SideFinder`:
  - `Streamed`: the side's change stream, read from its resume point (a replica set or a
    sharded cluster): only the documents it names are read;
  - `ReadWhole`: the side read whole and compared with what the memory holds of it (a
    standalone mongod, which has no change streams; a resume point gone from the server's
    history; a collection dropped or recreated there). Only that side: a standalone local
    never makes syncd read production whole.

Both sides are read through their collection's policy (`Sides.policies`, applied by
`MongoSource`): whatever a finder puts in the scratch is already filtered and masked.
The plan, the writes, the verification and the memory work the same whatever filled the
scratch. A finder describes itself on the collection's plan (`describe`): its `mode`
(FIND_MODES, for the metric), how each side was found and why, for logs and status.

Callers never ask which finder they hold: `choose` makes the choice, in one place, and
`follow_changes` reads the streams of every finder that follows one (`following`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from syncd.engine.policy import Policies, Policy, changed
from syncd.engine.prefetch import Prefetcher
from syncd.engine.scan import Progress
from syncd.engine.scratch import SRC, TGT, ChangeLog, CollectionScratch
from syncd.mongo import changestream
from syncd.mongo.changestream import ChangeSink, Router
from syncd.mongo.rawbson import raw_id
from syncd.mongo.retry import failing_clearly, with_retries
from syncd.mongo.source import DocumentSource, MongoSource, read_by_id
from syncd.state.memory import Pair, Point, SyncMemory

if TYPE_CHECKING:
    from syncd.engine.plan import CollectionPlan

log = logging.getLogger("syncd.engine")

# How a collection's changes were found (the `mode` of a plan and of the metric
# syncd_sync_collections_total): both sides by change streams; both read whole; the
# source by its stream and the target read whole (a pull into a standalone local); the
# target by its stream and the source read whole (a push from a standalone local).
FULL, CHANGES, SOURCE_CHANGES, TARGET_CHANGES = (
    "full",
    "changes",
    "source-changes",
    "target-changes",
)
FIND_MODES = (CHANGES, FULL, SOURCE_CHANGES, TARGET_CHANGES)
STREAM_WAY, WHOLE_WAY, BY_ID_WAY = "change stream", "read whole", "read by _id"
FOLLOW_SHARE, FOLLOW_AT_LEAST = 0.25, 1000


@dataclass
class Sides:
    """One run's view of the two sides: who they are, and where each stream stood when
    the run started (taken before anything is read)."""

    source: DocumentSource
    target: MongoSource
    source_name: str
    target_name: str
    pair: Pair
    memory: SyncMemory
    limit: int | None = None  # at most this many source changes per stream (a batch)
    now: dict[str, bytes | None] = field(default_factory=dict)
    unsupported: dict[str, str | None] = field(default_factory=dict)
    policies: Policies = field(default_factory=Policies)  # what each side is read through
    spool_target: bool = False  # keep the target as a full read sees it (a full backup)
    # A side without change streams is read whole; False (a continuous batch between the
    # target's whole reads): only what the other side's stream names is read there, by _id.
    scan_unfollowed: bool = True

    def policy(self, name: str) -> Policy:
        return self.policies(name)

    def side(self, which: str) -> DocumentSource:
        return self.source if which == SRC else self.target

    def endpoint(self, which: str) -> str:
        return self.source_name if which == SRC else self.target_name


@dataclass(frozen=True)
class Found:
    """How one side's changes were found: `way` (STREAM_WAY or WHOLE_WAY) and why."""

    way: str
    reason: str = ""

    def describe(self) -> str:
        return f"{self.way} ({self.reason})" if self.reason else self.way


class ChangeFinder(Protocol):
    """How one collection's changes are found, from choosing to the filled scratch."""

    def following(self, which: str) -> bytes | None:
        """The resume point this finder reads `which`'s change stream from, if it does."""
        ...

    def followed(self, which: str, drained: changestream.Drained) -> None:
        """`which`'s stream was read (for every collection following it at once)."""
        ...

    def lost(self, which: str, reason: str) -> ChangeFinder:
        """`which`'s stream cannot vouch for this collection: the finder to use instead."""
        ...

    def checked(self, sides: Sides, uuids: dict[str, bytes | None]) -> ChangeFinder:
        """The finder to use given each side's collection uuid now. A point without a uuid
        was taken while the collection did not exist (its uuid is read after the point's
        token): everything it holds now was written after the token, so the stream has
        it; a drop since then is an event in the stream too."""
        ...

    def early(self, scratch: CollectionScratch, sides: Sides) -> None:
        """What can be read before the streams are, while they are (another thread)."""
        ...

    def fill(self, scratch: CollectionScratch, sides: Sides, progress: Progress) -> None:
        """Put what the plan needs of both sides into `scratch`."""
        ...

    def found(self, sides: Sides) -> dict[str, Found]:
        """Per endpoint: how its side is found, and why."""
        ...

    def describe(self, plan: CollectionPlan, sides: Sides) -> None:
        """Say on the plan how its changes were found (after `classify`)."""
        ...


class _NoStream:
    """Finders that follow no stream."""

    def following(self, which: str) -> bytes | None:
        return None

    def followed(self, which: str, drained: changestream.Drained) -> None:
        return None

    def lost(self, which: str, reason: str) -> ChangeFinder:
        return self  # type: ignore[return-value]

    def checked(self, sides: Sides, uuids: dict[str, bytes | None]) -> ChangeFinder:
        return self  # type: ignore[return-value]

    def early(self, scratch: CollectionScratch, sides: Sides) -> None:
        return None  # a full read may yet turn out a first copy, which reads nothing


@dataclass
class FullRead(_NoStream):
    reason: str

    def fill(self, scratch: CollectionScratch, sides: Sides, progress: Progress) -> None:
        """Both sides at once (the source also into a spool, the target into one when a
        full backup before the sync will be written from it; not of a filtered read,
        which is not the whole collection)."""
        name = scratch.name
        scratch.partial = False
        spool_target = sides.spool_target and not sides.policy(name).filtered
        read_source = partial(scratch.read, SRC, sides.source, spool=True, progress=progress)
        read_target = partial(scratch.read, TGT, sides.target, spool=spool_target)
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="scan") as pool:
            src = pool.submit(with_retries, read_source, what=f"read {name} ({sides.source.label})")
            tgt = pool.submit(with_retries, read_target, what=f"read {name} ({sides.target.label})")
            with failing_clearly("reading", name, sides.source.label):
                src.result()
            with failing_clearly("reading", name, sides.target.label):
                tgt.result()

    def found(self, sides: Sides) -> dict[str, Found]:
        return dict.fromkeys((sides.source_name, sides.target_name), Found(WHOLE_WAY, self.reason))

    def describe(self, plan: CollectionPlan, sides: Sides) -> None:
        plan.mode, plan.reason, plan.found = FULL, self.reason, self.found(sides)
        log.info(
            f"{plan.name}: reading both sides whole: {self.reason}",
            extra={"collection": plan.name, "mode": plan.mode},
        )


@dataclass
class FirstCopy(_NoStream):
    count: int
    reason: str = "first sync, into an empty target"

    def fill(self, scratch: CollectionScratch, sides: Sides, progress: Progress) -> None:
        scratch.reset()

    def found(self, sides: Sides) -> dict[str, Found]:
        return dict.fromkeys((sides.source_name, sides.target_name), Found(WHOLE_WAY, self.reason))

    def describe(self, plan: CollectionPlan, sides: Sides) -> None:
        from syncd.engine.stream import CopyFirst  # stream.py imports the plan, and so this

        plan.mode, plan.reason, plan.found = FULL, self.reason, self.found(sides)
        plan.writing, plan.source_count, plan.inserts = CopyFirst(), self.count, self.count
        log.info(
            f"{plan.name}: reading both sides whole: {self.reason}",
            extra={"collection": plan.name, "mode": plan.mode},
        )


class SideFinder(Protocol):
    """How one side's changes are found in a `ByChanges`."""

    more: bool  # its stream holds more changes than this batch took

    @property
    def found(self) -> Found:
        """How this side was found, and why, for logs, status and metrics."""
        ...

    def token(self) -> bytes | None:
        """The resume point its stream is read from (None: it reads no stream)."""
        ...

    def advance(self, drained: changestream.Drained) -> None:
        """Its stream was read up to `drained.token`."""
        ...

    def point(self, now: Point) -> Point:
        """Where the side stands after this sync (`now`: where it stood at the start)."""
        ...

    def early(self, scratch: CollectionScratch, sides: Sides, which: str) -> None:
        """What can be read of this side before any stream is (a whole read)."""
        ...

    def read(self, scratch: CollectionScratch, sides: Sides, which: str) -> None:
        """What only this side can say: a whole read's candidates (the documents it holds
        otherwise than the memory says)."""
        ...

    def complete(self, scratch: CollectionScratch, sides: Sides, which: str) -> None:
        """Once every candidate is known: this side's version of each that it must read."""
        ...


@dataclass
class Streamed:
    """The side's change stream, from its resume point: the documents it names are the
    candidates; those it names without showing them are read by `_id`."""

    at: Point
    found: Found = field(default_factory=lambda: Found(STREAM_WAY))
    more: bool = False  # the stream holds more changes than this batch took

    def token(self) -> bytes | None:
        return self.at.token

    def advance(self, drained: changestream.Drained) -> None:
        self.at = Point(drained.token, self.at.uuid)
        self.more = self.more or drained.more

    def point(self, now: Point) -> Point:
        return self.at

    def early(self, scratch: CollectionScratch, sides: Sides, which: str) -> None:
        return None

    def read(self, scratch: CollectionScratch, sides: Sides, which: str) -> None:
        return None  # read for every collection at once by `follow_changes`

    def complete(self, scratch: CollectionScratch, sides: Sides, which: str) -> None:
        _fetch(scratch, sides, which, scratch.to_fetch(which))


@dataclass
class ReadWhole:
    """The side read whole; its documents that differ from what the memory holds of it,
    and those the memory holds that it no longer has, are the candidates. A read of a
    side that is local to syncd (a standalone local) costs no round trip to the other."""

    reason: str
    more: bool = False
    scanned: bool = False  # read already, before the streams (`early`)

    @property
    def found(self) -> Found:
        return Found(WHOLE_WAY, self.reason)

    def token(self) -> bytes | None:
        return None

    def advance(self, drained: changestream.Drained) -> None:
        return None

    def point(self, now: Point) -> Point:
        return now

    def early(self, scratch: CollectionScratch, sides: Sides, which: str) -> None:
        """Read while the other side's stream is: a side read whole from the start has no
        stream whose findings the scratch holds (`start_changes` keeps what this writes)."""
        self._scan(scratch, sides, which)
        self.scanned = True

    def read(self, scratch: CollectionScratch, sides: Sides, which: str) -> None:
        if not self.scanned:  # a stream that was lost: forget what it said first
            scratch.restart_side(which)
            self._scan(scratch, sides, which)
        scratch.whole_candidates(
            which, sides.memory, sides.pair, source=sides.source_name, target=sides.target_name
        )

    def _scan(self, scratch: CollectionScratch, sides: Sides, which: str) -> None:
        side, name = sides.side(which), scratch.name
        scan = partial(scratch.read_whole, which, side)
        with failing_clearly("reading", name, side.label):
            with_retries(scan, what=f"read {name} ({side.label})")

    def complete(self, scratch: CollectionScratch, sides: Sides, which: str) -> None:
        scratch.fill_from_whole(which)


@dataclass
class ById:
    """The side's version of each candidate read by `_id` (the documents the other side's
    stream names, and those the memory does not hold settled); the memory stands for the
    rest of it. A continuous batch into a target without change streams, between the
    target's whole reads (`target_scan`): drift is checked on what the batch writes."""

    reason: str
    more: bool = False

    @property
    def found(self) -> Found:
        return Found(BY_ID_WAY, self.reason)

    def token(self) -> bytes | None:
        return None

    def advance(self, drained: changestream.Drained) -> None:
        return None

    def point(self, now: Point) -> Point:
        return now

    def early(self, scratch: CollectionScratch, sides: Sides, which: str) -> None:
        return None

    def read(self, scratch: CollectionScratch, sides: Sides, which: str) -> None:
        return None

    def complete(self, scratch: CollectionScratch, sides: Sides, which: str) -> None:
        scratch.want_all(which)
        _fetch(scratch, sides, which, scratch.to_fetch(which))


@dataclass
class ByChanges:
    """Only what changed on either side since the last sync, each side found by its own
    `SideFinder`; the memory stands for the rest."""

    by_side: dict[str, SideFinder]

    def following(self, which: str) -> bytes | None:
        return self.by_side[which].token()

    def followed(self, which: str, drained: changestream.Drained) -> None:
        self.by_side[which].advance(drained)

    def lost(self, which: str, reason: str) -> ChangeFinder:
        self.by_side[which] = ReadWhole(reason)
        return self

    def checked(self, sides: Sides, uuids: dict[str, bytes | None]) -> ChangeFinder:
        for which, finder in list(self.by_side.items()):
            point = finder.point(Point(None, None))
            if finder.token() is not None and point.uuid not in (None, uuids.get(which)):
                endpoint = sides.endpoint(which)
                self.lost(which, f"the collection was dropped or recreated on {endpoint}")
        return self

    def early(self, scratch: CollectionScratch, sides: Sides) -> None:
        for which, finder in list(self.by_side.items()):
            finder.early(scratch, sides, which)

    def fill(self, scratch: CollectionScratch, sides: Sides, progress: Progress) -> None:
        kw: dict[str, Any] = {"source": sides.source_name, "target": sides.target_name}
        scratch.settle(sides.memory, sides.pair, **kw)
        for which in (SRC, TGT):
            self.by_side[which].read(scratch, sides, which)
        for which in (SRC, TGT):
            self.by_side[which].complete(scratch, sides, which)
        scratch.fill_from_memory(sides.memory, sides.pair, **kw)
        _fetch(scratch, sides, SRC, scratch.unspooled_writes())

    def found(self, sides: Sides) -> dict[str, Found]:
        return {sides.endpoint(w): f.found for w, f in self.by_side.items()}

    def describe(self, plan: CollectionPlan, sides: Sides) -> None:
        ways = {w: f.found.way for w, f in self.by_side.items()}
        plan.mode = {
            (STREAM_WAY, STREAM_WAY): CHANGES,
            (STREAM_WAY, WHOLE_WAY): SOURCE_CHANGES,
            (STREAM_WAY, BY_ID_WAY): SOURCE_CHANGES,
            (WHOLE_WAY, STREAM_WAY): TARGET_CHANGES,
        }.get((ways[SRC], ways[TGT]), FULL)
        plan.found = self.found(sides)
        plan.reason = "; ".join(
            f"{sides.endpoint(w)}: {f.found.reason}"
            for w, f in self.by_side.items()
            if f.found.reason
        )
        plan.more = any(f.more for f in self.by_side.values())
        for which, finder in self.by_side.items():
            plan.points[sides.endpoint(which)] = finder.point(plan.points[sides.endpoint(which)])


def _fetch(
    scratch: CollectionScratch, sides: Sides, which: str, wanted: list[tuple[bytes, object]]
) -> None:
    if not wanted:
        return
    side = sides.side(which)
    with failing_clearly("reading", scratch.name, side.label), scratch.changes(which) as log_:
        for keys, found in read_by_id(side, scratch.name, wanted):
            log_.fetched(keys, found)


# -- choosing, per collection and per side ----------------------------------------------


def stream_state(sides: Sides) -> None:
    """Per side: whether it has change streams, and where its stream stands now. Taken
    before anything is read, the listing of collections included (a collection's uuid is
    read after its point's token): what is written while the sync runs is seen by the
    next. Both sides at once."""

    def state(which: str) -> tuple[str | None, bytes | None]:
        side = sides.side(which)
        reason = side.changes_unsupported()
        token = None
        if reason is None:
            try:
                token = with_retries(side.current_token, what=f"open change stream ({side.label})")
            except Exception as exc:  # noqa: BLE001 - any refusal means: read whole
                reason = f"its change stream cannot be opened ({type(exc).__name__}: {exc})"
        return reason, token

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="state") as pool:
        states = dict(zip((SRC, TGT), pool.map(state, (SRC, TGT)), strict=True))
    for which, (reason, token) in states.items():
        sides.unsupported[which], sides.now[which] = reason, token
    sides.target.forget_listing()  # read again, after the tokens


def choose(name: str, sides: Sides, *, full: bool) -> ChangeFinder:
    """How to find this collection's changes, from the memory alone, before any stream
    is read: the one place the choice is made. What is learnt later changes it only in
    `ChangeFinder` methods: a stream that cannot vouch for a collection, or a collection
    uuid other than its point's (`checked`), turns that side into a whole read; a
    collection new to the memory is a first copy when its target is empty (`settled`)."""
    if full:
        return FullRead("--full asked for a full read")
    if not sides.memory.knows(sides.pair, name):
        return FullRead("first sync of this collection")
    marks = sides.memory.policy_marks(sides.pair, name)
    if marks != (now := sides.policy(name).marks):
        return FullRead(changed(marks, now))
    by_side: dict[str, SideFinder] = {}
    for which in (SRC, TGT):
        endpoint = sides.endpoint(which)
        point = sides.memory.point(sides.pair, name, endpoint)
        if (reason := sides.unsupported.get(which)) is not None:
            by_side[which] = ReadWhole(reason)
        elif point is None or point.token is None:
            by_side[which] = ReadWhole(f"no resume point yet for {endpoint}")
        else:
            by_side[which] = Streamed(point)
    if not sides.scan_unfollowed and by_side[SRC].token() is not None:
        if (reason := sides.unsupported.get(TGT)) is not None:
            by_side[TGT] = ById(reason)
    if all(f.token() is None for f in by_side.values()):
        return FullRead(
            "; ".join(f"{sides.endpoint(w)}: {f.found.reason}" for w, f in by_side.items())
        )
    return ByChanges(by_side)


def settled(
    finder: ChangeFinder, sides: Sides, uuids: dict[str, bytes | None], first_copy: int
) -> ChangeFinder:
    """The choice once the collections' specs are read (meanwhile the streams were): a
    first copy into an empty target (`first_copy_counts`), else the finder as its
    collection's uuids leave it (`ChangeFinder.checked`)."""
    if first_copy:
        return FirstCopy(first_copy)
    return finder.checked(sides, uuids)


def read_whole(reason: str) -> ChangeFinder:
    """The finder of a collection planned again by reading both sides whole (a `changes`
    backup must know the ids a first copy inserts before it writes them)."""
    return FullRead(reason)


def first_copy_counts(sides: Sides, exists: dict[str, dict[str, bool]]) -> dict[str, int]:
    """Per collection that is a first copy, the source's document count (by its record
    count): a live source with documents, an empty (or missing) target collection and no
    memory of it. Counted for all at once (a round trip each over a slow link)."""
    if not isinstance(sides.source, MongoSource):
        return {}
    source = sides.source
    unknown = [n for n, e in exists.items() if e[SRC] and not sides.memory.knows(sides.pair, n)]

    def count(name: str) -> int:
        with failing_clearly("reading", name, sides.target.label):
            if exists[name][TGT] and not _empty(sides.target, name):
                return 0
        with failing_clearly("reading", name, source.label):
            return source.record_count(name)

    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="count") as pool:
        return {n: c for n, c in zip(unknown, pool.map(count, unknown), strict=True) if c}


def _empty(target: MongoSource, name: str) -> bool:
    """Cheap first (the record count), exact second (a `find_one`, which some servers
    answer only after walking the whole collection)."""
    if target.record_count(name) > 0:
        return False
    coll = target.db[name]
    find = partial(coll.find_one, {}, {"_id": 1})
    return with_retries(find, what=f"read {name} ({target.label})") is None


STARTERS = 4  # scratches made ready for candidates at once (SQLite files: disk, not CPU)
STREAMS = 8  # reads of one side's stream at once (one per resume point)


def follow_changes(
    sides: Sides,
    finders: dict[str, ChangeFinder],
    scratches: dict[str, CollectionScratch],
    *,
    read_ahead: bool = False,
) -> None:
    """Read each side's change streams once for every collection whose finder follows
    one (one read per side and resume point); a stream that cannot vouch for a
    collection makes that side a whole read (`ChangeFinder.lost`).

    `read_ahead`: the target's version of each document the source's stream names is read
    meanwhile, for the before-images of a `changes` backup (prefetch.py)."""
    streamed = [n for n, f in finders.items() if any(f.following(w) for w in (SRC, TGT))]
    budgets = {w: {n: _budget(sides, n, sides.endpoint(w)) for n in streamed} for w in (SRC, TGT)}
    ahead = None
    if read_ahead and streamed:
        ahead = Prefetcher(sides.target.db, {n: scratches[n] for n in streamed}, budgets[SRC])
    # The scratches are made ready for candidates while the first stream opens (a round
    # trip away): an event waits for its collection's (`_logs`), not the stream's request.
    try:
        with ThreadPoolExecutor(max_workers=STARTERS, thread_name_prefix="start") as pool:
            starting = {name: pool.submit(scratches[name].start_changes) for name in streamed}
            for which in (SRC, TGT):
                _read_streams(sides, which, finders, scratches, budgets[which], ahead, starting)
                if ahead is not None and which == SRC:
                    ahead.read_now()  # while the target's stream is read
            for done in starting.values():
                done.result()
    finally:
        if ahead is not None:
            ahead.close()


def _read_streams(
    sides: Sides,
    which: str,
    finders: dict[str, ChangeFinder],
    scratches: dict[str, CollectionScratch],
    budgets: dict[str, int],
    ahead: Prefetcher | None,
    starting: Mapping[str, Future[None]],
) -> None:
    """One side's stream, read once per resume point, `STREAMS` at a time: collections
    whose points differ (synced apart, with -C or another flow) each cost a read, which
    over a slow link is round trips. Each read writes only its own collections' scratches
    and finders."""
    groups = _by_token(finders, which)
    if len(groups) <= 1:
        for token, names in groups.items():
            _read_stream(sides, which, token, names, finders, scratches, budgets, ahead, starting)
        return
    with ThreadPoolExecutor(max_workers=STREAMS, thread_name_prefix="stream") as pool:
        reads = [
            pool.submit(
                _read_stream,
                sides,
                which,
                token,
                names,
                finders,
                scratches,
                budgets,
                ahead,
                starting,
            )
            for token, names in groups.items()
        ]
        for read in reads:
            read.result()


def _by_token(finders: dict[str, ChangeFinder], which: str) -> dict[bytes, list[str]]:
    groups: dict[bytes, list[str]] = {}
    for name, finder in finders.items():
        if (token := finder.following(which)) is not None:
            groups.setdefault(token, []).append(name)
    return groups


def _read_stream(
    sides: Sides,
    which: str,
    token: bytes,
    names: list[str],
    finders: dict[str, ChangeFinder],
    scratches: dict[str, CollectionScratch],
    budgets: dict[str, int],
    ahead: Prefetcher | None = None,
    starting: Mapping[str, Future[None]] | None = None,
) -> None:
    side = sides.side(which)
    endpoint = sides.endpoint(which)
    # up to where the run's stream state stood (taken first): no round trip for a fence
    fence = changestream.point_time(sides.now.get(which))

    attempts = 0

    def attempt() -> changestream.Drained:
        nonlocal attempts
        attempts += 1
        for name in names if attempts > 1 else ():  # a retry reads again from the start
            if starting is not None:
                starting[name].result()
            scratches[name].restart_side(which)
        limit = sides.limit if which == SRC else None
        with _logs(scratches, names, which, starting) as logs:
            route: Router = logs.get
            if ahead is not None and which == SRC:
                route = _reading_ahead(logs.get, ahead)
            return side.read_changes(token, names, route, limit, budgets=budgets, fence=fence)

    try:
        with failing_clearly("reading changes of", ", ".join(names), side.label):
            drained = with_retries(attempt, what=f"read changes ({side.label})")
    except changestream.HistoryLost as exc:
        for name in names:
            finders[name] = finders[name].lost(which, str(exc))
        return
    for name in names:
        if name in drained.fallbacks:
            finders[name] = finders[name].lost(which, drained.fallbacks[name])
        else:
            finders[name].followed(which, drained)
    log.debug(
        "change stream read",
        extra={"endpoint": endpoint, "events": drained.events, "collections": len(names)},
    )


def _reading_ahead(route: Router, ahead: Prefetcher) -> Router:
    def routed(name: str) -> ChangeSink | None:
        sink = route(name)
        return None if sink is None else _Ahead(sink, ahead, name)

    return routed


class _Ahead:
    """A source collection's change sink that also asks for the target's version of each
    document an event names (its before-image, should the sync replace or delete it)."""

    def __init__(self, sink: ChangeSink, ahead: Prefetcher, name: str) -> None:
        self.sink, self.ahead, self.name = sink, ahead, name

    def put(self, raw: bytes, *, inserted: bool = False) -> None:
        self.sink.put(raw, inserted=inserted)
        if not inserted:
            self.ahead.want(self.name, raw_id(raw))

    def gone(self, rid: bytes) -> None:
        self.sink.gone(rid)
        self.ahead.want(self.name, rid)

    def named(self, rid: bytes, *, inserted: bool = False) -> None:
        self.sink.named(rid, inserted=inserted)
        if not inserted:
            self.ahead.want(self.name, rid)


def _budget(sides: Sides, name: str, endpoint: str) -> int:
    """How many changes of a collection are worth following: past a quarter of it, reading
    both sides whole costs less (one event costs about what one scanned document does on
    each side)."""
    return max(FOLLOW_AT_LEAST, int(FOLLOW_SHARE * sides.memory.count(sides.pair, name, endpoint)))


class _logs:
    """One ChangeLog per collection of a stream, opened at its first event (a stream
    with nothing new opens none), all closed together."""

    def __init__(
        self,
        scratches: dict[str, CollectionScratch],
        names: Sequence[str],
        which: str,
        starting: Mapping[str, Future[None]] | None = None,
    ) -> None:
        self.scratches, self.names, self.which = scratches, set(names), which
        self.starting = starting  # each scratch made ready for candidates (`start_changes`)
        self.logs: dict[str, ChangeLog] = {}

    def get(self, name: str) -> ChangeLog | None:
        if name not in self.names:
            return None
        if name not in self.logs:
            if self.starting is not None:
                self.starting[name].result()
            self.logs[name] = self.scratches[name].changes(self.which)
        return self.logs[name]

    def __enter__(self) -> _logs:
        return self

    def __exit__(self, *exc: object) -> None:
        for log_ in self.logs.values():
            log_.close()
