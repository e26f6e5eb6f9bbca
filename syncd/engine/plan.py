"""The plan: per collection, what a sync will insert, replace, delete and change, the drift,
and how the changes were found.

Made from what a `ChangeFinder` put in the collection's scratch and the sync memory, inside
SQLite, so it is bounded in memory. A plan is a plain value: `--dry-run` prints it, tests
inspect it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from syncd.config.model import DriftPolicy
from syncd.engine import changes
from syncd.engine.changes import ChangeFinder, FirstCopy, FullRead, Sides
from syncd.engine.memory import Pair, Point
from syncd.engine.progress import Reporter
from syncd.engine.rawbson import id_value
from syncd.engine.retry import failing_clearly, with_retries
from syncd.engine.scratch import SRC, TGT, CollectionScratch, Workspace
from syncd.engine.source import CollectionSpec, DocumentSource, MongoSource
from syncd.engine.specs import SpecChanges, compare_specs
from syncd.engine.ttl import Rule, expired_by, expiry_rules

log = logging.getLogger("syncd.engine")
SAMPLE_IDS = 10


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
    scratch: CollectionScratch | None = None
    first_copy: bool = False  # into an empty target: streamed, not scanned (stream.py)
    mode: str = changes.FULL  # how the changes were found: "full" or "changes"
    reason: str = ""  # why both sides were read whole
    points: dict[str, Point] = field(default_factory=dict)  # endpoint -> where read up to
    more: bool = False  # the source has more changes than this batch took (continuous)
    expiry: tuple[Rule, ...] = ()  # the target's TTL indexes: its deletes are not drift

    @property
    def changes(self) -> int:
        return self.inserts + self.replaces + self.deletes

    @property
    def destructive(self) -> bool:
        return self.replaces > 0 or self.deletes > 0 or bool(self.specs.drop_indexes)

    @property
    def writes(self) -> bool:
        return self.changes > 0 or not self.specs.empty

    @property
    def found_by(self) -> str:
        return "change streams" if self.mode == changes.CHANGES else f"full read ({self.reason})"

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
) -> Plan:
    """Choose per collection how to find its changes, read them, and classify.

    `spool_target` keeps the target's documents as a full read sees them, for a full
    backup before the sync that then needs no second read of the target; `read_ahead`
    reads the before-images of a `changes` backup while the source's stream is read."""
    changes.stream_state(sides)
    plans: dict[str, CollectionPlan] = {}
    finders: dict[str, ChangeFinder] = {}
    scratches: dict[str, CollectionScratch] = {}
    for name in names:
        plan = plans[name] = CollectionPlan(name, drift_for(name))
        plan.scratch = scratches[name] = workspace.for_collection(name)
        source_spec, target_spec = read_spec(sides.source, name), read_spec(sides.target, name)
        plan.expiry = expiry_rules(target_spec)
        plan.source_exists = source_spec is not None
        plan.specs = compare_specs(source_spec, target_spec, sides.target.server_version())
        uuids = {SRC: _uuid(source_spec), TGT: _uuid(target_spec)}
        first = (
            _first_copy_count(sides, name, exists=target_spec is not None)
            if (source_spec is not None)
            else 0
        )
        finders[name] = changes.choose(name, sides, full=full, first_copy=first, uuids=uuids)
        plan.points = {sides.endpoint(w): Point(sides.now.get(w), uuids[w]) for w in (SRC, TGT)}
    finders = changes.follow_changes(sides, finders, scratches, read_ahead=read_ahead)
    for name in names:
        plan, finder = plans[name], finders[name]
        if isinstance(finder, FullRead):  # a filtered read is not the whole collection
            finder.spool_target = spool_target and not sides.policy(name).filtered
        _found_by(plan, finder, sides)
        scratch = scratches[name]
        finder.fill(scratch, sides, reporter.counter(name, "read source"))
        classify_plan(plan, sides)
        if isinstance(finder, FirstCopy):
            plan.first_copy, plan.source_count, plan.inserts = True, finder.count, finder.count
        reporter.planned(plan)
    return Plan(flow, sides.source_name, sides.target_name, [plans[n] for n in names], sides.pair)


def _found_by(plan: CollectionPlan, finder: ChangeFinder, sides: Sides) -> None:
    plan.mode, plan.reason = finder.mode, finder.reason
    if isinstance(finder, changes.ChangeStreams):
        plan.more = finder.more
        plan.points = {sides.endpoint(w): point for w, point in finder.points.items()}
    else:
        log.info(
            f"{plan.name}: reading both sides whole: {finder.reason}",
            extra={"collection": plan.name, "mode": plan.mode},
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


def _first_copy_count(sides: Sides, name: str, *, exists: bool) -> int:
    """The source's document count (by its record count) when `name` is a first copy: a
    live source with documents, an empty (or missing) target collection and no memory of
    it; else 0."""
    if not isinstance(sides.source, MongoSource) or sides.memory.knows(sides.pair, name):
        return 0
    with failing_clearly("reading", name, sides.target.label):
        if exists and not _empty(sides.target, name):
            return 0
    with failing_clearly("reading", name, sides.source.label):
        return sides.source.record_count(name)


def _empty(target: MongoSource, name: str) -> bool:
    """Cheap first (the record count), exact second (a `find_one`, which some servers
    answer only after walking the whole collection)."""
    if target.record_count(name) > 0:
        return False
    coll = target.db[name]
    find = partial(coll.find_one, {}, {"_id": 1})
    return with_retries(find, what=f"read {name} ({target.label})") is None


def read_spec(source: DocumentSource, name: str) -> CollectionSpec | None:
    with failing_clearly("reading", name, source.label):
        return with_retries(
            partial(source.collection_spec, name), what=f"read {name} ({source.label})"
        )


def _uuid(spec: CollectionSpec | None) -> bytes | None:
    return None if spec is None else spec.uuid
