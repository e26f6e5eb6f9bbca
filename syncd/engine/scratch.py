"""A run's scratch work, owned here: per collection, what each side holds now (scan files,
the table `docs`), the source's documents to write (a spool), the plan's per-document rows
(`diff`), and for a sync by change streams the documents the changes name (`cand`); the
target's documents read ahead for a `changes` backup (`before.*`), a first copy's read
order (`src.order`) and the target read back to verify (`after.sqlite`).

No other module names these files or queries these tables: the others call the methods of
`CollectionScratch` and of what it hands out (`ChangeLog`, `CopyScan`, `AheadWriter`,
`ReadAhead`). The scan table's SQL is all here (`ScanTable` and the plan's statements);
`scan.py` reads a collection into a `ScanTable`. The sync memory is read through the
views `SyncMemory.attach_views` gives (`memo`, `ours`).

A full read puts every document of both sides in the scans; a sync by change streams puts
only the candidates (documents a change named on either side, and those the memory does not
hold settled), with the state of the others taken from the memory. The plan, the writes,
the verification and what is remembered come from the same tables either way.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from syncd.engine.scan import (
    Progress,
    RawReader,
    Row,
    ScanResult,
    reads_back_in_order,
    scan_collection,
)
from syncd.mongo.rawbson import digest, id_key, id_value, raw_id
from syncd.state.memory import Pair, SyncMemory
from syncd.util import pid_alive

SRC, TGT = "src", "tgt"
FLUSH_ROWS = 5000

SCAN_SCHEMA = """
CREATE TABLE docs (
    idkey BLOB PRIMARY KEY, rid BLOB NOT NULL, digest BLOB NOT NULL, off INTEGER, len INTEGER
) WITHOUT ROWID;
"""

CAND_SCHEMA = """
CREATE TABLE IF NOT EXISTS cand (
    idkey BLOB PRIMARY KEY, rid BLOB,
    seen_src INTEGER NOT NULL DEFAULT 0, seen_tgt INTEGER NOT NULL DEFAULT 0,
    fetch_src INTEGER NOT NULL DEFAULT 0, fetch_tgt INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
"""

DIFF_SQL = """
CREATE TABLE diff AS
SELECT u.idkey AS idkey, u.rid AS rid, u.trid AS trid, u.s AS s, u.t AS t, u.off AS off,
       u.len AS len, m.bs AS bs, m.bt AS bt,
       EXISTS (SELECT 1 FROM ours p WHERE p.idkey = u.idkey
               AND p.digest = COALESCE(u.t, x'')) AS ours
FROM (
    SELECT s.idkey, s.rid, t.rid AS trid, s.digest AS s, t.digest AS t, s.off, s.len
      FROM src.docs s LEFT JOIN main.docs t ON t.idkey = s.idkey
     WHERE t.digest IS NOT s.digest
    UNION ALL
    SELECT t.idkey, t.rid, t.rid, NULL, t.digest, NULL, NULL
      FROM main.docs t WHERE NOT EXISTS (SELECT 1 FROM src.docs s WHERE s.idkey = t.idkey)
) u LEFT JOIN memo m ON m.idkey = u.idkey
"""

# `retain`: under `deletes: false`, a target document the source does not have stays, and
# is neither drift nor pending: it is remembered as the target holds it (see REMEMBER_*).
CLASSIFY_SQL = """
UPDATE diff SET
    op = CASE WHEN t IS NULL THEN 'insert' WHEN s IS NULL THEN 'delete' ELSE 'replace' END,
    drifted = (t IS NOT bt AND NOT ours AND NOT expired
               AND NOT (:keep_deletes AND s IS NULL)),
    action = CASE
        WHEN :keep_deletes AND s IS NULL THEN 'retain'
        WHEN :merge AND (t IS NOT bt AND NOT ours AND NOT expired) AND (s IS NOT bs)
            THEN 'conflict'
        WHEN :merge AND (t IS NOT bt AND NOT ours AND NOT expired) THEN 'keep'
        ELSE 'apply' END
"""

# A target document the target's own TTL index deleted is not drift (ttl.py): the rows
# the target lacks though the last sync left them there, with the source's version read.
GONE_FROM_TARGET_SQL = """
SELECT idkey, off, len FROM diff
 WHERE t IS NULL AND bt IS NOT NULL AND NOT ours AND off IS NOT NULL
"""

# After a verified sync the target holds the source's documents, except those kept under
# `merge`, which keep the target side's old memory (bt), and those retained under
# `deletes: false`, which the target holds as it did (t).
KEPT_SQL = """
SELECT idkey, s, CASE WHEN action = 'retain' THEN t ELSE bt END AS bt
  FROM main.diff WHERE action != 'apply'
"""
REMEMBER_WHOLE_SQL = f"""
SELECT idkey, s, t FROM (
    SELECT s.idkey AS idkey, s.digest AS s,
           CASE WHEN k.idkey IS NOT NULL THEN k.bt ELSE s.digest END AS t
      FROM src.docs s
      LEFT JOIN ({KEPT_SQL}) k ON k.idkey = s.idkey
    UNION ALL
    SELECT idkey, NULL, bt FROM ({KEPT_SQL}) k WHERE s IS NULL
) WHERE s IS NOT NULL OR t IS NOT NULL
"""  # noqa: S608 - fixed text

REMEMBER_CANDIDATES_SQL = f"""
SELECT c.idkey, s.digest, CASE WHEN k.idkey IS NOT NULL THEN k.bt ELSE s.digest END
  FROM cand c
  LEFT JOIN src.docs s ON s.idkey = c.idkey
  LEFT JOIN ({KEPT_SQL}) k ON k.idkey = c.idkey
"""  # noqa: S608 - fixed text

INTENT_SQL = """
SELECT idkey, COALESCE(s, x'') FROM main.diff WHERE action = 'apply'
UNION ALL
SELECT idkey, x'' FROM main.diff WHERE action = 'apply' AND trid IS NOT NULL AND trid != rid
"""

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


# `syncd verify`'s comparison of two scans: the source's attached as `src`, the target's
# as `main`.
COMPARE_SQL = {
    "missing": "FROM src.docs s WHERE NOT EXISTS "
    "(SELECT 1 FROM main.docs t WHERE t.idkey = s.idkey)",
    "extra": "FROM main.docs s WHERE NOT EXISTS (SELECT 1 FROM src.docs t WHERE t.idkey = s.idkey)",
    "different": "FROM src.docs s JOIN main.docs t ON t.idkey = s.idkey WHERE t.digest != s.digest",
}


def open_scratch(path: Path) -> sqlite3.Connection:
    """A scratch file, opened with URI names enabled (so others attach read-only)."""
    conn = sqlite3.connect(path.as_uri(), uri=True, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-4096")  # 4 MiB: RSS must not grow with the collection
    return conn


class ScanTable:
    """A scan file's table `docs`: per document its id key, raw `_id`, digest and, where
    its side was spooled, its place in the spool."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    @classmethod
    def create(cls, path: Path) -> ScanTable:
        """A new, empty scan file at `path` (replacing any left from an earlier attempt)."""
        path.unlink(missing_ok=True)
        conn = open_scratch(path)
        conn.executescript(SCAN_SCHEMA)
        return cls(conn)

    @classmethod
    def open(cls, path: Path) -> ScanTable:
        return cls(open_scratch(path))

    def insert(self, rows: list[Row]) -> int:
        """Insert a batch; a document seen twice (a scan racing a writer) keeps its last
        version."""
        if not rows:
            return 0
        conn = self.conn
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO docs VALUES (?, ?, ?, ?, ?) ON CONFLICT (idkey) DO UPDATE SET "
            "rid = excluded.rid, digest = excluded.digest, off = excluded.off, len = excluded.len",
            rows,
        )
        conn.execute("COMMIT")
        return len(rows)

    def count(self) -> int:
        (count,) = self.conn.execute("SELECT COUNT(*) FROM docs").fetchone()
        return int(count)

    def find(self, key: bytes, want: bytes) -> tuple[int, int] | None:
        """(offset, length) in the spool of the document with this id key and digest."""
        row = self.conn.execute(
            "SELECT off, len FROM docs WHERE idkey = ? AND digest = ?", (key, want)
        ).fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    def close(self) -> None:
        self.conn.close()  # else a file of a dead run holds its disk space until GC


def _read_into(
    path: Path,
    reader: RawReader,
    name: str,
    *,
    spool: Path | None = None,
    progress: Progress | None = None,
) -> ScanResult:
    """`name` read by `reader` into a new scan file at `path` (restartable: anew each time)."""
    table = ScanTable.create(path)
    try:
        return scan_collection(reader, name, table, spool=spool, progress=progress)
    finally:
        table.close()


@dataclass(frozen=True)
class Counts:
    inserts: int
    replaces: int
    deletes: int
    kept: int
    kept_deletes: int
    conflicts: int
    drifted: int
    drift_rids: list[bytes]
    conflict_rids: list[bytes]


class CollectionScratch:
    """One collection's scratch work in `work_dir`."""

    def __init__(self, work_dir: Path, name: str) -> None:
        self.work_dir, self.name = work_dir, name
        self.partial = False  # holds only candidates (a sync by change streams)

    def _scan_path(self, side: str) -> Path:
        return self.work_dir / f"{side}.sqlite"

    def _spool_path(self, side: str) -> Path:
        return self.work_dir / f"{side}.spool"

    @property
    def _order_path(self) -> Path:
        """The digest of each document in the order a first copy read it (16 bytes each),
        for reading the copy back in the same order (`scan.reads_back_in_order`)."""
        return self.work_dir / f"{SRC}.order"

    def _whole_path(self, side: str) -> Path:
        """Where a side read whole is scanned (its candidates then go to its scan)."""
        return self.work_dir / f"{side}.whole.sqlite"

    @property
    def _rescan_path(self) -> Path:
        return self.work_dir / "after.sqlite"

    @property
    def _before_paths(self) -> tuple[Path, Path]:
        """(index, spool) of the target's documents read ahead (prefetch.py)."""
        return self.work_dir / "before.sqlite", self.work_dir / "before.spool"

    # -- reading the sides ---------------------------------------------------------------

    def read(
        self,
        side: str,
        reader: RawReader,
        *,
        spool: bool = False,
        progress: Progress | None = None,
    ) -> ScanResult:
        """Read `side` whole into its scan (and its raw documents into its spool)."""
        path = self._spool_path(side) if spool else None
        return _read_into(self._scan_path(side), reader, self.name, spool=path, progress=progress)

    def read_whole(self, side: str, reader: RawReader) -> ScanResult:
        """Read `side` whole beside its candidates (`whole_candidates`, `fill_from_whole`);
        the source's documents into its spool."""
        spool = self._spool_path(SRC) if side == SRC else None
        return _read_into(self._whole_path(side), reader, self.name, spool=spool)

    def copy_scan(self) -> CopyScan:
        """The source's scan and read order, filled by a first copy as it reads (stream.py)."""
        return CopyScan(self._scan_path(SRC), self._order_path)

    def read_back_in_order(self, target: RawReader) -> bool:
        """Whether the target holds a first copy's documents in the order it read them."""
        return reads_back_in_order(target, self.name, self._order_path)

    def read_back(self, target: RawReader) -> ScanResult:
        """Read the target whole again after writing, for `rescan_mismatches`."""
        return _read_into(self._rescan_path, target, self.name)

    def ahead_writer(self) -> AheadWriter:
        """Where the target's documents read ahead go (prefetch.py)."""
        return AheadWriter(*self._before_paths)

    def read_ahead(self) -> ReadAhead:
        """The target's documents read ahead, looked up by `_id` and digest."""
        return ReadAhead(*self._before_paths)

    @property
    def target_spool(self) -> Path | None:
        """The target's documents as read, where the read kept them (for a full backup)."""
        path = self._spool_path(TGT)
        return path if path.exists() else None

    def reset(self) -> None:
        """Empty scans for both sides (a first copy fills the source's while copying)."""
        self.partial = False
        for side in (SRC, TGT):
            ScanTable.create(self._scan_path(side)).close()

    def count(self, side: str) -> int:
        table = ScanTable.open(self._scan_path(side))
        try:
            return table.count()
        finally:
            table.close()

    @contextmanager
    def _joined(
        self, memory: SyncMemory, pair: Pair, *, source: str, target: str
    ) -> Iterator[sqlite3.Connection]:
        """The target scan with the source scan and the memory's views attached."""
        conn = open_scratch(self._scan_path(TGT))
        try:
            conn.execute("ATTACH DATABASE ? AS src", (self._scan_path(SRC).as_uri(),))
            memory.attach_views(conn, pair, self.name, source=source, target=target)
            yield conn
        finally:
            conn.close()

    def _diff(self) -> sqlite3.Connection:
        conn = open_scratch(self._scan_path(TGT))
        conn.execute("ATTACH DATABASE ? AS src", (self._scan_path(SRC).as_uri(),))
        return conn

    def compare(self, samples: int) -> dict[str, tuple[int, list[bytes]]]:
        """After `read` of both sides: per kind (missing, extra and different on the target),
        the count of documents and the raw `_id`s of the first `samples` of them."""
        conn = self._diff()
        try:
            found = {}
            for kind, where in COMPARE_SQL.items():
                (count,) = conn.execute(f"SELECT COUNT(*) {where}").fetchone()  # noqa: S608
                rids = []
                if count:
                    rows = conn.execute(
                        f"SELECT s.rid {where} ORDER BY s.idkey LIMIT {samples}"  # noqa: S608
                    ).fetchall()
                    rids = [row[0] for row in rows]
                found[kind] = (int(count), rids)
            return found
        finally:
            conn.close()

    # -- a sync by change streams: candidates ------------------------------------------

    def start_changes(self) -> None:
        """From here on the scratch holds candidates only (a sync by change streams). The
        source's spool exists from here on, empty until something is read into it (a side
        read whole may be writing it already: not truncated)."""
        self.reset()
        self.partial = True
        self._spool_path(SRC).touch()
        conn = open_scratch(self._scan_path(TGT))
        try:
            conn.executescript(CAND_SCHEMA)
        finally:
            conn.close()

    def restart_side(self, side: str) -> None:
        """Forget what one side's stream said so far (its read is retried from the start)."""
        conn = open_scratch(self._scan_path(TGT))
        try:
            conn.execute("ATTACH DATABASE ? AS src", (self._scan_path(SRC).as_uri(),))
            conn.execute(f"DELETE FROM {'src' if side == SRC else 'main'}.docs")  # noqa: S608
            conn.execute(f"UPDATE cand SET seen_{side} = 0, fetch_{side} = 0")  # noqa: S608
        finally:
            conn.close()
        if side == SRC:
            self._spool_path(SRC).unlink(missing_ok=True)
            self._spool_path(SRC).touch()

    def changes(self, side: str) -> ChangeLog:
        """Record what a side's change stream (or reads by `_id`) says; see `ChangeLog`."""
        return ChangeLog(self, side)

    def settle(self, memory: SyncMemory, pair: Pair, *, source: str, target: str) -> None:
        """Add the documents the memory does not hold settled (kept under merge, or about
        to be written by a run cut short): both sides are read for them."""
        with self._joined(memory, pair, source=source, target=target) as conn:
            conn.executescript(CAND_SCHEMA)
            conn.execute("BEGIN")
            conn.execute("INSERT OR IGNORE INTO cand (idkey) SELECT idkey FROM unsettled")
            conn.execute(
                "UPDATE cand SET fetch_src = fetch_src OR NOT seen_src, "
                "fetch_tgt = fetch_tgt OR NOT seen_tgt WHERE idkey IN (SELECT idkey FROM unsettled)"
            )
            conn.execute("COMMIT")

    def whole_candidates(
        self, side: str, memory: SyncMemory, pair: Pair, *, source: str, target: str
    ) -> None:
        """After `read_whole(side)`: its documents the memory
        holds otherwise (or not at all), and those the memory holds that it no longer
        has, become candidates. Bounded by the size of the change, not of the side."""
        column = "bs" if side == SRC else "bt"
        with self._joined(memory, pair, source=source, target=target) as conn:
            conn.execute("ATTACH DATABASE ? AS whole", (self._whole_path(side).as_uri(),))
            conn.execute("BEGIN")
            conn.execute(
                "INSERT INTO cand (idkey, rid) SELECT w.idkey, w.rid FROM whole.docs w "  # noqa: S608
                f"LEFT JOIN memo m ON m.idkey = w.idkey WHERE m.{column} IS NOT w.digest "
                "ON CONFLICT (idkey) DO UPDATE SET rid = COALESCE(cand.rid, excluded.rid)"
            )
            conn.execute(
                "INSERT OR IGNORE INTO cand (idkey) SELECT m.idkey FROM memo m "  # noqa: S608
                f"WHERE m.{column} IS NOT NULL AND NOT EXISTS "
                "(SELECT 1 FROM whole.docs w WHERE w.idkey = m.idkey)"
            )
            conn.execute("COMMIT")

    def fill_from_whole(self, side: str) -> None:
        """Once every candidate is known: each holds on `side` what its whole read found
        (absent: gone from there); nothing is left to read of that side."""
        schema = "src" if side == SRC else "main"
        conn = self._diff()
        try:
            conn.execute("ATTACH DATABASE ? AS whole", (self._whole_path(side).as_uri(),))
            conn.execute("BEGIN")
            conn.execute(f"UPDATE cand SET seen_{side} = 1, fetch_{side} = 0")  # noqa: S608
            conn.execute(f"DELETE FROM {schema}.docs")  # noqa: S608
            conn.execute(
                f"INSERT INTO {schema}.docs SELECT w.idkey, w.rid, w.digest, w.off, w.len "  # noqa: S608
                "FROM whole.docs w JOIN cand c ON c.idkey = w.idkey"
            )
            conn.execute("COMMIT")
        finally:
            conn.close()

    def want_all(self, side: str) -> None:
        """Every candidate `side` said nothing of is to be read there by `_id`."""
        conn = open_scratch(self._scan_path(TGT))
        try:
            conn.execute(f"UPDATE cand SET fetch_{side} = 1 WHERE NOT seen_{side}")  # noqa: S608
        finally:
            conn.close()

    def to_fetch(self, side: str) -> list[tuple[bytes, object]]:
        """(idkey, `_id` value) of the candidates whose current version on `side` must be
        read (an update event names a document, not its content)."""
        conn = open_scratch(self._scan_path(TGT))
        try:
            rows = conn.execute(
                f"SELECT idkey, COALESCE(rid, idkey) FROM cand WHERE fetch_{side}"  # noqa: S608
            ).fetchall()
        finally:
            conn.close()
        return [(key, id_value(rid)) for key, rid in rows]

    def fill_from_memory(self, memory: SyncMemory, pair: Pair, *, source: str, target: str) -> None:
        """Candidates a side said nothing of hold there what the memory says."""
        with self._joined(memory, pair, source=source, target=target) as conn:
            conn.execute("BEGIN")
            for side, column, schema in ((SRC, "bs", "src"), (TGT, "bt", "main")):
                conn.execute(
                    f"INSERT OR IGNORE INTO {schema}.docs (idkey, rid, digest, off, len) "  # noqa: S608
                    f"SELECT c.idkey, COALESCE(c.rid, c.idkey), m.{column}, NULL, NULL "
                    f"FROM cand c CROSS JOIN memo m ON m.idkey = c.idkey "
                    f"WHERE NOT c.seen_{side} AND NOT c.fetch_{side} AND m.{column} IS NOT NULL"
                )
            conn.execute("COMMIT")

    def unspooled_writes(self) -> list[tuple[bytes, object]]:
        """Source documents known only by their memory digest that the target lacks or
        holds otherwise: their content must be read before they can be written."""
        conn = self._diff()
        try:
            rows = conn.execute(
                "SELECT s.idkey, s.rid FROM src.docs s LEFT JOIN main.docs t "
                "ON t.idkey = s.idkey WHERE s.off IS NULL AND t.digest IS NOT s.digest"
            ).fetchall()
        finally:
            conn.close()
        return [(key, id_value(rid)) for key, rid in rows]

    def partial_counts(
        self, memory: SyncMemory, pair: Pair, *, source: str, target: str
    ) -> tuple[int, int]:
        """Each side's document count: the memory's count, less what it holds of the
        candidates, plus the candidates found there now."""
        stored = memory.count(pair, self.name, source), memory.count(pair, self.name, target)
        with self._joined(memory, pair, source=source, target=target) as conn:
            counts = []
            for base, column, schema in zip(stored, ("bs", "bt"), ("src", "main"), strict=True):
                (known, now) = conn.execute(
                    f"SELECT (SELECT COUNT(*) FROM cand c CROSS JOIN memo m ON m.idkey = c.idkey "  # noqa: S608
                    f"WHERE m.{column} IS NOT NULL), (SELECT COUNT(*) FROM {schema}.docs)"
                ).fetchone()
                counts.append(base - int(known) + int(now))
        return counts[0], counts[1]

    def touched_keys(self) -> set[bytes]:
        """Keys of the documents the plan writes or deletes (for telling syncd's own
        change events from others'). Bounded by the size of the change."""
        conn = self._diff()
        try:
            return {key for (key,) in conn.execute("SELECT idkey FROM diff WHERE action = 'apply'")}
        finally:
            conn.close()

    # -- the plan ------------------------------------------------------------------------

    def classify(
        self,
        memory: SyncMemory,
        pair: Pair,
        *,
        source: str,
        target: str,
        merge: bool,
        samples: int,
        keep_deletes: bool = False,
        expired: Callable[[bytes], bool] | None = None,
    ) -> Counts:
        """Compare both sides with each other and with the memory; count the plan.
        `keep_deletes` (deletes: false): target documents the source lacks are retained.
        `expired`: whether the target's TTL indexes would have deleted a document (ttl.py);
        such a delete on the target is not drift."""
        with self._joined(memory, pair, source=source, target=target) as conn:
            conn.execute("DROP TABLE IF EXISTS diff")
            conn.execute(DIFF_SQL)
            for column in ("op TEXT", "drifted INTEGER", "action TEXT"):
                conn.execute(f"ALTER TABLE diff ADD COLUMN {column}")
            conn.execute("ALTER TABLE diff ADD COLUMN expired INTEGER NOT NULL DEFAULT 0")
            if expired is not None:
                self._mark_expired(conn, expired)
            conn.execute(CLASSIFY_SQL, {"merge": merge, "keep_deletes": keep_deletes})
            conn.execute("CREATE INDEX diff_by_action ON diff (action, op, off)")
            counts = dict(
                conn.execute(
                    "SELECT action || ':' || op, COUNT(*) FROM diff GROUP BY action, op"
                ).fetchall()
            )
            (drifted,) = conn.execute("SELECT COUNT(*) FROM diff WHERE drifted").fetchone()
            # Kept by this sync: not those a sync kept already and nobody changed since
            # (a sync by change streams does not even look at them).
            (kept_deletes,) = conn.execute(
                "SELECT COUNT(*) FROM diff WHERE action = 'retain' "
                "AND (bs IS NOT NULL OR t IS NOT bt)"
            ).fetchone()

            def sample(where: str) -> list[bytes]:
                return [
                    row[0]
                    for row in conn.execute(
                        f"SELECT rid FROM diff WHERE {where} ORDER BY idkey LIMIT ?",  # noqa: S608
                        (samples,),
                    )
                ]

            return Counts(
                inserts=counts.get("apply:insert", 0),
                replaces=counts.get("apply:replace", 0),
                deletes=counts.get("apply:delete", 0),
                kept=sum(v for k, v in counts.items() if k.startswith("keep:")),
                kept_deletes=int(kept_deletes),
                conflicts=sum(v for k, v in counts.items() if k.startswith("conflict:")),
                drifted=int(drifted),
                drift_rids=sample("drifted"),
                conflict_rids=sample("action = 'conflict'"),
            )

    def _mark_expired(self, conn: sqlite3.Connection, expired: Callable[[bytes], bool]) -> None:
        keys = []
        spool = None  # opened at the first row: a sync by changes may have read no source
        try:
            for key, offset, length in conn.execute(GONE_FROM_TARGET_SQL):
                if spool is None:
                    spool = self._spool_path(SRC).open("rb")
                spool.seek(offset)
                if expired(spool.read(length)):
                    keys.append((key,))
        finally:
            if spool is not None:
                spool.close()
        conn.executemany("UPDATE diff SET expired = 1 WHERE idkey = ?", keys)

    def planned(self) -> bool:
        conn = open_scratch(self._scan_path(TGT))
        try:
            row = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'diff'"
            ).fetchone()
        finally:
            conn.close()
        return row is not None

    def rows(self) -> Generator[tuple[bytes, bytes, str, bool, str], None, None]:
        """(idkey, rid, op, drifted, action) of the plan's documents, drifted ones first."""
        yield from self._select(
            "SELECT idkey, rid, op, drifted, action FROM diff ORDER BY drifted DESC, idkey"
        )

    # -- writing -------------------------------------------------------------------------

    def delete_ids(self) -> Generator[bytes, None, None]:
        yield from self._rids("SELECT rid FROM diff WHERE action = 'apply' AND op = 'delete'")

    def retyped_ids(self) -> Generator[bytes, None, None]:
        """Target `_id`s stored with another numeric type than on the source."""
        yield from self._rids(
            "SELECT trid FROM diff WHERE action = 'apply' AND op = 'replace' AND trid != rid"
        )

    def before_images(self) -> Generator[tuple[bytes, bytes | None], None, None]:
        """(raw `_id`, digest the plan holds for the target) of what a sync replaces or
        deletes."""
        yield from self._select(
            "SELECT trid, t FROM diff WHERE action = 'apply' AND op IN ('replace', 'delete')"
        )

    def insert_ids(self) -> Generator[bytes, None, None]:
        yield from self._rids("SELECT rid FROM diff WHERE action = 'apply' AND op = 'insert'")

    def _rids(self, sql: str) -> Generator[bytes, None, None]:
        for (rid,) in self._select(sql):
            yield rid

    def _select(self, sql: str) -> Generator[Any, None, None]:
        """The rows of one query of the plan, its connection closed with the generator."""
        conn = self._diff()
        try:
            yield from conn.execute(sql)
        finally:
            conn.close()

    def writes(self) -> Generator[tuple[str, bytes, bytes], None, None]:
        """(op, rid, raw document) of the inserts and replaces, in spool order. (A sync by
        change streams with nothing to write may have no spool: opened at the first row.)"""
        conn = self._diff()
        spool = None
        try:
            rows = conn.execute(
                "SELECT op, rid, off, len FROM diff WHERE action = 'apply' AND op != 'delete' "
                "ORDER BY op DESC, off"
            )
            for op, rid, offset, length in rows:
                if spool is None:
                    spool = self._spool_path(SRC).open("rb")
                spool.seek(offset)
                yield op, rid, spool.read(length)
        finally:
            if spool is not None:
                spool.close()
            conn.close()

    def intents(self) -> list[tuple[bytes, bytes]]:
        """What the plan will leave on the target: (idkey, digest), x'' for a delete."""
        if not self.planned():
            return []
        conn = self._diff()
        try:
            return conn.execute(INTENT_SQL).fetchall()
        finally:
            conn.close()

    # -- after writing -------------------------------------------------------------------

    def expected_count(self, source_count: int) -> int:
        """Documents the target holds after the sync: the source's, minus kept ones, plus
        the target's own version of kept ones (merge)."""
        conn = self._diff()
        try:
            (kept_source, kept_target) = conn.execute(
                "SELECT COALESCE(SUM(s IS NOT NULL), 0), COALESCE(SUM(t IS NOT NULL), 0) "
                "FROM diff WHERE action != 'apply'"
            ).fetchone()
        finally:
            conn.close()
        return source_count - int(kept_source) + int(kept_target)

    def touched(self) -> Generator[tuple[bytes, bytes, bytes | None], None, None]:
        """(idkey, rid, digest the target must now hold or None) of every write."""
        conn = self._diff()
        try:
            yield from conn.execute(
                "SELECT idkey, rid, CASE WHEN op = 'delete' THEN NULL ELSE s END "
                "FROM diff WHERE action = 'apply'"
            )
        finally:
            conn.close()

    def touched_count(self) -> int:
        conn = self._diff()
        try:
            (n,) = conn.execute("SELECT COUNT(*) FROM diff WHERE action = 'apply'").fetchone()
        finally:
            conn.close()
        return int(n)

    def rescan_mismatches(self) -> int:
        """After `read_back`: the target's documents not as planned."""
        conn = self._diff()
        try:
            conn.execute("ATTACH DATABASE ? AS aft", (self._rescan_path.as_uri(),))
            (mismatches,) = conn.execute(VERIFY_SQL).fetchone()
        finally:
            conn.close()
        return int(mismatches)

    def kept_keys(self) -> list[bytes]:
        """Documents the plan keeps as the target has them (merge): the memory does not
        hold them settled. Not those retained under `deletes: false`: they are."""
        conn = self._diff()
        try:
            return [
                key
                for (key,) in conn.execute(
                    "SELECT idkey FROM diff WHERE action NOT IN ('apply', 'retain')"
                )
            ]
        finally:
            conn.close()

    def remembered(self) -> Generator[tuple[bytes, bytes | None, bytes | None], None, None]:
        """(idkey, source digest, target digest) to remember after a verified sync."""
        conn = self._diff()
        try:
            if self.partial:
                yield from conn.execute(REMEMBER_CANDIDATES_SQL)
            else:
                yield from conn.execute(REMEMBER_WHOLE_SQL)
        finally:
            conn.close()

    def remembered_query(self) -> tuple[dict[str, Path], str] | None:
        """For a whole read, `remembered` as SQL over the scan files (attached as `src` and
        `tgt`), for the memory to run itself; None for a partial one."""
        if self.partial:
            return None
        files = {"src": self._scan_path(SRC), "tgt": self._scan_path(TGT)}
        return files, REMEMBER_WHOLE_SQL.replace("main.", "tgt.")


class ChangeLog:
    """Writes what one side's change stream says of documents into the scratch: the last
    word on each document wins. `put` a document's new version, `gone` a delete, `named`
    a document changed in a way the event does not show (read by `_id` later, then
    `fetched`)."""

    def __init__(self, scratch: CollectionScratch, side: str) -> None:
        self.side = side
        self.schema = "src" if side == SRC else "main"
        self.conn = open_scratch(scratch._scan_path(TGT))
        self.conn.execute("ATTACH DATABASE ? AS src", (scratch._scan_path(SRC).as_uri(),))
        self.spool = scratch._spool_path(SRC).open("ab") if side == SRC else None
        self.offset = self.spool.tell() if self.spool is not None else 0
        self.ops: list[tuple[str, bytes, bytes, bytes | None]] = []

    def put(self, raw: bytes, *, inserted: bool = False) -> None:
        rid = raw_id(raw)
        self._add("put", id_key(rid), rid, raw)

    def gone(self, rid: bytes) -> None:
        self._add("gone", id_key(rid), rid, None)

    def named(self, rid: bytes, *, inserted: bool = False) -> None:
        self._add("named", id_key(rid), rid, None)

    def fetched(self, asked: list[bytes], found: list[bytes]) -> None:
        """The current versions of documents read by `_id` (keys `asked`); those not
        found are gone from this side."""
        present = set()
        for raw in found:
            rid = raw_id(raw)
            present.add(id_key(rid))
            self.ops.append(("put", id_key(rid), rid, raw))
        self.ops += [("gone", key, key, None) for key in asked if key not in present]
        self.flush()

    def _add(self, kind: str, key: bytes, rid: bytes, raw: bytes | None) -> None:
        self.ops.append((kind, key, rid, raw))
        if len(self.ops) >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        """Three statements for the batch, not per document: the last word on a document
        wins (earlier ones are dropped here), and documents are deleted then re-inserted."""
        side, schema = self.side, self.schema
        last: dict[bytes, tuple[str, bytes, bytes | None]] = {}
        for kind, key, rid, raw in self.ops:
            last[key] = (kind, rid, raw)
        self.ops = []
        if not last:
            return
        conn = self.conn
        conn.execute("BEGIN")
        conn.executemany(
            f"INSERT INTO cand (idkey, rid, seen_{side}, fetch_{side}) VALUES (?, ?, 1, ?) "  # noqa: S608
            f"ON CONFLICT (idkey) DO UPDATE SET seen_{side} = 1, "
            f"fetch_{side} = excluded.fetch_{side}, rid = COALESCE(cand.rid, excluded.rid)",
            [(key, rid, int(kind == "named")) for key, (kind, rid, _) in last.items()],
        )
        conn.executemany(
            f"DELETE FROM {schema}.docs WHERE idkey = ?",  # noqa: S608
            [(key,) for key in last],
        )
        conn.executemany(
            f"INSERT INTO {schema}.docs VALUES (?, ?, ?, ?, ?)",  # noqa: S608
            [
                (key, rid, digest(raw), self._spooled(raw), len(raw))
                for key, (_, rid, raw) in last.items()
                if raw is not None
            ],
        )
        conn.execute("COMMIT")

    def _spooled(self, raw: bytes) -> int | None:
        if self.spool is None:
            return None
        offset = self.offset
        self.spool.write(raw)
        self.offset += len(raw)
        return offset

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self.spool is not None:
                self.spool.close()
            self.conn.close()

    def __enter__(self) -> ChangeLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CopyScan:
    """A first copy's scan of the source, filled as the copy reads (stream.py): `insert`
    batches of rows into the scan table, `order.write` each document's digest in the order
    read."""

    def __init__(self, scan: Path, order: Path) -> None:
        self.table = ScanTable.create(scan)
        self.order = order.open("wb")

    def insert(self, rows: list[Row]) -> int:
        return self.table.insert(rows)

    def close(self) -> None:
        try:
            self.order.close()
        finally:
            self.table.close()


class AheadWriter:
    """One collection's documents read ahead (prefetch.py): a spool and its index."""

    def __init__(self, index: Path, spool: Path) -> None:
        self.table = ScanTable.create(index)
        self.spool = spool.open("wb")
        self.offset = 0

    def add(self, raws: list[bytes]) -> None:
        rows: list[Row] = []
        for raw in raws:
            rid = raw_id(raw)
            rows.append((id_key(rid), rid, digest(raw), self.offset, len(raw)))
            self.spool.write(raw)
            self.offset += len(raw)
        self.table.insert(rows)

    def close(self) -> None:
        try:
            self.spool.close()
        finally:
            self.table.close()


class ReadAhead:
    """The documents of one collection read ahead, looked up by raw `_id` and digest."""

    def __init__(self, index: Path, spool: Path) -> None:
        self.table: ScanTable | None = None
        self.spool: BinaryIO | None = None
        if index.exists() and spool.exists():
            self.table, self.spool = ScanTable.open(index), spool.open("rb")

    def get(self, rid: bytes, want: bytes | None) -> bytes | None:
        """The document with this `_id` as read ahead, if its digest is `want`."""
        if self.table is None or self.spool is None or want is None:
            return None
        where = self.table.find(id_key(rid), want)
        if where is None:
            return None
        self.spool.seek(where[0])
        return self.spool.read(where[1])

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()
        if self.table is not None:
            self.table.close()


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
        self.count = 0

    def for_collection(self, name: str) -> CollectionScratch:
        self.count += 1
        path = self.path / str(self.count)
        path.mkdir(exist_ok=True)
        return CollectionScratch(path, name)

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def remove_abandoned(base: Path) -> None:
    for path in base.glob("run-*-*"):
        pid = path.name.split("-")[1]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
