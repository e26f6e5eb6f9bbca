"""The seam for "what changed in this collection since the last sync".

A `ChangeFinder` fills one collection's scratch with what the plan needs to know of each
side. Three implementations:

- `FullRead`: both sides read whole (a first sync, `--full`, a server without change
  streams, a lost resume point, a dropped or recreated collection, a collection policy
  other than the last sync's: filter, deletes, mask or masking key, see policy.py);
- `FirstCopy`: a first sync into an empty target: nothing to read before writing, the
  source is streamed into the target and its scan filled meanwhile (stream.py);
- `ChangeStreams`: only the documents either side's change stream named since the last
  sync, and those the memory does not hold settled; the memory stands for the rest.

Both sides are read through their collection's policy (`Sides.policies`, applied by
`MongoSource`): whatever a finder puts in the scratch is already filtered and masked.
The plan, the writes, the verification and the memory work the same whatever filled the
scratch; `mode` ("full" or "changes") and `reason` say how, for logs, status and metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from syncd.engine import changestream
from syncd.engine.changestream import ChangeSink, Router
from syncd.engine.memory import Pair, Point, SyncMemory
from syncd.engine.policy import Policies, Policy, changed
from syncd.engine.prefetch import Prefetcher
from syncd.engine.rawbson import raw_id
from syncd.engine.retry import failing_clearly, with_retries
from syncd.engine.scan import Progress, scan_collection
from syncd.engine.scratch import SRC, TGT, ChangeLog, CollectionScratch
from syncd.engine.source import DocumentSource, MongoSource, read_by_id

log = logging.getLogger("syncd.engine")

FULL, CHANGES = "full", "changes"
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

    def policy(self, name: str) -> Policy:
        return self.policies(name)

    def side(self, which: str) -> DocumentSource:
        return self.source if which == SRC else self.target

    def endpoint(self, which: str) -> str:
        return self.source_name if which == SRC else self.target_name


class ChangeFinder(Protocol):
    mode: str
    reason: str

    def fill(self, scratch: CollectionScratch, sides: Sides, progress: Progress) -> None:
        """Put what the plan needs of both sides into `scratch`."""
        ...


@dataclass
class FullRead:
    reason: str
    spool_target: bool = False
    mode: str = FULL

    def fill(self, scratch: CollectionScratch, sides: Sides, progress: Progress) -> None:
        """Both sides at once (the source also into a spool, the target into one when a
        full backup before the sync will be written from it)."""
        name = scratch.name
        scratch.partial = False
        read_source = partial(
            scan_collection,
            sides.source,
            name,
            scratch.scan_path(SRC),
            spool=scratch.spool_path(SRC),
            progress=progress,
        )
        read_target = partial(
            scan_collection,
            sides.target,
            name,
            scratch.scan_path(TGT),
            spool=scratch.spool_path(TGT) if self.spool_target else None,
        )
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="scan") as pool:
            src = pool.submit(with_retries, read_source, what=f"read {name} ({sides.source.label})")
            tgt = pool.submit(with_retries, read_target, what=f"read {name} ({sides.target.label})")
            with failing_clearly("reading", name, sides.source.label):
                src.result()
            with failing_clearly("reading", name, sides.target.label):
                tgt.result()


@dataclass
class FirstCopy:
    count: int
    reason: str = "first sync, into an empty target"
    mode: str = FULL

    def fill(self, scratch: CollectionScratch, sides: Sides, progress: Progress) -> None:
        scratch.reset()


@dataclass
class ChangeStreams:
    """Filled by `follow_changes` for every collection of the run at once (one stream per
    side and resume point), then completed per collection by `fill`."""

    points: dict[str, Point]
    mode: str = CHANGES
    reason: str = ""
    more: bool = False  # the source's stream has more changes than this batch took

    def fill(self, scratch: CollectionScratch, sides: Sides, progress: Progress) -> None:
        kw: dict[str, Any] = {"source": sides.source_name, "target": sides.target_name}
        scratch.settle(sides.memory, sides.pair, **kw)
        for which in (SRC, TGT):
            _fetch(scratch, sides, which, scratch.to_fetch(which))
        scratch.fill_from_memory(sides.memory, sides.pair, **kw)
        _fetch(scratch, sides, SRC, scratch.unspooled_writes())


def _fetch(
    scratch: CollectionScratch, sides: Sides, which: str, wanted: list[tuple[bytes, object]]
) -> None:
    if not wanted:
        return
    side = sides.side(which)
    with failing_clearly("reading", scratch.name, side.label), scratch.changes(which) as log_:
        for keys, found in read_by_id(side, scratch.name, wanted):
            log_.fetched(keys, found)


# -- choosing, per collection ------------------------------------------------------------


def stream_state(sides: Sides) -> None:
    """Per side: whether it has change streams, and where its stream stands now. Taken
    before anything is read: what is written while the sync runs is seen by the next."""
    for which in (SRC, TGT):
        side = sides.side(which)
        reason = side.changes_unsupported()
        token = None
        if reason is None:
            try:
                token = with_retries(side.current_token, what=f"open change stream ({side.label})")
            except Exception as exc:  # noqa: BLE001 - any refusal means: read whole
                reason = f"its change stream cannot be opened ({type(exc).__name__}: {exc})"
        sides.unsupported[which], sides.now[which] = reason, token


def choose(
    name: str, sides: Sides, *, full: bool, first_copy: int, uuids: dict[str, bytes | None]
) -> ChangeFinder:
    """How to find this collection's changes, before any stream is read.

    A point without a uuid was taken while the collection did not exist (its uuid is read
    after the point's token): everything it holds now was written after the token, so
    the stream has it; a drop since then is an event in the stream too."""
    if first_copy:
        return FirstCopy(first_copy)
    if full:
        return FullRead("--full asked for a full read")
    if not sides.memory.knows(sides.pair, name):
        return FullRead("first sync of this collection")
    marks = sides.memory.policy_marks(sides.pair, name)
    if marks != (now := sides.policy(name).marks):
        return FullRead(changed(marks, now))
    points = {}
    for which in (SRC, TGT):
        endpoint = sides.endpoint(which)
        if (reason := sides.unsupported.get(which)) is not None:
            return FullRead(f"{endpoint}: {reason}")
        point = sides.memory.point(sides.pair, name, endpoint)
        if point is None or point.token is None:
            return FullRead(f"no resume point yet for {endpoint}")
        if point.uuid is not None and point.uuid != uuids.get(which):
            return FullRead(f"the collection was dropped or recreated on {endpoint}")
        points[which] = point
    return ChangeStreams(points)


def follow_changes(
    sides: Sides,
    finders: dict[str, ChangeFinder],
    scratches: dict[str, CollectionScratch],
    *,
    read_ahead: bool = False,
) -> dict[str, ChangeFinder]:
    """Read each side's change streams once for every collection found by changes; turn
    the collections a stream cannot vouch for into full reads. Returns the finders with
    each side's new resume point recorded on the ones that stay.

    `read_ahead`: the target's version of each document the source's stream names is read
    meanwhile, for the before-images of a `changes` backup (prefetch.py)."""
    streamed = {n: f for n, f in finders.items() if isinstance(f, ChangeStreams)}

    for name in streamed:
        scratches[name].start_changes()
    budgets = {w: {n: _budget(sides, n, sides.endpoint(w)) for n in streamed} for w in (SRC, TGT)}
    ahead = None
    if read_ahead and streamed:
        dirs = {n: scratches[n].work_dir for n in streamed}
        ahead = Prefetcher(sides.target.db, dirs, budgets[SRC])
    try:
        for which in (SRC, TGT):
            for token, names in _by_token(streamed, which).items():
                live = [n for n in names if isinstance(finders[n], ChangeStreams)]
                if not live:
                    continue
                _read_stream(sides, which, token, live, finders, scratches, budgets[which], ahead)
    finally:
        if ahead is not None:
            ahead.close()
    return finders


def _by_token(streamed: dict[str, ChangeStreams], which: str) -> dict[bytes, list[str]]:
    groups: dict[bytes, list[str]] = {}
    for name, finder in streamed.items():
        token = finder.points[which].token
        assert token is not None  # noqa: S101 - `choose` made sure
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
) -> None:
    side = sides.side(which)
    endpoint = sides.endpoint(which)

    def attempt() -> changestream.Drained:
        for name in names:  # a retry reads the stream again from the start
            scratches[name].restart_side(which)
        limit = sides.limit if which == SRC else None
        with _logs(scratches, names, which) as logs:
            route: Router = logs.get
            if ahead is not None and which == SRC:
                route = _reading_ahead(logs.get, ahead)
            return side.read_changes(token, names, route, limit, budgets=budgets)

    try:
        with failing_clearly("reading changes of", ", ".join(names), side.label):
            drained = with_retries(attempt, what=f"read changes ({side.label})")
    except changestream.HistoryLost as exc:
        for name in names:
            finders[name] = FullRead(str(exc))
        return
    for name in names:
        if name in drained.fallbacks:
            finders[name] = FullRead(drained.fallbacks[name])
            continue
        finder = finders[name]
        assert isinstance(finder, ChangeStreams)  # noqa: S101
        finder.points[which] = Point(drained.token, finder.points[which].uuid)
        finder.more = finder.more or drained.more
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
    """One ChangeLog per collection of a stream, all closed together."""

    def __init__(
        self, scratches: dict[str, CollectionScratch], names: Sequence[str], which: str
    ) -> None:
        self.logs = {name: scratches[name].changes(which) for name in names}

    def get(self, name: str) -> ChangeLog | None:
        return self.logs.get(name)

    def __enter__(self) -> _logs:
        return self

    def __exit__(self, *exc: object) -> None:
        for log_ in self.logs.values():
            log_.close()
