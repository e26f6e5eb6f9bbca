"""Write a plan to the target, then prove it and remember it: the steps after the plan.

GridFS order: fs.files deletes before fs.chunks deletes, fs.chunks writes before fs.files
writes, so no file document points at missing chunks.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field

from syncd.config.model import GRIDFS_PAIRS
from syncd.engine import apply as applying
from syncd.engine import stream as streaming
from syncd.engine.changes import Sides
from syncd.engine.plan import CollectionPlan, Plan
from syncd.engine.progress import Reporter
from syncd.engine.scratch import CollectionScratch
from syncd.engine.verify import advance_target, tally_own_writes, verify_collection
from syncd.mongo.retry import failing_clearly
from syncd.mongo.source import MongoSource


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
    plan: Plan, sides: Sides, reporter: Reporter, *, announce: bool = True
) -> list[CollectionResult]:
    """Apply every collection's plan; `announce` first copies' batches as intents."""
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
                results[name].deleted = applying.apply_deletes(target.db[name], ids)
            with closing(scratch.retyped_ids()) as ids:
                applying.remove_retyped(target.db[name], ids)

    def write(name: str) -> None:
        c = by_name[name]
        progress = reporter.counter(name, "write", total=c.inserts + c.replaces)
        bypass = sides.policy(name).bypass_validation
        with failing_clearly("writing", name, target.label):
            if c.first_copy:
                assert isinstance(sides.source, MongoSource)  # noqa: S101 - plan.py made sure
                recorder = None
                if announce:
                    recorder = sides.memory.intents_recorder(sides.pair, name, sides.target_name)
                try:
                    done = streaming.copy_first(
                        c, sides.source, target.db[name], progress, recorder, bypass=bypass
                    )
                finally:
                    if recorder is not None:
                        recorder.close()
            else:
                with closing(_scratch(c).writes()) as writes:
                    done = applying.apply_writes(target.db[name], writes, progress, bypass=bypass)
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
    sides.target.forget_listing()  # as the writes left it
    tallies = tally_own_writes(plan.collections, sides)
    by_name = {r.name: r for r in results}
    for c in plan.collections:
        with failing_clearly("verifying", c.name, sides.target.label):
            by_name[c.name].verified = verify_collection(c, sides, tallies)
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


def _scratch(c: CollectionPlan) -> CollectionScratch:
    assert c.scratch is not None  # noqa: S101 - set by plan_collections
    return c.scratch
