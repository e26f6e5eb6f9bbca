"""A sync from start to end: select → scan → plan → refuse or confirm → back up → apply →
verify → remember → hooks. The same path serves `sync`, `status` (plan only), the daemon
and `backup restore` (a backup as the source)."""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from syncd.config.model import GRIDFS_PAIRS, Config, DriftPolicy
from syncd.engine import apply as applying
from syncd.engine import stream as streaming
from syncd.engine import verify as verifying
from syncd.engine.memory import Intents, Pair, connect, memory_path, record_run
from syncd.engine.plan import CollectionPlan, Plan, classify
from syncd.engine.progress import Reporter, Silent
from syncd.engine.retry import failing_clearly, with_retries
from syncd.engine.scan import TARGET_SPOOL, open_scratch, scan_collection
from syncd.engine.source import CollectionSpec, DocumentSource, MongoSource
from syncd.engine.specs import compare_specs
from syncd.engine.stream import first_copy_count
from syncd.errors import SyncdError

log = logging.getLogger("syncd.engine")

Confirm = Callable[[Plan], bool]
BeforeWrite = Callable[[Plan], str | None]


@dataclass
class CollectionResult:
    name: str
    inserted: int = 0
    replaced: int = 0
    deleted: int = 0
    kept: int = 0
    verified: bool = False
    seconds: float = 0.0


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


class VerificationFailed(SyncdError):
    """After applying, the target could not be proven equal to the planned result."""


def with_gridfs_partners(names: Sequence[str]) -> list[str]:
    """fs.files and fs.chunks always travel together."""
    selected = list(dict.fromkeys(names))
    for name in list(selected):
        partner = GRIDFS_PAIRS.get(name)
        if partner and partner not in selected:
            selected.append(partner)
    return selected


class Workspace:
    """Scratch files of one run (scans, spools), removed at the end.

    With `reap`, scratch left in `base` by runs whose process is gone (kill -9, power cut)
    is removed first: it holds a spool as large as the collection and is never read again.
    Only for a directory of syncd's own (the state directory), never the system temp dir.
    """

    def __init__(self, base: Path, *, reap: bool = False) -> None:
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
        if reap:
            remove_abandoned(base)
        self.path = Path(tempfile.mkdtemp(prefix=f"run-{os.getpid()}-", dir=base))

    def for_collection(self, index: int) -> Path:
        path = self.path / str(index)
        path.mkdir(exist_ok=True)
        return path

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def remove_abandoned(base: Path) -> None:
    for path in base.glob("run-*-*"):
        pid = path.name.split("-")[1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def plan_collections(
    source: DocumentSource,
    target: MongoSource,
    names: Sequence[str],
    *,
    flow: str,
    source_name: str,
    target_name: str,
    drift_for: Callable[[str], DriftPolicy],
    memory: Path,
    workspace: Workspace,
    reporter: Reporter,
    spool_target: bool = False,
) -> Plan:
    """`spool_target` keeps the target's documents as read (`tgt.spool`), for a full
    backup before the sync that then needs no second read of the target."""
    pair = Pair.of(source_name, target_name)
    plans = []
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="scan") as pool:
        for index, name in enumerate(names):
            work = workspace.for_collection(index)
            plan = CollectionPlan(name, drift_for(name), work_dir=work)
            source_spec = _spec(source, name)
            target_spec = _spec(target, name)
            plan.source_exists = source_spec is not None
            plan.specs = compare_specs(source_spec, target_spec)
            first = 0
            if source_spec is not None:
                with failing_clearly("reading", name, target.label):
                    first = first_copy_count(
                        source, target, name, memory, pair, exists=target_spec is not None
                    )
            if first:
                streaming.plan_first_copy(plan)
            else:
                _scan_both(pool, plan, source, target, reporter, spool_target=spool_target)
            with _diff_db(work, memory) as conn:
                classify(conn, pair, plan, source_name, target_name)
            if first:
                plan.first_copy, plan.source_count, plan.inserts = True, first, first
            reporter.planned(plan)
            plans.append(plan)
    return Plan(flow, source_name, target_name, plans)


def _scan_both(
    pool: ThreadPoolExecutor,
    plan: CollectionPlan,
    source: DocumentSource,
    target: MongoSource,
    reporter: Reporter,
    *,
    spool_target: bool = False,
) -> None:
    """Scan both sides of one collection at once (the source also into a spool)."""
    name, work = plan.name, plan.work_dir
    assert work is not None  # noqa: S101
    read_source = partial(
        scan_collection,
        source,
        name,
        work / "src.sqlite",
        spool=work / "src.spool",
        progress=reporter.counter(name, "read source"),
    )
    read_target = partial(
        scan_collection,
        target,
        name,
        work / "tgt.sqlite",
        spool=work / TARGET_SPOOL if spool_target else None,
    )
    src_scan = pool.submit(with_retries, read_source, what=f"read {name} ({source.label})")
    tgt_scan = pool.submit(with_retries, read_target, what=f"read {name} ({target.label})")
    with failing_clearly("reading", name, source.label):
        plan.source_count = src_scan.result().count
    with failing_clearly("reading", name, target.label):
        plan.target_count = tgt_scan.result().count


def scan_first_copies(
    plan: Plan, source: DocumentSource, target: MongoSource, memory: Path
) -> None:
    """Plan first copies like any collection (both sides scanned): a `changes` backup must
    list the ids the sync inserts before it writes them."""
    pair = Pair.of(plan.source, plan.target)
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="scan") as pool:
        for c in plan.collections:
            if c.first_copy and c.work_dir is not None:
                c.first_copy = False
                _scan_both(pool, c, source, target, Silent())
                with _diff_db(c.work_dir, memory) as conn:
                    classify(conn, pair, c, plan.source, plan.target)


def _spec(source: DocumentSource, name: str) -> CollectionSpec | None:
    with failing_clearly("reading", name, source.label):
        return with_retries(
            partial(source.collection_spec, name), what=f"read {name} ({source.label})"
        )


class _diff_db:
    """The target scan with the source scan and the sync memory attached."""

    def __init__(self, work: Path, memory: Path) -> None:
        self.conn = open_scratch(work / "tgt.sqlite")
        self.conn.execute("ATTACH DATABASE ? AS src", (str(work / "src.sqlite"),))
        self.conn.execute("ATTACH DATABASE ? AS mem", (str(memory),))

    def __enter__(self) -> sqlite3.Connection:
        return self.conn

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


def apply_plan(
    plan: Plan,
    source: DocumentSource,
    target: MongoSource,
    *,
    memory: Path,
    reporter: Reporter,
    remember: bool = True,
) -> list[CollectionResult]:
    """Write the plan. GridFS order: fs.files deletes before fs.chunks deletes, fs.chunks
    writes before fs.files writes, so no file document points at missing chunks."""
    results = {c.name: CollectionResult(c.name, kept=c.kept) for c in plan.collections}
    by_name = {c.name: c for c in plan.collections}
    started = {name: time.monotonic() for name in by_name}
    pair = Pair.of(plan.source, plan.target)
    if remember:
        for c in plan.collections:
            record_intent(c, pair, plan.target, memory)
    for c in plan.collections:
        with failing_clearly("writing", c.name, target.label):
            applying.prepare_collection(target.db, c)
    for name in sorted(by_name, key=lambda n: n != "fs.files"):
        c = by_name[name]
        assert c.work_dir is not None  # noqa: S101 - set by plan_collections
        with _diff_db(c.work_dir, memory) as conn, failing_clearly("writing", name, target.label):
            results[name].deleted = applying.apply_deletes(target.db[name], conn)
            applying.remove_retyped(target.db[name], conn)
    for name in sorted(by_name, key=lambda n: n == "fs.files"):
        c = by_name[name]
        assert c.work_dir is not None  # noqa: S101
        progress = reporter.counter(name, "write", total=c.inserts + c.replaces)
        with _diff_db(c.work_dir, memory) as conn, failing_clearly("writing", name, target.label):
            if c.first_copy:
                intents = Intents(memory, pair, name, plan.target) if remember else None
                done = streaming.copy_first(c, source, target.db[name], progress, intents)
            else:
                done = applying.apply_writes(
                    target.db[name], conn, c.work_dir / "src.spool", progress=progress
                )
        results[name].inserted, results[name].replaced = done.inserted, done.replaced
    for c in plan.collections:
        with failing_clearly("writing", c.name, target.label):
            applying.finish_collection(target.db, c)
    for c in plan.collections:
        with failing_clearly("verifying", c.name, target.label):
            results[c.name].verified = verify_collection(c, source, target, memory)
        results[c.name].seconds = time.monotonic() - started[c.name]
        if remember:
            remember_collection(c, pair, plan, memory)
    return [results[c.name] for c in plan.collections]


def verify_collection(
    plan: CollectionPlan, source: DocumentSource, target: MongoSource, memory: Path
) -> bool:
    """Every document the sync wrote or deleted reads back as planned and the target holds
    the planned number of documents (verify.py says why that proves the collection equal);
    indexes and options too. A collection the sync did not write was proven equal by the
    plan's own scans."""
    assert plan.work_dir is not None  # noqa: S101
    if not plan.writes:
        return True
    with _diff_db(plan.work_dir, memory) as conn:
        mismatches = verifying.target_mismatches(
            conn, target, plan.name, plan.work_dir / "after.sqlite", first_copy=plan.first_copy
        )
    if mismatches:
        raise VerificationFailed(
            f"{plan.name} on {target.label}: after writing, {mismatches} document(s) differ "
            "from the source (was it written to during the sync?); run the sync again"
        )
    remaining = compare_specs(_spec(source, plan.name), _spec(target, plan.name))
    if plan.source_exists and (
        remaining.create_indexes or remaining.drop_indexes or remaining.collmod
    ):
        raise VerificationFailed(
            f"{plan.name} on {target.label}: indexes or options still differ after the sync: "
            f"{'; '.join(remaining.describe())}"
        )
    return True


# After a verified sync the target holds the source's documents, except those kept under
# `merge`, which keep the target side's old memory (bt).
REMEMBER_SQL = """
INSERT INTO mem.docs (pair, coll, idkey, {sside}, {tside})
SELECT :pair, :coll, idkey, s, t FROM (
    SELECT s.idkey AS idkey, s.digest AS s,
           CASE WHEN k.idkey IS NOT NULL THEN k.bt ELSE s.digest END AS t
      FROM src.docs s
      LEFT JOIN (SELECT idkey, bt FROM main.diff WHERE action != 'apply') k ON k.idkey = s.idkey
    UNION ALL
    SELECT idkey, NULL, bt FROM main.diff WHERE action != 'apply' AND s IS NULL
) WHERE s IS NOT NULL OR t IS NOT NULL
"""


INTENT_SQL = """
INSERT OR IGNORE INTO mem.pending (pair, coll, side, idkey, digest)
SELECT :pair, :coll, :side, idkey, COALESCE(s, x'') FROM main.diff WHERE action = 'apply'
UNION ALL
SELECT :pair, :coll, :side, idkey, x'' FROM main.diff
 WHERE action = 'apply' AND trid IS NOT NULL AND trid != rid
"""


def record_intent(plan: CollectionPlan, pair: Pair, target: str, memory: Path) -> None:
    """Before writing: what this run will leave on the target, so that a run cut short is
    not taken for someone else's edits (drift) by the next one."""
    assert plan.work_dir is not None  # noqa: S101
    if not (plan.work_dir / "tgt.sqlite").exists():
        return
    with _diff_db(plan.work_dir, memory) as conn:
        has_diff = conn.execute(
            "SELECT 1 FROM main.sqlite_master WHERE type = 'table' AND name = 'diff'"
        ).fetchone()
        if has_diff:
            conn.execute(
                INTENT_SQL, {"pair": pair.key, "coll": plan.name, "side": pair.column(target)}
            )


def remember_collection(plan: CollectionPlan, pair: Pair, run: Plan, memory: Path) -> None:
    """Both sides' digests after this sync. A document kept under `merge` keeps the target's
    old memory, so it still counts as a target edit until it travels the other way."""
    assert plan.work_dir is not None  # noqa: S101
    with _diff_db(plan.work_dir, memory) as conn:
        conn.execute("BEGIN")
        conn.execute("DELETE FROM mem.docs WHERE pair = ? AND coll = ?", (pair.key, plan.name))
        conn.execute(
            "DELETE FROM mem.pending WHERE pair = ? AND coll = ? AND side = ?",
            (pair.key, plan.name, pair.column(run.target)),
        )
        conn.execute(
            REMEMBER_SQL.format(sside=pair.column(run.source), tside=pair.column(run.target)),
            {"pair": pair.key, "coll": plan.name},
        )
        conn.execute("COMMIT")


def remember_unchanged(plan: Plan, memory: Path) -> None:
    """A sync with nothing to write still saw both sides equal: remember that, or the next
    run would take every later edit of the source for drift on the target."""
    pair = Pair.of(plan.source, plan.target)
    for c in plan.collections:
        remember_collection(c, pair, plan, memory)


def record_results(
    config: Config, plan: Plan, results: Sequence[CollectionResult], result: str
) -> None:
    pair = Pair.of(plan.source, plan.target)
    by_name = {r.name: r for r in results}
    conn = connect(memory_path(config.state_dir))
    try:
        for c in plan.collections:
            r = by_name.get(c.name)
            counts: dict[str, Any] = {
                "inserted": r.inserted if r else 0,
                "updated": r.replaced if r else 0,
                "deleted": r.deleted if r else 0,
                "kept": c.kept,
                "drift": c.drifted,
            }
            record_run(
                conn,
                pair,
                c.name,
                flow=plan.flow,
                source=plan.source,
                target=plan.target,
                result=result,
                verified=bool(r and r.verified),
                counts=counts,
            )
    finally:
        conn.close()
