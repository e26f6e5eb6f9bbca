"""Prove, after applying, that the target holds the planned result (SPEC §4: counts and
per-document digests against the source).

Why re-reading only the documents the sync touched is a proof, and a full re-scan is not
needed: the plan's scans read every document of both sides moments before the writes, so
each document the sync did not write was proven equal to the source (or deliberately
kept, under `merge`) by those scans. What can still differ is what the sync wrote or
deleted, and what someone else wrote meanwhile. So the check is:

- every document the sync inserted, replaced or deleted is read back by `_id` (in `$in`
  batches) and its digest compared with the planned one (absent for a delete); when the
  sync touched a large share of the collection, one scan of it is cheaper and is used;
- the target's document count equals the planned count, which catches a document that
  appeared or vanished anywhere in the collection during the sync.

A write by someone else to a document the sync did not touch, racing the sync, is not
the sync's to overwrite: the next run sees it as drift (it differs from the memory this
run records and from the source), which is what SPEC §4 asks for.

A first copy into an empty collection (see `stream.py`) wrote every document with an
acknowledged insert of the exact bytes whose digests it recorded; re-reading all of them
would double the cost of the copy, so it is verified by the count alone.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

from pymongo.collection import Collection

from syncd.engine.rawbson import digest, id_key, id_value, raw_id, split_documents
from syncd.engine.retry import with_retries
from syncd.engine.scan import scan_collection
from syncd.engine.source import MongoSource

FETCH_IDS = 100  # larger `$in` lists get slower per document on some servers
# Reading back by `_id` costs a few times more per document than a scan (SecantusDB: about
# 6x); past this share of the collection, one scan of the target is cheaper.
RESCAN_SHARE = 0.125

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

TOUCHED_SQL = """
SELECT idkey, rid, CASE WHEN op = 'delete' THEN NULL ELSE s END
  FROM main.diff WHERE action = 'apply'
"""

# Kept rows with a source digest are source documents the target does not take.
EXPECTED_COUNT_SQL = """
SELECT (SELECT COUNT(*) FROM src.docs)
     - (SELECT COUNT(*) FROM main.diff WHERE action != 'apply' AND s IS NOT NULL)
     + (SELECT COUNT(*) FROM main.diff WHERE action != 'apply' AND t IS NOT NULL)
"""


def target_mismatches(
    conn: sqlite3.Connection, target: MongoSource, name: str, rescan: Path, *, first_copy: bool
) -> int:
    """How many documents (at least) the target does not hold as planned."""
    coll = target.db[name]
    expected = expected_count(conn)
    if first_copy:
        return abs(server_count(coll) - expected)
    (touched,) = conn.execute("SELECT COUNT(*) FROM main.diff WHERE action = 'apply'").fetchone()
    if touched > RESCAN_SHARE * expected:
        return _rescan_mismatches(conn, target, name, rescan)
    return max(touched_mismatches(conn, coll), abs(server_count(coll) - expected))


def _rescan_mismatches(conn: sqlite3.Connection, target: MongoSource, name: str, path: Path) -> int:
    """Read the whole target again; compare every document with the planned result."""
    scan = partial(scan_collection, target, name, path)
    with_retries(scan, what=f"verify {name} ({target.label})")
    conn.execute("ATTACH DATABASE ? AS aft", (str(path),))
    try:
        (mismatches,) = conn.execute(VERIFY_SQL).fetchone()
    finally:
        conn.execute("DETACH DATABASE aft")
    return int(mismatches)


def expected_count(conn: sqlite3.Connection) -> int:
    """Documents the target holds after the sync: the source's, minus kept ones, plus the
    target's own version of kept ones (merge)."""
    (count,) = conn.execute(EXPECTED_COUNT_SQL).fetchone()
    return int(count)


def server_count(coll: Collection[Any]) -> int:
    """The collection's document count from the `count` command without a filter.

    MongoDB answers it from the collection's record count (what `estimatedDocumentCount`
    reads), exact unless the server shut down uncleanly; `countDocuments` would scan the
    whole collection again, on some servers as slowly as reading every document."""
    return int(with_retries(coll.estimated_document_count, what=f"count {coll.name}"))


def touched_mismatches(conn: sqlite3.Connection, coll: Collection[Any]) -> int:
    """Documents the sync wrote or deleted that the target does not hold as planned."""
    mismatches = 0
    for expected in _batches(conn):
        found = _read_back(coll, [id_value(rid) for rid, _ in expected.values()])
        for key, (_, want) in expected.items():
            if found.get(key) != want:
                mismatches += 1
    return mismatches


def _batches(conn: sqlite3.Connection) -> Iterator[dict[bytes, tuple[bytes, bytes | None]]]:
    batch: dict[bytes, tuple[bytes, bytes | None]] = {}
    for key, rid, want in conn.execute(TOUCHED_SQL):
        batch[key] = (rid, want)
        if len(batch) >= FETCH_IDS:
            yield batch
            batch = {}
    if batch:
        yield batch


def _read_back(coll: Collection[Any], ids: list[Any]) -> dict[bytes, bytes]:
    def read() -> dict[bytes, bytes]:
        found: dict[bytes, bytes] = {}
        with coll.find_raw_batches({"_id": {"$in": ids}}) as cursor:
            for batch in cursor:
                for raw in split_documents(batch):
                    found[id_key(raw_id(raw))] = digest(raw)
        return found

    return with_retries(read, what=f"verify {coll.name}")
