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
from syncd.engine.memory import Pair, connect, memory_path, record_run
from syncd.engine.plan import CollectionPlan, Plan, classify
from syncd.engine.progress import Reporter
from syncd.engine.retry import with_retries
from syncd.engine.scan import open_scratch, scan_collection
from syncd.engine.source import DocumentSource, MongoSource
from syncd.engine.specs import compare_specs
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
) -> Plan:
    pair = Pair.of(source_name, target_name)
    plans = []
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="scan") as pool:
        for index, name in enumerate(names):
            work = workspace.for_collection(index)
            plan = CollectionPlan(name, drift_for(name), work_dir=work)
            source_spec = source.collection_spec(name)
            target_spec = target.collection_spec(name)
            plan.source_exists = source_spec is not None
            plan.specs = compare_specs(source_spec, target_spec)
            read_source = partial(
                scan_collection,
                source,
                name,
                work / "src.sqlite",
                spool=work / "src.spool",
                progress=reporter.counter(name, "read source"),
            )
            read_target = partial(scan_collection, target, name, work / "tgt.sqlite")
            src_scan = pool.submit(with_retries, read_source, what=f"read {name} ({source_name})")
            tgt_scan = pool.submit(with_retries, read_target, what=f"read {name} ({target_name})")
            plan.source_count = src_scan.result().count
            plan.target_count = tgt_scan.result().count
            with _diff_db(work, memory) as conn:
                classify(conn, pair, plan, source_name, target_name)
            reporter.planned(plan)
            plans.append(plan)
    return Plan(flow, source_name, target_name, plans)


class _diff_db:
    """The target scan with the source scan and the sync memory attached."""

    def __init__(self, work: Path, memory: Path, *, after: bool = False) -> None:
        self.conn = open_scratch(work / "tgt.sqlite")
        self.conn.execute("ATTACH DATABASE ? AS src", (str(work / "src.sqlite"),))
        self.conn.execute("ATTACH DATABASE ? AS mem", (str(memory),))
        if after:
            rescanned = work / "after.sqlite"
            # Not rescanned: nothing was written, so the plan's scan is the target's state.
            path = rescanned if rescanned.exists() else work / "tgt.sqlite"
            self.conn.execute("ATTACH DATABASE ? AS aft", (str(path),))

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
    for c in plan.collections:
        applying.prepare_collection(target.db, c)
    for name in sorted(by_name, key=lambda n: n != "fs.files"):
        c = by_name[name]
        assert c.work_dir is not None  # noqa: S101 - set by plan_collections
        with _diff_db(c.work_dir, memory) as conn:
            results[name].deleted = applying.apply_deletes(target.db[name], conn)
            applying.remove_retyped(target.db[name], conn)
    for name in sorted(by_name, key=lambda n: n == "fs.files"):
        c = by_name[name]
        assert c.work_dir is not None  # noqa: S101
        with _diff_db(c.work_dir, memory) as conn:
            done = applying.apply_writes(
                target.db[name],
                conn,
                c.work_dir / "src.spool",
                progress=reporter.counter(name, "write", total=c.inserts + c.replaces),
            )
        results[name].inserted, results[name].replaced = done.inserted, done.replaced
    for c in plan.collections:
        applying.finish_collection(target.db, c)
    pair = Pair.of(plan.source, plan.target)
    for c in plan.collections:
        results[c.name].verified = verify_collection(c, source, target, memory)
        results[c.name].seconds = time.monotonic() - started[c.name]
        if remember:
            remember_collection(c, pair, plan, memory)
    return [results[c.name] for c in plan.collections]


VERIFY_SQL = """
WITH keep AS (SELECT idkey, t FROM main.diff WHERE action != 'apply'),
exp AS (
    SELECT s.idkey, s.digest FROM src.docs s WHERE s.idkey NOT IN (SELECT idkey FROM keep)
    UNION ALL SELECT idkey, t FROM keep WHERE t IS NOT NULL
)
SELECT (SELECT COUNT(*) FROM exp e LEFT JOIN aft.docs a ON a.idkey = e.idkey
         WHERE a.digest IS NOT e.digest)
     + (SELECT COUNT(*) FROM aft.docs a
         WHERE NOT EXISTS (SELECT 1 FROM exp e WHERE e.idkey = a.idkey))
"""


def verify_collection(
    plan: CollectionPlan, source: DocumentSource, target: MongoSource, memory: Path
) -> bool:
    """Re-read the target; every document must match the planned result, indexes too.

    A collection the sync did not write was proven equal by the plan's own scans."""
    assert plan.work_dir is not None  # noqa: S101
    if not plan.writes:
        return True
    scan_collection(target, plan.name, plan.work_dir / "after.sqlite")
    with _diff_db(plan.work_dir, memory, after=True) as conn:
        (mismatches,) = conn.execute(VERIFY_SQL).fetchone()
    if mismatches:
        raise VerificationFailed(
            f"{plan.name}: after writing, {mismatches} document(s) on the target differ from "
            "the source (was it written to during the sync?); run the sync again"
        )
    remaining = compare_specs(source.collection_spec(plan.name), target.collection_spec(plan.name))
    if plan.source_exists and (
        remaining.create_indexes or remaining.drop_indexes or remaining.collmod
    ):
        raise VerificationFailed(
            f"{plan.name}: indexes or options still differ after the sync: "
            f"{'; '.join(remaining.describe())}"
        )
    return True


REMEMBER_SQL = """
INSERT INTO mem.docs (pair, coll, idkey, {sside}, {tside})
SELECT :pair, :coll, idkey, s, t FROM (
    SELECT s.idkey AS idkey, s.digest AS s,
           CASE WHEN k.idkey IS NOT NULL THEN k.bt ELSE a.digest END AS t
      FROM src.docs s LEFT JOIN aft.docs a ON a.idkey = s.idkey
      LEFT JOIN (SELECT idkey, bt FROM main.diff WHERE action != 'apply') k ON k.idkey = s.idkey
    UNION ALL
    SELECT a.idkey, NULL, CASE WHEN k.idkey IS NOT NULL THEN k.bt ELSE a.digest END
      FROM aft.docs a
      LEFT JOIN (SELECT idkey, bt FROM main.diff WHERE action != 'apply') k ON k.idkey = a.idkey
     WHERE NOT EXISTS (SELECT 1 FROM src.docs s WHERE s.idkey = a.idkey)
) WHERE s IS NOT NULL OR t IS NOT NULL
"""


def remember_collection(plan: CollectionPlan, pair: Pair, run: Plan, memory: Path) -> None:
    """Both sides' digests after this sync. A document kept under `merge` keeps the target's
    old memory, so it still counts as a target edit until it travels the other way."""
    assert plan.work_dir is not None  # noqa: S101
    with _diff_db(plan.work_dir, memory, after=True) as conn:
        conn.execute("BEGIN")
        conn.execute("DELETE FROM mem.docs WHERE pair = ? AND coll = ?", (pair.key, plan.name))
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
        assert c.work_dir is not None  # noqa: S101
        shutil.copyfile(c.work_dir / "tgt.sqlite", c.work_dir / "after.sqlite")
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
