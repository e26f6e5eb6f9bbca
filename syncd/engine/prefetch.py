"""Before-images read while the source's change stream is still being read.

A `changes` backup holds the target's version of every document a sync replaces or
deletes (prebackup.py). Those documents are among the ones the source's change stream
names, so while the planning thread reads that stream from the source server, a thread
here reads the documents it names from the target server, which is idle meanwhile: the
two reads overlap instead of following each other.

What is read is kept per collection in its scratch (`before.spool`, indexed in
`before.sqlite` by `_id` with its digest). The backup takes a document from there only
when its digest is the one the plan holds for the target; any other (the target changed
it since, or it was never read here) it reads by `_id` as before. Reading ahead is only
a saving: when it fails, nothing depends on it.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
from pathlib import Path
from typing import Any, BinaryIO

from pymongo.database import Database

from syncd.engine.scan import Row, create_scan, find_row, insert_rows, open_scratch
from syncd.mongo.fetch import FETCH_IDS, find_by_ids
from syncd.mongo.rawbson import digest, id_key, id_value, raw_id

log = logging.getLogger("syncd.engine")

QUEUE_IDS = 10_000
_DONE = object()
_NOW = object()  # read what is pending now


def before_paths(work_dir: Path) -> tuple[Path, Path]:
    """(index, spool) of a collection's documents read ahead."""
    return work_dir / "before.sqlite", work_dir / "before.spool"


class Prefetcher:
    """Read the target's version of documents named while a stream is read; `want` them
    from the reading thread, `close` when the stream is read (waits for the reads)."""

    def __init__(self, db: Database[Any], dirs: dict[str, Path], budgets: dict[str, int]) -> None:
        self.db, self.dirs, self.budgets = db, dirs, budgets
        self.wanted: dict[str, int] = {}
        self.ids: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_IDS)
        self.failed = threading.Event()
        self.thread = threading.Thread(target=self._run, name="before-images", daemon=True)
        self.thread.start()

    def want(self, name: str, rid: bytes) -> None:
        """Read this document of `name` ahead, unless that collection is past its budget
        (it will be read whole) or reading ahead has failed."""
        count = self.wanted[name] = self.wanted.get(name, 0) + 1
        if self.failed.is_set() or count > self.budgets.get(name, 0) or name not in self.dirs:
            return
        self.ids.put((name, rid))

    def read_now(self) -> None:
        """Every document wanted so far is read now, not with the next full batch: the
        stream that names them is read (the target's may still be, meanwhile)."""
        self.ids.put(_NOW)

    def close(self) -> None:
        self.ids.put(_DONE)
        self.thread.join()

    def _run(self) -> None:
        pending: dict[str, list[bytes]] = {}
        files: dict[str, _Kept] = {}
        try:
            while (item := self.ids.get()) is not _DONE:
                if item is _NOW:
                    for name, batch in pending.items():
                        self._read(name, batch, files)
                    pending.clear()
                    continue
                name, rid = item
                batch = pending.setdefault(name, [])
                batch.append(rid)
                if len(batch) >= FETCH_IDS:
                    self._read(name, pending.pop(name), files)
            for name, batch in pending.items():
                self._read(name, batch, files)
        except Exception as exc:  # noqa: BLE001 - a saving only: the backup reads by _id
            log.debug("reading before-images ahead failed", exc_info=exc)
            self.failed.set()
            while self.ids.get() is not _DONE:  # let `want` and `close` go on
                pass
        finally:
            for kept in files.values():
                kept.close()

    def _read(self, name: str, rids: list[bytes], files: dict[str, _Kept]) -> None:
        if name not in files:
            files[name] = _Kept(self.dirs[name])
        unique = list({id_key(rid): rid for rid in rids}.values())
        found = find_by_ids(
            self.db[name],
            [id_value(rid) for rid in unique],
            what=f"read {name} by _id (before-images)",
        )
        files[name].add(found)


class _Kept:
    """One collection's documents read ahead: a spool and its index."""

    def __init__(self, work_dir: Path) -> None:
        index, spool = before_paths(work_dir)
        self.conn = create_scan(index)
        self.spool = spool.open("wb")
        self.offset = 0

    def add(self, raws: list[bytes]) -> None:
        rows: list[Row] = []
        for raw in raws:
            rid = raw_id(raw)
            rows.append((id_key(rid), rid, digest(raw), self.offset, len(raw)))
            self.spool.write(raw)
            self.offset += len(raw)
        insert_rows(self.conn, rows)

    def close(self) -> None:
        try:
            self.spool.close()
        finally:
            self.conn.close()


class ReadAhead:
    """The documents of one collection read ahead, looked up by raw `_id` and digest."""

    def __init__(self, work_dir: Path) -> None:
        index, spool = before_paths(work_dir)
        self.conn: sqlite3.Connection | None = None
        self.spool: BinaryIO | None = None
        if index.exists() and spool.exists():
            self.conn, self.spool = open_scratch(index), spool.open("rb")

    def get(self, rid: bytes, want: bytes | None) -> bytes | None:
        """The document with this `_id` as read ahead, if its digest is `want`."""
        if self.conn is None or self.spool is None or want is None:
            return None
        where = find_row(self.conn, id_key(rid), want)
        if where is None:
            return None
        self.spool.seek(where[0])
        return self.spool.read(where[1])

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()
        if self.conn is not None:
            self.conn.close()
