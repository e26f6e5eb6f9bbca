"""Before-images read while the source's change stream is still being read.

A `changes` backup holds the target's version of every document a sync replaces or
deletes (prebackup.py). Those documents are among the ones the source's change stream
names, so while the planning thread reads that stream from the source server, a thread
here reads the documents it names from the target server, which is idle meanwhile: the
two reads overlap instead of following each other.

What is read is kept per collection in its scratch (`CollectionScratch.ahead_writer`: a
spool indexed by `_id` with its digest). The backup takes a document from there
(`CollectionScratch.read_ahead`) only when its digest is the one the plan holds for the
target; any other (the target changed it since, or it was never read here) it reads by
`_id` as before. Reading ahead is only a saving: when it fails, nothing depends on it.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from pymongo.database import Database

from syncd.engine.scratch import AheadWriter, CollectionScratch
from syncd.mongo.fetch import FETCH_IDS, find_by_ids
from syncd.mongo.rawbson import id_key, id_value

log = logging.getLogger("syncd.engine")

QUEUE_IDS = 10_000
_DONE = object()
_NOW = object()  # read what is pending now


class Prefetcher:
    """Read the target's version of documents named while a stream is read; `want` them
    from the reading thread, `close` when the stream is read (waits for the reads)."""

    def __init__(
        self, db: Database[Any], scratches: dict[str, CollectionScratch], budgets: dict[str, int]
    ) -> None:
        self.db, self.scratches, self.budgets = db, scratches, budgets
        self.wanted: dict[str, int] = {}
        self.ids: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_IDS)
        self.failed = threading.Event()
        self.thread = threading.Thread(target=self._run, name="before-images", daemon=True)
        self.thread.start()

    def want(self, name: str, rid: bytes) -> None:
        """Read this document of `name` ahead, unless that collection is past its budget
        (it will be read whole) or reading ahead has failed."""
        count = self.wanted[name] = self.wanted.get(name, 0) + 1
        if self.failed.is_set() or count > self.budgets.get(name, 0) or name not in self.scratches:
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
        files: dict[str, AheadWriter] = {}
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

    def _read(self, name: str, rids: list[bytes], files: dict[str, AheadWriter]) -> None:
        if name not in files:
            files[name] = self.scratches[name].ahead_writer()
        unique = list({id_key(rid): rid for rid in rids}.values())
        found = find_by_ids(
            self.db[name],
            [id_value(rid) for rid in unique],
            what=f"read {name} by _id (before-images)",
        )
        files[name].add(found)
