"""Prove, after applying, that the target holds the planned result (SPEC §4: counts and
per-document digests against the source).

Why re-reading only the documents the sync touched is a proof, and a full re-scan is not
needed: the plan's scans read every document of both sides moments before the writes, so
each document the sync did not write was proven equal to the source (or deliberately
kept, under `merge`) by those scans. What can still differ is what the sync wrote or
deleted, and what someone else wrote meanwhile. So the check is:

- every document the sync inserted, replaced or deleted is read back by `_id` (in `$in`
  batches) and its digest compared with the planned one (absent for a delete); when the
  sync touched a large share of the collection, one scan of it is cheaper and is used;
- the target's document count equals the planned count, which catches a document that
  appeared or vanished anywhere in the collection during the sync.

A write by someone else to a document the sync did not touch, racing the sync, is not
the sync's to overwrite: the next run sees it as drift (it differs from the memory this
run records and from the source), which is what SPEC §4 asks for.

When the changes were found by change streams, the target's own change stream after the
plan's resume point shows everything that happened to the collection while the sync ran:
the count after the sync is the count before plus the inserts less the deletes it shows,
which costs what was written, not what the collection holds (`count` walks the whole
collection on some servers). An event for a document the sync did not write is someone
else's: that resume point is not advanced, so the next sync looks at it again.

A first copy into an empty collection (see `stream.py`) is verified by one scan of the
target after the copy, compared document by document with what was read from the source.
The target's resume point then moves to a token taken just before that scan: whatever
anyone wrote before the token is in what the scan read (and a document it changed fails
the verification), whatever comes after is in the stream the next sync reads. That costs
one read of the collection, where following the target's stream over the copy's own
inserts costs a read of every insert event (on SecantusDB more than a scan: 0.47x against
0.38x of a raw copy of 100k documents, `bench/server_costs.py`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import Executor, Future
from contextlib import closing
from dataclasses import dataclass, field
from functools import partial

from syncd.engine.changes import Sides
from syncd.engine.plan import CollectionPlan, read_spec
from syncd.engine.scratch import SRC, TGT
from syncd.errors import SyncdError
from syncd.mongo.changestream import HistoryLost
from syncd.mongo.rawbson import digest, id_key, id_value, raw_id
from syncd.mongo.retry import failing_clearly, with_retries
from syncd.mongo.source import CollectionSpec, MongoSource, read_by_id
from syncd.mongo.specs import compare_specs
from syncd.state.memory import Point

# Reading back by `_id` costs a few times more per document than a scan (SecantusDB: about
# 6x); past this share of the collection, one scan of the target is cheaper. Not when the
# plan holds only the candidates of change streams: the rest is known by the memory only.
RESCAN_SHARE = 0.125
log = logging.getLogger("syncd.engine")


class VerificationFailed(SyncdError):
    """After applying, the target could not be proven equal to the planned result;
    `mismatches`: how many documents differ in `collection` on `endpoint` (0: something
    else, such as its indexes)."""

    def __init__(self, message: str, *, collection: str = "", endpoint: str = "") -> None:
        super().__init__(message)
        self.collection, self.endpoint, self.mismatches = collection, endpoint, 0


@dataclass
class Tally:
    """What the target's change stream showed after the plan's resume point."""

    touched: set[bytes]
    inserted: int = 0
    deleted: int = 0
    foreign: bool = False  # someone else wrote a document the sync did not
    # touched document -> its digest after the last event (None: deleted; absent: no
    # event, or one that names the document without showing it)
    final: dict[bytes, bytes | None] = field(default_factory=dict)

    def put(self, raw: bytes, *, inserted: bool = False) -> None:
        self.inserted += int(inserted)
        self._saw(id_key(raw_id(raw)), digest(raw))

    def gone(self, rid: bytes) -> None:
        self.deleted += 1
        self._saw(id_key(rid), None)

    def named(self, rid: bytes, *, inserted: bool = False) -> None:
        """An event that names its document without showing it (an update, or any event of
        a filtered collection: policy.py)."""
        self.inserted += int(inserted)
        key = id_key(rid)
        self._saw(key, None)
        self.final.pop(key, None)

    def _saw(self, key: bytes, now: bytes | None) -> None:
        if key not in self.touched:
            self.foreign = True
        else:
            self.final[key] = now


@dataclass
class Tallies:
    by_name: dict[str, Tally] = field(default_factory=dict)
    token: dict[str, bytes | None] = field(default_factory=dict)


def tally_own_writes(plans: list[CollectionPlan], sides: Sides) -> Tallies:
    """One read of the target's change stream per resume point where the sync wrote.

    Collections found by changes all join their point's read: those written count their
    own writes, the others must show none (then their point moves on with the group's).
    A full read that wrote little joins like a sync by changes. A first copy does not:
    it is verified by a scan (`verify_collection`)."""
    tallies = Tallies()
    groups: dict[bytes, list[CollectionPlan]] = {}
    for c in plans:
        point = c.points.get(sides.target_name)
        if point is None or point.token is None or not _tallied(c):
            continue
        groups.setdefault(point.token, []).append(c)
    for token, group in groups.items():
        if not any(c.writes for c in group):
            continue
        for c in group:
            assert c.scratch is not None  # noqa: S101
            tallies.by_name[c.name] = Tally(c.scratch.touched_keys())
        names = [c.name for c in group]
        try:
            with failing_clearly("verifying", ", ".join(names), sides.target.label):
                drained = with_retries(
                    partial(_tally, sides.target, token, names, tallies),
                    what=f"verify {', '.join(names)} ({sides.target.label})",
                )
        except HistoryLost as exc:
            # The writes are done: what the stream cannot show is read instead (every
            # document written read back by `_id`, the server's count), and the resume
            # point stays where it was.
            log.warning(
                f"{', '.join(names)}: {exc}; verifying by reading the documents written",
                extra={"collections": names},
            )
            for name in names:
                tallies.by_name.pop(name, None)
            continue
        for name in names:
            tallies.token[name] = drained
    return tallies


def _tallied(c: CollectionPlan) -> bool:
    return c.scratch is not None and c.writing.tallied(c)


def touched_tallied(c: CollectionPlan) -> bool:
    """A plan written from its scratch joins the tally when it is read back by what it
    touched (`touched_mismatches`), not by a scan."""
    assert c.scratch is not None  # noqa: S101
    if c.scratch.partial:
        return True
    if not c.writes:
        return False
    return c.scratch.touched_count() <= RESCAN_SHARE * max(c.target_count, 1)


def _tally(target: MongoSource, token: bytes, names: list[str], tallies: Tallies) -> bytes | None:
    for name in names:  # a retry counts again from the start
        tallies.by_name[name] = Tally(tallies.by_name[name].touched)
    drained = target.read_changes(token, names, tallies.by_name.get, lookup=False)
    for name, why in drained.fallbacks.items():
        raise VerificationFailed(
            f"{name} on {target.label}: {why} while the sync ran; run the sync again"
        )
    return drained.token


def verify_collection(
    plan: CollectionPlan,
    sides: Sides,
    tallies: Tallies,
    specs: Mapping[tuple[str, str], Future[CollectionSpec | None]] | None = None,
) -> bool:
    """Every document the sync wrote or deleted reads back as planned and the target holds
    the planned number of documents (the module's docstring says why that proves the
    collection equal); indexes and options too. A collection the sync did not write was
    proven equal by what the plan read. Records the collection's uuid as the sync leaves
    it (the sync may have created it). `specs`: both sides' specs (SRC/TGT, name) being read
    since the writes ended (`read_specs_after`)."""
    scratch, target = plan.scratch, sides.target
    assert scratch is not None  # noqa: S101
    if not plan.writes:
        return True
    # What the target held, plus what the sync inserts, less what it deletes: documents
    # kept by an earlier sync under `deletes: false`, which a sync by change streams does
    # not look at, count as the memory says. A first copy counts what it read instead.
    expected = plan.target_count + plan.inserts - plan.deletes
    mismatches = plan.writing.mismatches(plan, sides, tallies, expected)
    if mismatches:
        failed = VerificationFailed(
            f"{plan.name} on {target.label}: after writing, {mismatches} document(s) differ "
            "from the source (was it written to during the sync?); run the sync again",
            collection=plan.name,
            endpoint=target.label,
        )
        failed.mismatches = mismatches
        raise failed

    def spec(which: str) -> CollectionSpec | None:
        reading = (specs or {}).get((which, plan.name))
        return read_spec(sides.side(which), plan.name) if reading is None else reading.result()

    target_spec = spec(TGT)
    remaining = compare_specs(spec(SRC), target_spec, target.server_version())
    if (
        plan.source_exists
        and not plan.keep_specs
        and (remaining.create_indexes or remaining.drop_indexes or remaining.collmod)
    ):
        raise VerificationFailed(
            f"{plan.name} on {target.label}: indexes or options still differ after the sync: "
            f"{'; '.join(remaining.describe())}"
        )
    before = plan.points.get(sides.target_name, Point(None, None))
    plan.points[sides.target_name] = Point(
        before.token, None if target_spec is None else target_spec.uuid
    )
    return True


def read_specs_after(
    pool: Executor, sides: Sides, names: list[str]
) -> dict[tuple[str, str], Future[CollectionSpec | None]]:
    """Both sides' specs of `names` as the writes left them, read in `pool` while the
    target's stream is (they need nothing of it): the target's listing first, once."""
    sides.target.forget_listing()  # as the writes left it
    listed = pool.submit(sides.target.listing)

    def read(which: str, name: str) -> CollectionSpec | None:
        if which == TGT:
            listed.result()
        return read_spec(sides.side(which), name)

    return {(w, n): pool.submit(read, w, n) for n in names for w in (SRC, TGT)}


def touched_mismatches(plan: CollectionPlan, sides: Sides, tallies: Tallies, expected: int) -> int:
    """A plan written from its scratch: what it wrote or deleted, read back (or the whole
    collection, when it touched a large share of it), and the target's count."""
    scratch, target = plan.scratch, sides.target
    assert scratch is not None  # noqa: S101
    if not scratch.partial and scratch.touched_count() > RESCAN_SHARE * max(expected, 1):
        return _rescan(plan, target)
    tally = tallies.by_name.get(plan.name)
    return max(
        _touched_mismatches(plan, target, tally),
        abs(_count(plan, sides, tallies, expected) - expected),
    )


def copy_mismatches(plan: CollectionPlan, sides: Sides, tallies: Tallies) -> int:
    """A first copy: the target's stream position taken, then the whole collection read
    back (the module's docstring says why).

    On a server that returns a new collection in the order it was inserted, the documents
    read back in the order the source gave them: each is then compared with the digest at
    its place in the copy's read (`CollectionScratch.read_back_in_order`), with no table to
    fill. Only when that fails (another order, or a difference) is the collection read again into a
    table and compared document by document, by `_id`."""
    assert plan.scratch is not None  # noqa: S101
    target = sides.target
    _resume_before_scan(plan, sides, tallies)
    if not plan.scratch.kept_keys():
        check = partial(plan.scratch.read_back_in_order, target)
        if with_retries(check, what=f"verify {plan.name} ({target.label})"):
            return 0
    return _rescan(plan, target)


def _rescan(plan: CollectionPlan, target: MongoSource) -> int:
    """Read the whole target collection back: documents not as planned (missing, extra or
    different)."""
    assert plan.scratch is not None  # noqa: S101
    scan = partial(plan.scratch.read_back, target)
    with_retries(scan, what=f"verify {plan.name} ({target.label})")
    return plan.scratch.rescan_mismatches()


def _resume_before_scan(plan: CollectionPlan, sides: Sides, tallies: Tallies) -> None:
    """Where the target's stream stands before a first copy's verifying scan: the point the
    next sync reads on from (`advance_target`), when the target has change streams."""
    point = plan.points.get(sides.target_name)
    if point is None or point.token is None:
        return
    target = sides.target
    tallies.by_name[plan.name] = Tally(set())
    tallies.token[plan.name] = with_retries(
        target.current_token, what=f"open change stream ({target.label})"
    )


def _count(plan: CollectionPlan, sides: Sides, tallies: Tallies, expected: int) -> int:
    """With no write of anyone else after the plan's resume point, the count before plus
    what the stream shows; else (or without a stream) the server's own count, exact when
    its estimate is not `expected`."""
    tally = tallies.by_name.get(plan.name)
    if tally is None or tally.foreign or not plan.followed(sides.target_name):
        return sides.target.record_count(plan.name, expected=expected)
    return plan.target_count + tally.inserted - tally.deleted


def advance_target(plan: CollectionPlan, sides: Sides, tallies: Tallies) -> None:
    """The resume point past the sync's own writes when the stream showed nobody else's
    (else the next sync reads them again, as drift candidates)."""
    before = plan.points.get(sides.target_name, Point(None, None))
    tally = tallies.by_name.get(plan.name)
    if tally is not None and not tally.foreign and tallies.token.get(plan.name):
        plan.points[sides.target_name] = Point(tallies.token[plan.name], before.uuid)


def _touched_mismatches(plan: CollectionPlan, target: MongoSource, tally: Tally | None) -> int:
    """Documents the sync wrote or deleted that the target does not hold as planned.

    The target's stream after the plan already showed the last version of most of them
    (an insert or replace event carries the whole document, a delete its end): those are
    compared from the stream; only the others are read back by `_id`."""
    assert plan.scratch is not None  # noqa: S101
    mismatches = 0
    batch: list[tuple[bytes, object, bytes | None]] = []

    def check() -> int:
        wanted = [(key, value) for key, value, _ in batch]
        found: dict[bytes, bytes] = {}
        for _, raws in read_by_id(target, plan.name, wanted):
            found.update((id_key(raw_id(raw)), digest(raw)) for raw in raws)
        return sum(1 for key, _, want in batch if found.get(key) != want)

    shown = tally.final if tally is not None else {}
    with closing(plan.scratch.touched()) as touched:
        for key, rid, want in touched:
            if key in shown:
                mismatches += shown[key] != want
                continue
            batch.append((key, id_value(rid), want))
            if len(batch) >= 1000:
                mismatches += check()
                batch = []
    if batch:
        mismatches += check()
    return mismatches
