"""The plan: per collection, what a sync will insert, replace, delete and change, the drift,
and how the changes were found.

Made from what a `ChangeFinder` put in the collection's scratch and the sync memory, inside
SQLite, so it is bounded in memory. A plan is a plain value: `--dry-run` prints it, tests
inspect it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from syncd.config.model import DriftPolicy
from syncd.engine import changes
from syncd.engine.changes import ChangeFinder, Found, Sides
from syncd.engine.context import Check, go_on
from syncd.engine.progress import Reporter
from syncd.engine.scratch import SRC, TGT, CollectionScratch, Workspace
from syncd.engine.ttl import Rule, expired_by, expiry_rules
from syncd.mongo.rawbson import id_value
from syncd.mongo.retry import failing_clearly, with_retries
from syncd.mongo.source import CollectionSpec, DocumentSource
from syncd.mongo.specs import SpecChanges, compare_specs
from syncd.state.memory import Pair, Point

if TYPE_CHECKING:
    from pymongo.collection import Collection

    from syncd.engine.apply import Applied
    from syncd.engine.context import Check as _Check
    from syncd.engine.verify import Tallies

log = logging.getLogger("syncd.engine")
SAMPLE_IDS = 10
# Independent reads of a run at once: over a slow link a run costs its round trips, not
# its collections. (mongorestore restores 4 collections at once; pymongo opens a
# connection per concurrent request: endpoints.WARM_CONNECTIONS are open from the start.)
# SPEC_READERS per side.
SPEC_READERS, FILLERS = 12, 4
Chooser = Callable[[str], ChangeFinder]


class Writing(Protocol):
    """How a collection's plan reaches the target and is proven there, as the way its
    changes were found decided (changes.py): from its scratch (`write.FromScratch`, the
    default), or, for a first copy into an empty target, streamed from the source
    (`stream.CopyFirst`). The writer, the verifier and `diff` ask it, never which it is."""

    def write(
        self,
        plan: CollectionPlan,
        sides: Sides,
        progress: Callable[[int], None],
        *,
        bypass: bool,
        check: _Check,
        announce: bool,
    ) -> Applied:
        """Insert and replace what the plan says (its deletes are written before)."""
        ...

    def tallied(self, plan: CollectionPlan) -> bool:
        """Whether the target's change stream after the plan is read to count its writes."""
        ...

    def mismatches(
        self, plan: CollectionPlan, sides: Sides, tallies: Tallies, expected: int
    ) -> int:
        """After writing: the documents not as planned (`expected`: the planned count)."""
        ...

    def rows(
        self, plan: CollectionPlan, source: Collection[Any], query: dict[str, Any], limit: int
    ) -> Iterator[tuple[bytes, str, bool, str]]:
        """(raw `_id`, op, drifted, action) of the plan's documents for `diff`: at most
        `limit` of those `query` matches on `source`, where they are not in the scratch."""
        ...

    def listed(self, plan: CollectionPlan, sides: Sides, reporter: Reporter) -> None:
        """Make the ids the plan inserts known before it writes (a `changes` backup)."""
        ...


def _from_scratch() -> Writing:
    from syncd.engine.write import FromScratch  # write.py imports this module

    return FromScratch()


@dataclass
class CollectionPlan:
    name: str
    drift_policy: DriftPolicy
    source_count: int = 0
    target_count: int = 0
    inserts: int = 0
    replaces: int = 0
    deletes: int = 0
    drifted: int = 0
    conflicts: int = 0
    kept: int = 0  # documents kept as the target has them (merge)
    kept_deletes: int = 0  # source deletions not applied (deletes: false)
    drift_ids: list[str] = field(default_factory=list)
    conflict_ids: list[str] = field(default_factory=list)
    specs: SpecChanges = field(default_factory=SpecChanges)
    source_exists: bool = True
    keep_specs: bool = False  # indexes and options left as the target has them (an undo)
    scratch: CollectionScratch | None = None
    writing: Writing = field(default_factory=_from_scratch)  # how it is written, proven
    mode: str = changes.FULL  # how the changes were found (changes.FIND_MODES)
    reason: str = ""  # why both sides, or one side, were read whole
    found: dict[str, Found] = field(default_factory=dict)  # endpoint -> how its side was found
    points: dict[str, Point] = field(default_factory=dict)  # endpoint -> where read up to
    more: bool = False  # the source has more changes than this batch took (continuous)
    expiry: tuple[Rule, ...] = ()  # the target's TTL indexes: its deletes are not drift
    target_spec: CollectionSpec | None = None  # as the plan read it (a backup keeps it)

    @property
    def changes(self) -> int:
        return self.inserts + self.replaces + self.deletes

    @property
    def destructive(self) -> bool:
        return self.replaces > 0 or self.deletes > 0 or bool(self.specs.drop_indexes)

    @property
    def writes(self) -> bool:
        return self.changes > 0 or not self.specs.empty

    def followed(self, endpoint: str) -> bool:
        """Whether `endpoint`'s side was found by its change stream."""
        found = self.found.get(endpoint)
        return found is not None and found.way == changes.STREAM_WAY

    @property
    def found_by(self) -> str:
        if self.mode == changes.CHANGES:
            return "change streams"
        if self.mode == changes.FULL:
            return f"full read ({self.reason})"
        return "; ".join(
            f"{endpoint}: {found.describe()}" for endpoint, found in self.found.items()
        )

    @property
    def refusal(self) -> str | None:
        if self.specs.immutable:
            return (
                f"{self.name}: the target's collection differs in options that cannot be "
                f"changed in place ({', '.join(self.specs.immutable)}); recreate it on the "
                "target by hand, then run again"
            )
        if self.drift_policy == "abort" and self.drifted:
            return (
                f"{self.name}: {self.drifted} document(s) changed on the target since the last sync"
            )
        if self.drift_policy == "merge" and self.conflicts:
            return f"{self.name}: {self.conflicts} document(s) changed on both sides"
        return None

    def summary(self) -> dict[str, Any]:
        return {
            "collection": self.name,
            "source_docs": self.source_count,
            "target_docs": self.target_count,
            "inserts": self.inserts,
            "updates": self.replaces,
            "deletes": self.deletes,
            "drift": self.drifted,
            "drift_policy": self.drift_policy,
            "conflicts": self.conflicts,
            "kept": self.kept,
            "kept_deletes": self.kept_deletes,
            "drift_ids": self.drift_ids,
            "conflict_ids": self.conflict_ids,
            "index_changes": self.specs.describe(),
            "mode": self.mode,
            "full_read_reason": self.reason or None,
            "found_by": {endpoint: found.describe() for endpoint, found in self.found.items()},
        }


@dataclass
class Plan:
    flow: str
    source: str
    target: str
    collections: list[CollectionPlan]
    pair: Pair | None = None
    notes: list[str] = field(default_factory=list)  # said once per run (e.g. a pair afresh)

    @property
    def writes(self) -> bool:
        return any(c.writes for c in self.collections)

    @property
    def destructive(self) -> bool:
        return any(c.destructive for c in self.collections)

    @property
    def more(self) -> bool:
        return any(c.more for c in self.collections)

    @property
    def refusals(self) -> list[str]:
        return [r for c in self.collections if (r := c.refusal) is not None]

    def totals(self) -> dict[str, int]:
        return {
            "inserts": sum(c.inserts for c in self.collections),
            "updates": sum(c.replaces for c in self.collections),
            "deletes": sum(c.deletes for c in self.collections),
            "drift": sum(c.drifted for c in self.collections),
        }


def plan_collections(
    sides: Sides,
    names: Sequence[str],
    *,
    flow: str,
    drift_for: Callable[[str], DriftPolicy],
    workspace: Workspace,
    reporter: Reporter,
    full: bool = False,
    spool_target: bool = False,
    read_ahead: bool = False,
    stop: Check = go_on,
    choose: Chooser | None = None,
) -> Plan:
    """Choose per collection how to find its changes, read them, and classify.

    `stop`: the run's stop check, as a read reports progress and after each collection is
    planned. `choose`: the way of finding each collection's changes, when not the sync's
    own (`changes.choose`; a restore's: restore.py).

    `spool_target` keeps the target's documents as a full read sees them, for a full
    backup before the sync that then needs no second read of the target; `read_ahead`
    reads the before-images of a `changes` backup while the source's stream is read."""
    if not sides.now:  # (a sync took it before listing the collections)
        changes.stream_state(sides)
    sides.spool_target = spool_target
    plans: dict[str, CollectionPlan] = {}
    finders: dict[str, ChangeFinder] = {}
    scratches: dict[str, CollectionScratch] = {}
    with ThreadPoolExecutor(max_workers=1 + FILLERS, thread_name_prefix="plan") as pool:
        # The specs (a listing of indexes per collection and side) and the sides read
        # whole are read while the streams are: none needs another.
        reading = pool.submit(_read_specs, sides, names)
        early = {}
        for name in names:
            plans[name] = CollectionPlan(name, drift_for(name))
            plans[name].scratch = scratches[name] = workspace.for_collection(name)
            finders[name] = choose(name) if choose else changes.choose(name, sides, full=full)
            early[name] = pool.submit(finders[name].early, scratches[name], sides)
        try:
            changes.follow_changes(sides, finders, scratches, read_ahead=read_ahead)
        finally:
            specs = reading.result()
            for done in early.values():
                done.result()
    exists = {n: {w: specs[w, n] is not None for w in (SRC, TGT)} for n in names}
    first_copies = changes.first_copy_counts(sides, exists)
    for name in names:
        plan = plans[name]
        source_spec, target_spec = specs[SRC, name], specs[TGT, name]
        plan.expiry = expiry_rules(target_spec)
        plan.target_spec = target_spec
        plan.source_exists = source_spec is not None
        plan.specs = compare_specs(source_spec, target_spec, sides.target.server_version())
        uuids = {SRC: _uuid(source_spec), TGT: _uuid(target_spec)}
        plan.points = {sides.endpoint(w): Point(sides.now.get(w), uuids[w]) for w in (SRC, TGT)}
        finders[name] = changes.settled(finders[name], sides, uuids, first_copies.get(name, 0))
    _say_sides_read_whole({name: finder.found(sides) for name, finder in finders.items()})

    def fill(name: str) -> None:
        counter = reporter.counter(name, "read source")

        def progress(done: int) -> None:
            counter(done)
            stop()

        finders[name].fill(scratches[name], sides, progress)

    with ThreadPoolExecutor(max_workers=FILLERS, thread_name_prefix="fill") as pool:
        filled = {name: pool.submit(fill, name) for name in names}
        for name in names:
            plan, finder = plans[name], finders[name]
            filled[name].result()
            classify_plan(plan, sides)
            finder.describe(plan, sides)
            reporter.planned(plan)
            stop()
    return Plan(flow, sides.source_name, sides.target_name, [plans[n] for n in names], sides.pair)


def plan_fully(plan: CollectionPlan, sides: Sides, reporter: Reporter) -> None:
    """Plan one collection again by reading both sides whole."""
    assert plan.scratch is not None  # noqa: S101
    finder = changes.read_whole(plan.reason)
    finder.fill(plan.scratch, sides, reporter.counter(plan.name, "read"))
    classify_plan(plan, sides)
    plan.writing = _from_scratch()


def _say_sides_read_whole(found: dict[str, dict[str, Found]]) -> None:
    """One line per side read whole for a reason while the other side's stream is
    followed (a standalone local: every collection of the run), not one per collection.
    (A collection with both sides read whole says so itself.)"""
    groups: dict[tuple[str, str], list[str]] = {}
    streams: set[str] = set()
    for name, sides in found.items():
        ways = {f.way for f in sides.values()}
        if len(ways) < 2:
            continue
        for endpoint, f in sides.items():
            if f.way == changes.WHOLE_WAY:
                groups.setdefault((endpoint, f.reason), []).append(name)
            elif f.way == changes.STREAM_WAY:
                streams.add(endpoint)
    for (endpoint, reason), names in groups.items():
        what = names[0] if len(names) == 1 else f"{len(names)} collections"
        others = ", ".join(sorted(streams - {endpoint}))
        log.info(
            f"{what}: reading {endpoint} whole ({reason}); {others}: by its change stream",
            extra={"endpoint": endpoint, "collections": len(names)},
        )


def classify_plan(plan: CollectionPlan, sides: Sides) -> None:
    scratch = plan.scratch
    assert scratch is not None  # noqa: S101
    kw: dict[str, Any] = {"source": sides.source_name, "target": sides.target_name}
    counts = scratch.classify(
        sides.memory,
        sides.pair,
        merge=plan.drift_policy == "merge",
        keep_deletes=not sides.policy(plan.name).deletes,
        expired=expired_by(plan.expiry),
        samples=SAMPLE_IDS,
        **kw,
    )
    plan.inserts, plan.replaces, plan.deletes = counts.inserts, counts.replaces, counts.deletes
    plan.kept, plan.conflicts, plan.drifted = counts.kept, counts.conflicts, counts.drifted
    plan.kept_deletes = counts.kept_deletes
    plan.drift_ids = [str(id_value(rid)) for rid in counts.drift_rids]
    plan.conflict_ids = [str(id_value(rid)) for rid in counts.conflict_rids]
    if scratch.partial:
        plan.source_count, plan.target_count = scratch.partial_counts(
            sides.memory, sides.pair, **kw
        )
    else:
        plan.source_count, plan.target_count = scratch.count(SRC), scratch.count(TGT)


def _read_specs(sides: Sides, names: Sequence[str]) -> dict[tuple[str, str], CollectionSpec | None]:
    """Both sides' specs of every collection, `SPEC_READERS` at a time per side: over a
    slow link a listing of indexes costs a round trip, whatever the collection holds."""
    with (
        ThreadPoolExecutor(max_workers=SPEC_READERS, thread_name_prefix="spec") as src,
        ThreadPoolExecutor(max_workers=SPEC_READERS, thread_name_prefix="spec") as tgt,
    ):
        version = tgt.submit(sides.target.server_version)  # for comparing the specs
        reading = {
            (which, name): pool.submit(read_spec, sides.side(which), name)
            for which, pool in ((SRC, src), (TGT, tgt))
            for name in names
        }
        specs = {key: done.result() for key, done in reading.items()}
        version.result()
        return specs


def read_spec(source: DocumentSource, name: str) -> CollectionSpec | None:
    with failing_clearly("reading", name, source.label):
        return with_retries(
            partial(source.collection_spec, name), what=f"read {name} ({source.label})"
        )


def _uuid(spec: CollectionSpec | None) -> bytes | None:
    return None if spec is None else spec.uuid
