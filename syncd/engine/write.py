"""Write a plan to the target, then prove it and remember it: the steps after the plan.

GridFS order: fs.files deletes before fs.chunks deletes, fs.chunks writes before fs.files
writes, so no file document points at missing chunks.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

from pymongo.collection import Collection

from syncd.config.model import GRIDFS_PAIRS
from syncd.engine import apply as applying
from syncd.engine import verify as verifying
from syncd.engine.apply import Applied, Progress
from syncd.engine.changes import Sides
from syncd.engine.context import Check, RunContext
from syncd.engine.plan import SPEC_READERS, CollectionPlan, Plan, Writing
from syncd.engine.progress import Reporter
from syncd.engine.scratch import CollectionScratch
from syncd.engine.verify import (
    Tallies,
    advance_target,
    read_specs_after,
    tally_own_writes,
    verify_collection,
)
from syncd.mongo.retry import failing_clearly


@dataclass
class CollectionResult:
    name: str
    inserted: int = 0
    replaced: int = 0
    deleted: int = 0
    kept: int = 0
    verified: bool = False
    seconds: float = 0.0
    mode: str = "full"


@dataclass
class SyncResult:
    plan: Plan
    applied: bool = False
    collections: list[CollectionResult] = field(default_factory=list)
    backup: str | None = None
    hook_messages: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def documents(self) -> dict[tuple[str, str], int]:
        counts = {}
        for c in self.collections:
            counts[(c.name, "insert")] = c.inserted
            counts[(c.name, "update")] = c.replaced
            counts[(c.name, "delete")] = c.deleted
        return counts

    def modes(self) -> dict[str, int]:
        """How many collections had their changes found each way ("full", "changes")."""
        counts: dict[str, int] = {}
        for c in self.plan.collections:
            counts[c.mode] = counts.get(c.mode, 0) + 1
        return counts


def with_gridfs_partners(names: Sequence[str]) -> list[str]:
    """fs.files and fs.chunks always travel together."""
    selected = list(dict.fromkeys(names))
    for name in list(selected):
        partner = GRIDFS_PAIRS.get(name)
        if partner and partner not in selected:
            selected.append(partner)
    return selected


def record_intents(plan: Plan, sides: Sides) -> None:
    """Before writing: what this run will leave on the target, so that a run cut short is
    not taken for someone else's edits (drift) by the next one."""
    for c in plan.collections:
        assert c.scratch is not None  # noqa: S101
        sides.memory.record_intents(sides.pair, c.name, sides.target_name, c.scratch.intents())


WRITERS = 4  # collections written at once


def write_plan(
    plan: Plan, sides: Sides, run: RunContext, *, announce: bool = True
) -> list[CollectionResult]:
    """Apply every collection's plan, `run`'s checks before each batch; `announce` first
    copies' batches as intents."""
    target = sides.target
    results = {c.name: CollectionResult(c.name, kept=c.kept, mode=c.mode) for c in plan.collections}
    by_name = {c.name: c for c in plan.collections}
    for c in plan.collections:
        with failing_clearly("writing", c.name, target.label):
            applying.prepare_collection(target.db, c)
    for name in sorted(by_name, key=lambda n: n != "fs.files"):
        scratch = _scratch(by_name[name])
        with failing_clearly("writing", name, target.label):
            with closing(scratch.delete_ids()) as ids:
                check = run.before_batch(name)
                results[name].deleted = applying.apply_deletes(target.db[name], ids, check)
            with closing(scratch.retyped_ids()) as ids:
                applying.remove_retyped(target.db[name], ids, check)

    def write(name: str) -> None:
        c = by_name[name]
        progress = run.reporter.counter(name, "write", total=c.inserts + c.replaces)
        bypass, check = sides.policy(name).bypass_validation, run.before_batch(name)
        with failing_clearly("writing", name, target.label):
            done = c.writing.write(
                c, sides, progress, bypass=bypass, check=check, announce=announce
            )
        results[name].inserted, results[name].replaced = done.inserted, done.replaced

    # Collections at once (mongorestore's 4: a first copy is round trips over a slow link);
    # fs.files after every other, so a GridFS file is never listed before its chunks.
    written = [name for name in by_name if by_name[name].writes]
    with ThreadPoolExecutor(max_workers=WRITERS, thread_name_prefix="write") as pool:
        for future in [pool.submit(write, n) for n in written if n != "fs.files"]:
            future.result()
    if "fs.files" in written:
        write("fs.files")
    for c in plan.collections:
        with failing_clearly("writing", c.name, target.label):
            applying.finish_collection(target.db, c)
    return [results[c.name] for c in plan.collections]


def verify_plan(plan: Plan, sides: Sides, results: list[CollectionResult], started: float) -> None:
    written = [c.name for c in plan.collections if c.writes]
    by_name = {r.name: r for r in results}
    with ThreadPoolExecutor(max_workers=SPEC_READERS, thread_name_prefix="verify") as pool:
        specs = read_specs_after(pool, sides, written)
        tallies = tally_own_writes(plan.collections, sides)
        for c in plan.collections:
            with failing_clearly("verifying", c.name, sides.target.label):
                by_name[c.name].verified = verify_collection(c, sides, tallies, specs)
            advance_target(c, sides, tallies)
            by_name[c.name].seconds = time.monotonic() - started


def remember_plan(plan: Plan, sides: Sides) -> None:
    """Both sides' digests after this sync, where each side's stream was read up to, and
    the marks of the policy they were made under. A document kept under `merge` keeps the
    target's old memory, so it still counts as a target edit until it travels the other
    way."""
    for c in plan.collections:
        scratch = _scratch(c)
        with closing(scratch.remembered()) as rows:
            sides.memory.remember(
                sides.pair,
                c.name,
                source=sides.source_name,
                target=sides.target_name,
                rows=rows,
                whole=not scratch.partial,
                kept=scratch.kept_keys(),
                points=c.points,
                policy=sides.policy(c.name).marks,
                query=scratch.remembered_query(),
            )


class FromScratch:
    """A plan written from its scratch: the replaces and inserts its spool holds (the
    deletes are written before, for every plan), proven by reading back what it touched,
    or the whole collection when that is cheaper (verify.py)."""

    def write(
        self,
        plan: CollectionPlan,
        sides: Sides,
        progress: Progress,
        *,
        bypass: bool,
        check: Check,
        announce: bool,
    ) -> Applied:
        with closing(_scratch(plan).writes()) as writes:
            coll = sides.target.db[plan.name]
            return applying.apply_writes(coll, writes, progress, bypass=bypass, check=check)

    def tallied(self, plan: CollectionPlan) -> bool:
        return verifying.touched_tallied(plan)

    def mismatches(
        self, plan: CollectionPlan, sides: Sides, tallies: Tallies, expected: int
    ) -> int:
        return verifying.touched_mismatches(plan, sides, tallies, expected)

    def rows(
        self, plan: CollectionPlan, source: Collection[Any], query: dict[str, Any], limit: int
    ) -> Iterator[tuple[bytes, str, bool, str]]:
        """Drifted ones first, then by `_id`, from the scratch (which owns them)."""
        if plan.scratch is None or not plan.scratch.planned():
            return
        with closing(plan.scratch.rows()) as rows:
            for _key, rid, op, drifted, action in rows:
                yield bytes(rid), str(op), bool(drifted), str(action)

    def listed(self, plan: CollectionPlan, sides: Sides, reporter: Reporter) -> None:
        return None  # the scratch lists them


def _scratch(c: CollectionPlan) -> CollectionScratch:
    assert c.scratch is not None  # noqa: S101 - set by plan_collections
    return c.scratch


_SCRATCH_WRITES: type[Writing] = FromScratch  # checked by mypy: a plan's Writing
