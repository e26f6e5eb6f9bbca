"""Read one side of a collection into a scratch SQLite file: per document its `_id` and digest.

The source side also spools its raw documents to a file, so the apply step writes exactly
the snapshot that was planned and verified, with one read of the source.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from syncd.engine.gcpause import gc_paused
from syncd.mongo.rawbson import digest, id_key, raw_id

BATCH_ROWS = 5000
Progress = Callable[[int], None]

SCAN_SCHEMA = """
CREATE TABLE docs (
    idkey BLOB PRIMARY KEY, rid BLOB NOT NULL, digest BLOB NOT NULL, off INTEGER, len INTEGER
) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class ScanResult:
    path: Path
    count: int
    bytes: int


Row = tuple[bytes, bytes, bytes, int | None, int | None]  # idkey, rid, digest, off, len


def open_scratch(path: Path) -> sqlite3.Connection:
    """A scratch file, opened with URI names enabled (so others attach read-only)."""
    conn = sqlite3.connect(path.as_uri(), uri=True, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-4096")  # 4 MiB: RSS must not grow with the collection
    return conn


def create_scan(path: Path) -> sqlite3.Connection:
    """A new, empty scan file at `path` (replacing any left from an earlier attempt)."""
    path.unlink(missing_ok=True)
    conn = open_scratch(path)
    conn.executescript(SCAN_SCHEMA)
    return conn


class RawReader(Protocol):
    """What a scan reads: any collection of raw BSON documents (a DocumentSource, or a
    view of one)."""

    label: str

    def iter_raw(self, name: str) -> Iterator[bytes]: ...


def scan_collection(
    source: RawReader,
    name: str,
    path: Path,
    *,
    spool: Path | None = None,
    progress: Progress | None = None,
) -> ScanResult:
    """Digest every document of `name` into a new SQLite file at `path`."""
    conn = create_scan(path)
    spool_file = spool.open("wb") if spool is not None else None
    seen = total = 0
    rows: list[Row] = []
    try:
        with gc_paused():
            for raw in source.iter_raw(name):
                rid = raw_id(raw)
                offset = None
                if spool_file is not None:
                    offset = total
                    spool_file.write(raw)
                total += len(raw)
                rows.append((id_key(rid), rid, digest(raw), offset, len(raw)))
                if len(rows) >= BATCH_ROWS:
                    seen += insert_rows(conn, rows)
                    rows = []
                    if progress is not None:
                        progress(seen)
            seen += insert_rows(conn, rows)
            if progress is not None:
                progress(seen)
        (count,) = conn.execute("SELECT COUNT(*) FROM docs").fetchone()
    finally:
        try:
            if spool_file is not None:
                spool_file.close()  # raises again on a full disk: the flush fails
        finally:
            conn.close()  # else a file of a dead run holds its disk space until GC
    return ScanResult(path, int(count), total)


def order_path(scan: Path) -> Path:
    """Beside a scan: the digest of each document in the order it was read (16 bytes each),
    for reading a copy back in the same order (`reads_back_in_order`)."""
    return scan.with_suffix(".order")


def reads_back_in_order(source: RawReader, name: str, order: Path) -> bool:
    """Whether `name` holds exactly the documents whose digests `order` lists, read back in
    that order: each document compared with the one at its place, and none more or less.
    False says nothing of how many differ (the order may just be another one)."""
    if not order.exists():
        return False
    size = len(digest(b""))
    with order.open("rb") as expected, gc_paused():
        for raw in source.iter_raw(name):
            if expected.read(size) != digest(raw):
                return False
        return expected.read(1) == b""


def find_row(conn: sqlite3.Connection, key: bytes, want: bytes) -> tuple[int, int] | None:
    """(offset, length) in the spool of the document with this id key and digest."""
    row = conn.execute(
        "SELECT off, len FROM docs WHERE idkey = ? AND digest = ?", (key, want)
    ).fetchone()
    return None if row is None else (int(row[0]), int(row[1]))


def insert_rows(conn: sqlite3.Connection, rows: list[Row]) -> int:
    """Insert a batch; a document seen twice (a scan racing a writer) keeps its last version."""
    if not rows:
        return 0
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO docs VALUES (?, ?, ?, ?, ?) ON CONFLICT (idkey) DO UPDATE SET "
        "rid = excluded.rid, digest = excluded.digest, off = excluded.off, len = excluded.len",
        rows,
    )
    conn.execute("COMMIT")
    return len(rows)
