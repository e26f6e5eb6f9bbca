"""Sync memory: what each side of an endpoint pair held after the last successful sync.

One SQLite file in the state directory. Per pair of endpoints (one memory for both
directions), per collection, per document: a digest for each side. Rows live on disk, so
memory use does not grow with collection size. Also the run history `status` shows.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    pair TEXT NOT NULL, coll TEXT NOT NULL, idkey BLOB NOT NULL, a BLOB, b BLOB,
    PRIMARY KEY (pair, coll, idkey)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, pair TEXT NOT NULL, coll TEXT NOT NULL,
    flow TEXT NOT NULL, source TEXT NOT NULL, target TEXT NOT NULL, finished REAL NOT NULL,
    result TEXT NOT NULL, verified INTEGER NOT NULL, counts TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_coll ON runs (pair, coll, finished);
CREATE TABLE IF NOT EXISTS pending (
    pair TEXT NOT NULL, coll TEXT NOT NULL, side TEXT NOT NULL, idkey BLOB NOT NULL,
    digest BLOB NOT NULL,
    PRIMARY KEY (pair, coll, side, idkey, digest)
) WITHOUT ROWID;
"""
# `pending`: digests a sync was about to write to one side (x'' = about to delete), kept
# until that collection's next successful sync. A run cut short leaves the target holding
# some of them; they are syncd's own writes, not drift, even after the source moved on.


@dataclass(frozen=True)
class Pair:
    """An unordered pair of endpoints; `a` sorts first. Columns a/b hold each side's digest."""

    a: str
    b: str

    @classmethod
    def of(cls, first: str, second: str) -> Pair:
        low, high = sorted((first, second))
        return cls(low, high)

    @property
    def key(self) -> str:
        return f"{self.a}|{self.b}"

    def column(self, endpoint: str) -> str:
        if endpoint == self.a:
            return "a"
        if endpoint == self.b:
            return "b"
        raise ValueError(f"{endpoint} is not part of pair {self.key}")


@dataclass(frozen=True)
class LastRun:
    flow: str
    source: str
    target: str
    finished: float
    result: str
    verified: bool
    counts: dict[str, Any]


def memory_path(state_dir: Path) -> Path:
    return state_dir / "memory.sqlite"


def connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    conn = sqlite3.connect(path, timeout=60, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")  # the memory must not be older than the target
    conn.executescript(SCHEMA)
    return conn


def has_memory(conn: sqlite3.Connection, pair: Pair, coll: str, *, schema: str = "main") -> bool:
    row = conn.execute(
        f"SELECT 1 FROM {schema}.docs WHERE pair = ? AND coll = ? LIMIT 1",  # noqa: S608
        (pair.key, coll),
    ).fetchone()
    return row is not None


def record_run(
    conn: sqlite3.Connection,
    pair: Pair,
    coll: str,
    *,
    flow: str,
    source: str,
    target: str,
    result: str,
    verified: bool,
    counts: dict[str, Any],
) -> None:
    conn.execute(
        "INSERT INTO runs (pair, coll, flow, source, target, finished, result, verified, counts)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            pair.key,
            coll,
            flow,
            source,
            target,
            time.time(),
            result,
            int(verified),
            json.dumps(counts),
        ),
    )
    conn.execute(
        "DELETE FROM runs WHERE pair = ? AND coll = ? AND id NOT IN "
        "(SELECT id FROM runs WHERE pair = ? AND coll = ? ORDER BY finished DESC LIMIT 50)",
        (pair.key, coll, pair.key, coll),
    )


def last_run(conn: sqlite3.Connection, pair: Pair, coll: str) -> LastRun | None:
    row = conn.execute(
        "SELECT flow, source, target, finished, result, verified, counts FROM runs "
        "WHERE pair = ? AND coll = ? ORDER BY finished DESC LIMIT 1",
        (pair.key, coll),
    ).fetchone()
    if row is None:
        return None
    return LastRun(row[0], row[1], row[2], row[3], row[4], bool(row[5]), json.loads(row[6]))


def update_side(
    conn: sqlite3.Connection,
    pair: Pair,
    coll: str,
    endpoint: str,
    idkey: bytes,
    digest: bytes | None,
) -> None:
    """Record that `endpoint` now holds `digest` for one document (used after hooks write)."""
    column = pair.column(endpoint)
    conn.execute(
        f"INSERT INTO docs (pair, coll, idkey, {column}) VALUES (?, ?, ?, ?) "  # noqa: S608
        f"ON CONFLICT (pair, coll, idkey) DO UPDATE SET {column} = excluded.{column}",
        (pair.key, coll, idkey, digest),
    )


class Intents:
    """Records, batch by batch and before each write, what a first copy leaves on a side."""

    def __init__(self, memory: Path, pair: Pair, coll: str, side_endpoint: str) -> None:
        self.memory, self.pair, self.coll = memory, pair, coll
        self.side = pair.column(side_endpoint)

    def record(self, rows: list[tuple[bytes, bytes]]) -> None:
        """`rows` are (idkey, digest) of documents about to be written."""
        conn = connect(self.memory)
        try:
            conn.execute("BEGIN")  # one commit per batch, not one per row
            conn.executemany(
                "INSERT OR IGNORE INTO pending (pair, coll, side, idkey, digest) "
                "VALUES (?, ?, ?, ?, ?)",
                [(self.pair.key, self.coll, self.side, key, dig) for key, dig in rows],
            )
            conn.execute("COMMIT")
        finally:
            conn.close()
