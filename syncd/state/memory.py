"""Sync memory: what each side of an endpoint pair held after the last successful sync.

One SQLite file in the state directory, owned by `SyncMemory`: no other module names its
tables. Per pair of databases (one memory for both directions), per collection, per
document: a digest for each side; per side and collection, the change-stream resume point
and the collection's uuid; the run history `status` shows. Rows live on disk, so memory use
does not grow with collection size.

A pair belongs to the two databases its endpoints point at (`Pair.identity`): pointed at
another database, an endpoint starts a new pair, as on a first sync.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import struct
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

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
CREATE TABLE IF NOT EXISTS pending_batches (
    pair TEXT NOT NULL, coll TEXT NOT NULL, side TEXT NOT NULL, rows BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS pending_batches_by_coll ON pending_batches (pair, coll, side);
CREATE TABLE IF NOT EXISTS points (
    pair TEXT NOT NULL, coll TEXT NOT NULL, side TEXT NOT NULL, token BLOB, uuid BLOB,
    count INTEGER,
    PRIMARY KEY (pair, coll, side)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS docs_unsettled ON docs (pair, coll, idkey) WHERE a IS NOT b;
CREATE TABLE IF NOT EXISTS pairs (
    pair TEXT PRIMARY KEY, names TEXT NOT NULL, identity TEXT NOT NULL, first_seen REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS policies (
    pair TEXT NOT NULL, coll TEXT NOT NULL, marks TEXT NOT NULL,
    PRIMARY KEY (pair, coll)
) WITHOUT ROWID;
"""
# `pending`: digests a sync was about to write to one side (x'' = about to delete), kept
# until that collection's next successful sync. A run cut short leaves the target holding
# some of them; they are syncd's own writes, not drift, even after the source moved on.
# A run's intents are written a batch to a row (`pending_batches`: the batch's (idkey,
# digest) pairs in one blob, `_pack_intents`), which costs a first copy one row per 1,000
# documents instead of one per document; they are read back as rows (`ours`) only by the
# run after one cut short, and dropped with `pending` when the collection's sync succeeds.
# A `pending` row with digest KEPT marks a document a merge kept: its target holds an edit
# the memory does not record, so it is read on every sync until it travels.
# `points`: per side, where that side's change stream was read up to (a resume token) and
# the uuid the collection had, and how many documents of it the memory holds for that side
# (so a sync by change streams counts without walking the memory); they advance only with a
# successful sync of the collection. `docs_unsettled` finds the documents whose two sides
# differ (a merge kept them, a hook rewrote them) without walking the others.
# `policies`: the marks of the collection policy (filter, deletes, mask; policy.py) the
# digests were made under, as JSON; no row for a collection without one. Never a secret:
# the masking key is marked by an HMAC of a constant.


_Row = TypeVar("_Row")
KEPT = b"kept"  # never a digest (those are 16 bytes)


@dataclass(frozen=True)
class Pair:
    """An unordered pair of endpoints; `a` sorts first. Columns a/b hold each side's digest.

    `identity` names the two databases (hosts and database of each side); the memory of
    a pair is kept under names and identity, so a repointed endpoint starts afresh."""

    a: str
    b: str
    identity: str = ""

    @classmethod
    def of(cls, first: str, second: str, identities: dict[str, str] | None = None) -> Pair:
        low, high = sorted((first, second))
        if not identities:
            return cls(low, high)
        return cls(low, high, f"{identities.get(low, '')}\n{identities.get(high, '')}")

    @property
    def names(self) -> str:
        return f"{self.a}|{self.b}"

    @cached_property
    def key(self) -> str:
        if not self.identity:
            return self.names
        tag = hashlib.blake2b(self.identity.encode(), digest_size=6).hexdigest()
        return f"{self.names}|{tag}"

    def column(self, endpoint: str) -> str:
        if endpoint == self.a:
            return "a"
        if endpoint == self.b:
            return "b"
        raise ValueError(f"{endpoint} is not part of pair {self.names}")


@dataclass(frozen=True)
class LastRun:
    flow: str
    source: str
    target: str
    finished: float
    result: str
    verified: bool
    counts: dict[str, Any]


@dataclass(frozen=True)
class Point:
    """Where one side of a collection was read up to, and what the collection was."""

    token: bytes | None
    uuid: bytes | None
    count: int | None = None  # documents the memory holds for this side (set by `remember`)


class SyncMemory:
    """The one owner of memory.sqlite.

    `readonly` opens an existing file without creating or changing anything (dry runs,
    `status`); with no file yet, a read-only memory is empty."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        if readonly and path.exists():
            self.conn = sqlite3.connect(self._read_uri, uri=True, timeout=60, isolation_level=None)
            return
        if readonly:  # nothing remembered yet: an empty memory that vanishes on close
            self._scratch = tempfile.TemporaryDirectory(prefix="syncd-memory-")
            self.path = path = Path(self._scratch.name) / "memory.sqlite"
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.conn = sqlite3.connect(path, timeout=60, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")  # must not be older than the target
        self.conn.executescript(SCHEMA)
        self._upgrade()

    def _upgrade(self) -> None:
        """Columns added since a memory file was made."""
        columns = {row[1] for row in self.conn.execute("PRAGMA table_info(points)")}
        if "count" not in columns:
            self.conn.execute("ALTER TABLE points ADD COLUMN count INTEGER")

    @property
    def _read_uri(self) -> str:
        """Read-only; for a read-only memory also `immutable`, which leaves no -wal/-shm
        files behind (a dry run changes nothing in the state directory)."""
        extra = "&immutable=1" if self.readonly and self._scratch is None else ""
        return f"{self.path.as_uri()}?mode=ro{extra}"

    def close(self) -> None:
        self.conn.close()
        if self._scratch is not None:
            self._scratch.cleanup()

    def __enter__(self) -> SyncMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- pairs ---------------------------------------------------------------------------

    def bind(self, pair: Pair) -> str | None:
        """Register `pair`; say so when its endpoints knew other databases before.

        Memory of the same two endpoint names from before pairs were bound to databases
        (no identity) is adopted once: it was made against these databases."""
        if not pair.identity or self._known_pair(pair.key):
            return None
        legacy = self.conn.execute(
            "SELECT 1 FROM docs WHERE pair = ? LIMIT 1", (pair.names,)
        ).fetchone()
        if self.readonly:
            return None if legacy else self._afresh_message(pair)
        message = None if legacy else self._afresh_message(pair)
        self.conn.execute("BEGIN")
        for table in ("docs", "runs", "pending", "pending_batches", "points", "policies"):
            self.conn.execute(
                f"UPDATE {table} SET pair = ? WHERE pair = ?",  # noqa: S608 - fixed names
                (pair.key, pair.names),
            )
        self.conn.execute(
            "INSERT OR IGNORE INTO pairs VALUES (?, ?, ?, ?)",
            (pair.key, pair.names, pair.identity, time.time()),
        )
        self.conn.execute("COMMIT")
        return message

    def _known_pair(self, key: str) -> bool:
        return (
            self.conn.execute("SELECT 1 FROM pairs WHERE pair = ?", (key,)).fetchone() is not None
        )

    def _afresh_message(self, pair: Pair) -> str | None:
        row = self.conn.execute(
            "SELECT 1 FROM pairs WHERE names = ? AND pair != ? LIMIT 1", (pair.names, pair.key)
        ).fetchone()
        if row is None:
            return None
        return (
            f"endpoints {pair.a} and {pair.b} now point at other databases than at their last "
            "sync: this pair starts afresh, as on a first sync (nothing of the old databases "
            "is taken for drift)"
        )

    # -- documents -----------------------------------------------------------------------

    def knows(self, pair: Pair, coll: str) -> bool:
        """Whether a sync of this pair saw the collection (documents, or empty)."""
        row = self.conn.execute(
            "SELECT 1 FROM points WHERE pair = ? AND coll = ? UNION ALL "
            "SELECT 1 FROM docs WHERE pair = ? AND coll = ? LIMIT 1",
            (pair.key, coll, pair.key, coll),
        ).fetchone()
        return row is not None

    def attach_views(
        self, conn: sqlite3.Connection, pair: Pair, coll: str, *, source: str, target: str
    ) -> None:
        """Give a scratch connection read views of one collection's memory:
        `memo(idkey, bs, bt)` (each side's digest) and `ours(idkey, digest)` (what a sync
        was about to write to the target). The tables' layout stays private here."""
        conn.execute("ATTACH DATABASE ? AS mem", (self._read_uri,))
        sside, tside = pair.column(source), pair.column(target)
        key, name = _quote(pair.key), _quote(coll)
        conn.execute(
            f"CREATE TEMP VIEW memo AS SELECT idkey, {sside} AS bs, {tside} AS bt "  # noqa: S608
            f"FROM mem.docs WHERE pair = {key} AND coll = {name}"
        )
        conn.execute(
            "CREATE TEMP TABLE intended (idkey BLOB NOT NULL, digest BLOB NOT NULL, "
            "PRIMARY KEY (idkey, digest)) WITHOUT ROWID"
        )
        if _has_table(conn, "mem", "pending_batches"):  # (not in a memory of an older syncd)
            for (blob,) in conn.execute(
                "SELECT rows FROM mem.pending_batches WHERE pair = ? AND coll = ? AND side = ?",
                (pair.key, coll, tside),
            ).fetchall():
                conn.executemany(
                    "INSERT OR IGNORE INTO temp.intended VALUES (?, ?)", _unpack_intents(blob)
                )
        conn.execute(
            "CREATE TEMP VIEW ours AS SELECT idkey, digest FROM mem.pending "  # noqa: S608
            f"WHERE pair = {key} AND coll = {name} AND side = '{tside}' "
            "UNION ALL SELECT idkey, digest FROM temp.intended"
        )
        # A document only the target holds (bs NULL) is settled: retained under `deletes:
        # false`; one kept under merge is unsettled by its `pending` row.
        indexed = conn.execute(
            "SELECT 1 FROM mem.sqlite_master WHERE type = 'index' AND name = 'docs_unsettled'"
        ).fetchone()
        by = "INDEXED BY docs_unsettled " if indexed else ""  # the planner would walk the PK
        conn.execute(
            f"CREATE TEMP VIEW unsettled AS SELECT idkey FROM mem.docs {by}"  # noqa: S608
            f"WHERE pair = {key} AND coll = {name} AND a IS NOT b AND {sside} IS NOT NULL "
            f"UNION SELECT idkey FROM mem.pending WHERE pair = {key} AND coll = {name} "
            "UNION SELECT idkey FROM temp.intended"
        )

    def record_intents(
        self, pair: Pair, coll: str, side: str, rows: Iterable[tuple[bytes, bytes]]
    ) -> None:
        """Before writing: (idkey, digest) of what a run will leave on `side`, x'' for a
        delete, so that a run cut short is not taken for someone else's edits."""
        _record_intents(self.conn, pair, coll, side, rows)

    def intents_recorder(self, pair: Pair, coll: str, side: str) -> IntentsRecorder:
        """`record_intents` for one collection from another thread (a first copy's reader
        records each batch before handing it over): its own connection to the file."""
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA synchronous=FULL")  # as durable as the main connection's
        return IntentsRecorder(conn, pair, coll, side)

    def remember(
        self,
        pair: Pair,
        coll: str,
        *,
        source: str,
        target: str,
        rows: Iterable[tuple[bytes, bytes | None, bytes | None]],
        whole: bool,
        kept: Iterable[bytes] = (),
        points: dict[str, Point] | None = None,
        policy: dict[str, str] | None = None,
        query: tuple[dict[str, Path], str] | None = None,
    ) -> None:
        """Both sides' digests after a sync: (idkey, source digest, target digest) for the
        documents the sync looked at. `whole`: they are all of the collection (a full read);
        else only they change. `query`, for a whole read, gives the same rows as SQL over
        scratch files (schema name -> file): they then go from file to file inside SQLite,
        and only the rows that changed are written. `kept`: keys of documents kept under
        merge, whose target holds what the memory does not say. The target's pending
        intents are done with, and the resume points (per side) and the policy's marks
        advance, in the same transaction."""
        sside, tside = pair.column(source), pair.column(target)
        conn = self.conn
        attached = query[0] if whole and query is not None else {}
        for schema, path in attached.items():  # not within a transaction
            conn.execute(f"ATTACH DATABASE ? AS {schema}", (str(path),))
        try:
            self._remember(pair, coll, sside, tside, rows, whole, kept, points, policy, query)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            for schema in attached:
                conn.execute(f"DETACH DATABASE {schema}")

    def _remember(
        self,
        pair: Pair,
        coll: str,
        sside: str,
        tside: str,
        rows: Iterable[tuple[bytes, bytes | None, bytes | None]],
        whole: bool,
        kept: Iterable[bytes],
        points: dict[str, Point] | None,
        policy: dict[str, str] | None,
        query: tuple[dict[str, Path], str] | None,
    ) -> None:
        conn = self.conn
        conn.execute("BEGIN")
        before = {side: self._stored_count(pair, coll, side) for side in ("a", "b")}
        if whole and query is not None:
            delta = self._remember_whole(pair, coll, sside, tside, query[1])
            before, rows = {"a": 0, "b": 0}, ()
        else:
            delta = {"a": 0, "b": 0}
        if whole and query is None:
            conn.execute("DELETE FROM docs WHERE pair = ? AND coll = ?", (pair.key, coll))
            before = {"a": 0, "b": 0}
        upsert = (
            f"INSERT INTO docs (pair, coll, idkey, {sside}, {tside}) VALUES (?, ?, ?, ?, ?) "  # noqa: S608
            f"ON CONFLICT (pair, coll, idkey) DO UPDATE SET {sside} = excluded.{sside}, "
            f"{tside} = excluded.{tside}"
        )
        if whole and query is None:  # the rows go in by batches, counted on the way
            counted = {sside: 0, tside: 0}
            for chunk in _chunks(rows):
                batch = [
                    (pair.key, coll, key, s, t)
                    for key, s, t in chunk
                    if s is not None or t is not None
                ]
                counted[sside] += sum(1 for row in batch if row[3] is not None)
                counted[tside] += sum(1 for row in batch if row[4] is not None)
                conn.executemany(upsert, batch)
            delta = counted
        if not whole:
            delta = self._remember_rows(pair, coll, sside, tside, rows)
        conn.execute(
            "DELETE FROM pending WHERE pair = ? AND coll = ? AND (side = ? OR digest = ?)",
            (pair.key, coll, tside, KEPT),
        )
        conn.execute(
            "DELETE FROM pending_batches WHERE pair = ? AND coll = ? AND side = ?",
            (pair.key, coll, tside),
        )
        conn.executemany(
            "INSERT OR IGNORE INTO pending VALUES (?, ?, ?, ?, ?)",
            ((pair.key, coll, tside, key, KEPT) for key in kept),
        )
        for endpoint, point in (points or {}).items():
            side = pair.column(endpoint)
            conn.execute(
                "INSERT OR REPLACE INTO points VALUES (?, ?, ?, ?, ?, ?)",
                (pair.key, coll, side, point.token, point.uuid, before[side] + delta[side]),
            )
        conn.execute("DELETE FROM policies WHERE pair = ? AND coll = ?", (pair.key, coll))
        if policy:
            conn.execute(
                "INSERT INTO policies VALUES (?, ?, ?)",
                (pair.key, coll, json.dumps(policy, sort_keys=True)),
            )
        conn.execute("COMMIT")

    def _remember_whole(
        self, pair: Pair, coll: str, sside: str, tside: str, select: str
    ) -> dict[str, int]:
        """The collection's rows become those `select` gives (idkey, s, t); rows already
        so are left alone. Within the caller's transaction. Each side's count."""
        conn = self.conn
        if self._holds_nothing(pair, coll):  # a first copy: nothing to compare with
            conn.execute(
                f"INSERT INTO docs (pair, coll, idkey, {sside}, {tside}) "  # noqa: S608
                f"SELECT ?, ?, idkey, s, t FROM ({select}) WHERE s IS NOT NULL OR t IS NOT NULL",
                (pair.key, coll),
            )
            (s_count, t_count) = conn.execute(
                f"SELECT COUNT({sside}), COUNT({tside}) FROM docs WHERE pair = ? AND coll = ?",  # noqa: S608
                (pair.key, coll),
            ).fetchone()
            return {sside: int(s_count), tside: int(t_count)}
        conn.execute("DROP TABLE IF EXISTS temp.remembered")
        conn.execute(f"CREATE TEMP TABLE remembered AS {select}")  # noqa: S608 - scratch's SQL
        conn.execute("CREATE UNIQUE INDEX temp.remembered_by_id ON remembered (idkey)")
        conn.execute(
            "DELETE FROM docs WHERE pair = ? AND coll = ? AND idkey NOT IN "
            "(SELECT idkey FROM temp.remembered WHERE s IS NOT NULL OR t IS NOT NULL)",
            (pair.key, coll),
        )
        conn.execute(
            f"INSERT INTO docs (pair, coll, idkey, {sside}, {tside}) "  # noqa: S608
            "SELECT ?, ?, idkey, s, t FROM temp.remembered "
            "WHERE s IS NOT NULL OR t IS NOT NULL "
            f"ON CONFLICT (pair, coll, idkey) DO UPDATE SET {sside} = excluded.{sside}, "
            f"{tside} = excluded.{tside} WHERE docs.{sside} IS NOT excluded.{sside} "
            f"OR docs.{tside} IS NOT excluded.{tside}",
            (pair.key, coll),
        )
        (s_count, t_count) = conn.execute(
            "SELECT COUNT(s), COUNT(t) FROM temp.remembered"
        ).fetchone()
        conn.execute("DROP TABLE temp.remembered")
        return {sside: int(s_count), tside: int(t_count)}

    def _remember_rows(
        self,
        pair: Pair,
        coll: str,
        sside: str,
        tside: str,
        rows: Iterable[tuple[bytes, bytes | None, bytes | None]],
    ) -> dict[str, int]:
        """Some documents' rows become (idkey, s, t), set-based: through a temp table, a
        row with neither side deleted. Within the caller's transaction. Each side's count
        change."""
        conn = self.conn
        conn.execute("DROP TABLE IF EXISTS temp.remembered")
        conn.execute(
            "CREATE TEMP TABLE remembered (idkey BLOB PRIMARY KEY, s BLOB, t BLOB) WITHOUT ROWID"
        )
        for chunk in _chunks(rows):  # the last word on a document wins, as one by one
            conn.executemany("INSERT OR REPLACE INTO temp.remembered VALUES (?, ?, ?)", chunk)
        (s_change, t_change) = conn.execute(
            f"SELECT COALESCE(SUM(r.s IS NOT NULL) - SUM(d.{sside} IS NOT NULL), 0), "  # noqa: S608
            f"COALESCE(SUM(r.t IS NOT NULL) - SUM(d.{tside} IS NOT NULL), 0) "
            "FROM temp.remembered r LEFT JOIN docs d "
            "ON d.pair = ? AND d.coll = ? AND d.idkey = r.idkey",
            (pair.key, coll),
        ).fetchone()
        conn.execute(
            "DELETE FROM docs WHERE pair = ? AND coll = ? AND idkey IN "
            "(SELECT idkey FROM temp.remembered WHERE s IS NULL AND t IS NULL)",
            (pair.key, coll),
        )
        conn.execute(
            f"INSERT INTO docs (pair, coll, idkey, {sside}, {tside}) "  # noqa: S608
            "SELECT ?, ?, idkey, s, t FROM temp.remembered WHERE s IS NOT NULL OR t IS NOT NULL "
            f"ON CONFLICT (pair, coll, idkey) DO UPDATE SET {sside} = excluded.{sside}, "
            f"{tside} = excluded.{tside}",
            (pair.key, coll),
        )
        conn.execute("DROP TABLE temp.remembered")
        return {sside: int(s_change), tside: int(t_change)}

    def _holds_nothing(self, pair: Pair, coll: str) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM docs WHERE pair = ? AND coll = ? LIMIT 1", (pair.key, coll)
        ).fetchone()
        return row is None

    def policy_marks(self, pair: Pair, coll: str) -> dict[str, str]:
        """The marks of the policy of the last sync of `coll` ({} for none)."""
        if not self._has_policies():
            return {}
        row = self.conn.execute(
            "SELECT marks FROM policies WHERE pair = ? AND coll = ?", (pair.key, coll)
        ).fetchone()
        return {} if row is None else dict(json.loads(row[0]))

    def _has_policies(self) -> bool:
        """A read-only memory written by an older syncd has no `policies` table."""
        row = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'policies'"
        ).fetchone()
        return row is not None

    def count(self, pair: Pair, coll: str, endpoint: str) -> int:
        """How many documents of `coll` the memory holds for `endpoint`."""
        return self._stored_count(pair, coll, pair.column(endpoint))

    def _stored_count(self, pair: Pair, coll: str, side: str) -> int:
        """The side's document count as the last sync left it (walked once where a memory
        from before counts were kept has none)."""
        row = self.conn.execute(
            "SELECT count FROM points WHERE pair = ? AND coll = ? AND side = ?",
            (pair.key, coll, side),
        ).fetchone()
        if row is not None and row[0] is not None:
            return int(row[0])
        (count,) = self.conn.execute(
            f"SELECT COUNT(*) FROM docs WHERE pair = ? AND coll = ? AND {side} IS NOT NULL",  # noqa: S608
            (pair.key, coll),
        ).fetchone()
        return int(count)

    def update_side(
        self, pair: Pair, coll: str, endpoint: str, idkey: bytes, digest: bytes | None
    ) -> None:
        """Record that `endpoint` now holds `digest` for one document (after hooks write)."""
        column = pair.column(endpoint)
        old = self.conn.execute(
            f"SELECT {column} FROM docs WHERE pair = ? AND coll = ? AND idkey = ?",  # noqa: S608
            (pair.key, coll, idkey),
        ).fetchone()
        change = int(digest is not None) - int(old is not None and old[0] is not None)
        if change:
            self.conn.execute(
                "UPDATE points SET count = count + ? WHERE pair = ? AND coll = ? AND side = ?",
                (change, pair.key, coll, column),
            )
        self.conn.execute(
            f"INSERT INTO docs (pair, coll, idkey, {column}) VALUES (?, ?, ?, ?) "  # noqa: S608
            f"ON CONFLICT (pair, coll, idkey) DO UPDATE SET {column} = excluded.{column}",
            (pair.key, coll, idkey, digest),
        )

    # -- resume points -------------------------------------------------------------------

    def point(self, pair: Pair, coll: str, endpoint: str) -> Point | None:
        row = self.conn.execute(
            "SELECT token, uuid, count FROM points WHERE pair = ? AND coll = ? AND side = ?",
            (pair.key, coll, pair.column(endpoint)),
        ).fetchone()
        return None if row is None else Point(row[0], row[1], row[2])

    # -- run history ---------------------------------------------------------------------

    def record_run(
        self,
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
        self.conn.execute(
            "INSERT INTO runs (pair, coll, flow, source, target, finished, result, verified,"
            " counts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        self.conn.execute(
            "DELETE FROM runs WHERE pair = ? AND coll = ? AND id NOT IN "
            "(SELECT id FROM runs WHERE pair = ? AND coll = ? ORDER BY finished DESC LIMIT 50)",
            (pair.key, coll, pair.key, coll),
        )

    def last_run(self, pair: Pair, coll: str) -> LastRun | None:
        row = self.conn.execute(
            "SELECT flow, source, target, finished, result, verified, counts FROM runs "
            "WHERE pair = ? AND coll = ? ORDER BY finished DESC LIMIT 1",
            (pair.key, coll),
        ).fetchone()
        if row is None:
            return None
        return LastRun(row[0], row[1], row[2], row[3], row[4], bool(row[5]), json.loads(row[6]))

    def last_success_by_flow(self) -> dict[str, float]:
        """Per flow, the unix time its last successful run finished."""
        rows = self.conn.execute(
            "SELECT flow, MAX(finished) FROM runs WHERE result = 'success' GROUP BY flow"
        ).fetchall()
        return {str(flow): float(when) for flow, when in rows}


class IntentsRecorder:
    """Records one collection's intents on a connection of its own; used by one thread at
    a time, closed by its owner."""

    def __init__(self, conn: sqlite3.Connection, pair: Pair, coll: str, side: str) -> None:
        self.conn, self.pair, self.coll, self.side = conn, pair, coll, side

    def __call__(self, rows: Iterable[tuple[bytes, bytes]]) -> None:
        _record_intents(self.conn, self.pair, self.coll, self.side, rows)

    def close(self) -> None:
        self.conn.close()


def _record_intents(
    conn: sqlite3.Connection, pair: Pair, coll: str, side: str, rows: Iterable[tuple[bytes, bytes]]
) -> None:
    """A row of `pending_batches` per `INTENTS_PER_ROW` intents, one commit for them all."""
    column = pair.column(side)
    blobs = [_pack_intents(chunk) for chunk in _chunks(rows, INTENTS_PER_ROW)]
    if not blobs:
        return
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO pending_batches (pair, coll, side, rows) VALUES (?, ?, ?, ?)",
        ((pair.key, coll, column, blob) for blob in blobs),
    )
    conn.execute("COMMIT")


INTENTS_PER_ROW = 10_000
_INTENT = struct.Struct("<IB")  # length of the idkey, of the digest (16, or 0: a delete)


def _pack_intents(rows: Iterable[tuple[bytes, bytes]]) -> bytes:
    pack = _INTENT.pack
    return b"".join([pack(len(key), len(dig)) + key + dig for key, dig in rows])


def _unpack_intents(blob: bytes) -> Iterator[tuple[bytes, bytes]]:
    offset, end, unpack, head = 0, len(blob), _INTENT.unpack_from, _INTENT.size
    while offset < end:
        key_len, dig_len = unpack(blob, offset)
        key_end = offset + head + key_len
        yield blob[offset + head : key_end], blob[key_end : key_end + dig_len]
        offset = key_end + dig_len


def _has_table(conn: sqlite3.Connection, schema: str, name: str) -> bool:
    row = conn.execute(
        f"SELECT 1 FROM {schema}.sqlite_master WHERE type = 'table' AND name = ?",  # noqa: S608
        (name,),
    ).fetchone()
    return row is not None


def _chunks(rows: Iterable[_Row], size: int = 10_000) -> Iterator[list[_Row]]:
    it = iter(rows)
    while chunk := list(islice(it, size)):
        yield chunk


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
