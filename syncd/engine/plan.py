"""The plan: per collection, what a sync will insert, replace, delete and change, and the drift.

Built from two scans and the sync memory, inside SQLite, so it is bounded in memory.
A plan is a plain value: `--dry-run` prints it, tests inspect it.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syncd.config.model import DriftPolicy
from syncd.engine.memory import Pair
from syncd.engine.rawbson import id_value
from syncd.engine.specs import SpecChanges

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
    kept: int = 0
    drift_ids: list[str] = field(default_factory=list)
    conflict_ids: list[str] = field(default_factory=list)
    specs: SpecChanges = field(default_factory=SpecChanges)
    source_exists: bool = True
    work_dir: Path | None = None
    first_copy: bool = False  # into an empty target: streamed, not scanned (stream.py)

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
            "drift_ids": self.drift_ids,
            "conflict_ids": self.conflict_ids,
            "index_changes": self.specs.describe(),
        }


@dataclass
class Plan:
    flow: str
    source: str
    target: str
    collections: list[CollectionPlan]

    @property
    def writes(self) -> bool:
        return any(c.writes for c in self.collections)

    @property
    def destructive(self) -> bool:
        return any(c.destructive for c in self.collections)

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


DIFF_SQL = """
CREATE TABLE diff AS
SELECT u.idkey AS idkey, u.rid AS rid, u.trid AS trid, u.s AS s, u.t AS t, u.off AS off,
       u.len AS len, m.{sside} AS bs, m.{tside} AS bt,
       EXISTS (SELECT 1 FROM mem.pending p WHERE p.pair = :pair AND p.coll = :coll
               AND p.side = '{tside}' AND p.idkey = u.idkey
               AND p.digest = COALESCE(u.t, x'')) AS ours
FROM (
    SELECT s.idkey, s.rid, t.rid AS trid, s.digest AS s, t.digest AS t, s.off, s.len
      FROM src.docs s LEFT JOIN main.docs t ON t.idkey = s.idkey
     WHERE t.digest IS NOT s.digest
    UNION ALL
    SELECT t.idkey, t.rid, t.rid, NULL, t.digest, NULL, NULL
      FROM main.docs t WHERE NOT EXISTS (SELECT 1 FROM src.docs s WHERE s.idkey = t.idkey)
) u LEFT JOIN mem.docs m ON m.pair = :pair AND m.coll = :coll AND m.idkey = u.idkey
"""

CLASSIFY_SQL = """
UPDATE diff SET
    op = CASE WHEN t IS NULL THEN 'insert' WHEN s IS NULL THEN 'delete' ELSE 'replace' END,
    drifted = (t IS NOT bt AND NOT ours),
    action = CASE
        WHEN :merge AND (t IS NOT bt AND NOT ours) AND (s IS NOT bs) THEN 'conflict'
        WHEN :merge AND (t IS NOT bt AND NOT ours) THEN 'keep'
        ELSE 'apply' END
"""


def classify(
    conn: sqlite3.Connection, pair: Pair, plan: CollectionPlan, source: str, target: str
) -> None:
    """Fill `plan` counts from scans `src.docs` (attached) and `main.docs` and memory `mem`."""
    conn.execute("DROP TABLE IF EXISTS diff")
    conn.execute(
        DIFF_SQL.format(sside=pair.column(source), tside=pair.column(target)),
        {"pair": pair.key, "coll": plan.name},
    )
    for column in ("op TEXT", "drifted INTEGER", "action TEXT"):
        conn.execute(f"ALTER TABLE diff ADD COLUMN {column}")
    conn.execute(CLASSIFY_SQL, {"merge": plan.drift_policy == "merge"})
    conn.execute("CREATE INDEX diff_by_action ON diff (action, op, off)")
    counts = dict(
        conn.execute(
            "SELECT action || ':' || op, COUNT(*) FROM diff GROUP BY action, op"
        ).fetchall()
    )
    plan.inserts = counts.get("apply:insert", 0)
    plan.replaces = counts.get("apply:replace", 0)
    plan.deletes = counts.get("apply:delete", 0)
    plan.kept = sum(v for k, v in counts.items() if k.startswith("keep:"))
    plan.conflicts = sum(v for k, v in counts.items() if k.startswith("conflict:"))
    (plan.drifted,) = conn.execute("SELECT COUNT(*) FROM diff WHERE drifted").fetchone()
    plan.drift_ids = _sample_ids(conn, "drifted")
    plan.conflict_ids = _sample_ids(conn, "action = 'conflict'")


def _sample_ids(conn: sqlite3.Connection, where: str) -> list[str]:
    rows = conn.execute(
        f"SELECT rid FROM diff WHERE {where} ORDER BY idkey LIMIT {SAMPLE_IDS}"  # noqa: S608
    ).fetchall()
    return [str(id_value(row[0])) for row in rows]
