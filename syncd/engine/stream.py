"""A first copy into an empty collection: read the source and write the target at once.

When the target collection holds no document and the sync memory knows nothing of it,
the plan is known without reading anything: insert every source document, nothing can
have drifted. So instead of scanning the source into a spool and then writing from it,
a reader thread streams the source into insert batches while it records each document's
digest (the scan the memory and the verification use), and the caller inserts the
batches as they come: the source's read and the target's write overlap, and nothing is
spooled. Memory is bounded by `QUEUE_BATCHES` batches of at most `apply.BATCH_BYTES`.

The reader thread also announces each batch (records it as the run's intents, see
`memory.record_intents`) before handing it over, so a batch is never written before its
intents are on disk, and that work stays off the writing thread, which the target's
inserts keep busy.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

from pymongo.collection import Collection

from syncd.engine.apply import BATCH_BYTES, BATCH_DOCS, Applied, Progress, apply_inserts
from syncd.engine.changes import Sides
from syncd.engine.context import Check, go_on
from syncd.engine.gcpause import gc_paused
from syncd.engine.plan import CollectionPlan, Writing, plan_fully
from syncd.engine.progress import Reporter
from syncd.engine.scan import BATCH_ROWS, Row
from syncd.engine.scratch import SRC, CollectionScratch
from syncd.engine.verify import Tallies, copy_mismatches
from syncd.mongo.rawbson import digest, id_key, raw_id, split_documents
from syncd.mongo.retry import failing_clearly, with_retries
from syncd.mongo.source import MongoSource

QUEUE_BATCHES = 3
_DONE = object()


Announce = Callable[[list[tuple[bytes, bytes]]], None]


def copy_first(
    plan: CollectionPlan,
    source: MongoSource,
    coll: Collection[Any],
    progress: Progress,
    announce: Announce | None = None,
    *,
    bypass: bool = False,
    check: Check = go_on,
) -> Applied:
    """Copy the whole source collection into the empty target; the plan's source count
    becomes the number of documents read; `check` before each batch. `announce` hears
    (idkey, digest) of each batch before it is written, so a copy cut short is known as
    syncd's own writes by the next run."""
    assert plan.scratch is not None  # noqa: S101
    scratch = plan.scratch
    batches = SourceStream(source, plan.name, scratch, announce)
    with gc_paused():
        applied = apply_inserts(coll, batches, progress, bypass=bypass, check=check)
    plan.source_count = scratch.count(SRC)
    return applied


class CopyFirst:
    """How a first copy is written (`copy_first`: the source streamed into the empty
    target, each batch announced as intents first), proven (one read of the target back,
    verify.py `copy_mismatches`) and listed by `diff` (its inserts are the source's
    documents: read from the source, only as many as are shown)."""

    def write(
        self,
        plan: CollectionPlan,
        sides: Sides,
        progress: Progress,
        *,
        bypass: bool,
        check: Check,
        announce: bool,
    ) -> Applied:
        assert isinstance(sides.source, MongoSource)  # noqa: S101 - changes.py made sure
        recorder = None
        if announce:
            recorder = sides.memory.intents_recorder(sides.pair, plan.name, sides.target_name)
        try:
            coll = sides.target.db[plan.name]
            return copy_first(
                plan, sides.source, coll, progress, recorder, bypass=bypass, check=check
            )
        finally:
            if recorder is not None:
                recorder.close()

    def tallied(self, plan: CollectionPlan) -> bool:
        return False  # read back by a scan: verify.py

    def mismatches(
        self, plan: CollectionPlan, sides: Sides, tallies: Tallies, expected: int
    ) -> int:
        return copy_mismatches(plan, sides, tallies)

    def rows(
        self, plan: CollectionPlan, source: Collection[Any], query: dict[str, Any], limit: int
    ) -> Iterator[tuple[bytes, str, bool, str]]:
        """Planned without a scan: every source document is an insert."""
        if limit <= 0:
            return
        with source.find_raw_batches(query, {"_id": 1}, limit=limit) as cursor:
            for batch in cursor:
                for raw in split_documents(batch):
                    yield raw_id(raw), "insert", False, "apply"

    def listed(self, plan: CollectionPlan, sides: Sides, reporter: Reporter) -> None:
        """A first copy knows its inserts only as it copies: planned by a full read."""
        plan_fully(plan, sides, reporter)


class SourceStream:
    """Iterate to get insert batches; the source's scan in `scratch` is filled meanwhile
    (`CollectionScratch.copy_scan`), and `announce` hears (idkey, digest) of each batch
    before it is handed over."""

    def __init__(
        self,
        source: MongoSource,
        name: str,
        scratch: CollectionScratch,
        announce: Announce | None = None,
    ) -> None:
        self.source, self.name, self.scratch, self.announce = source, name, scratch, announce
        self.batches: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_BATCHES)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"copy-{name}", daemon=True)

    def __iter__(self) -> Iterator[list[bytes]]:
        self.thread.start()
        try:
            while (item := self.batches.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.stop.set()
            while self.thread.is_alive():  # unblock a reader waiting to put
                try:
                    self.batches.get(timeout=0.1)
                except queue.Empty:
                    pass
            self.thread.join()

    def _run(self) -> None:
        try:
            # Named here: the writing thread would report it as a write to the target.
            with failing_clearly("reading", self.name, self.source.label):
                with_retries(self._read, what=f"read {self.name} ({self.source.label})")
            self._put(_DONE)
        except _Stopped:
            return
        except BaseException as exc:  # noqa: BLE001 - handed to the writing thread
            try:
                self._put(exc)
            except _Stopped:
                return

    def _read(self) -> None:
        """Restartable: a retry reads from the start again (a document sent twice becomes
        a replace of itself, its scan row is overwritten)."""
        scan = self.scratch.copy_scan()
        order = scan.order
        rows: list[Row] = []
        batch: list[bytes] = []
        keys: list[tuple[bytes, bytes]] = []
        size = 0
        try:
            for raw in self.source.iter_raw(self.name):
                rid = raw_id(raw)
                key, dig = id_key(rid), digest(raw)
                rows.append((key, rid, dig, None, len(raw)))
                keys.append((key, dig))
                order.write(dig)
                batch.append(raw)
                size += len(raw)
                if len(batch) >= BATCH_DOCS or size >= BATCH_BYTES:
                    self._hand_over(batch, keys)
                    batch, keys, size = [], [], 0
                if len(rows) >= BATCH_ROWS:
                    scan.insert(rows)
                    rows = []
            scan.insert(rows)
            if batch:
                self._hand_over(batch, keys)
        finally:
            scan.close()

    def _hand_over(self, batch: list[bytes], keys: list[tuple[bytes, bytes]]) -> None:
        if self.announce is not None:
            self.announce(keys)
        self._put(batch)

    def _put(self, item: object) -> None:
        while not self.stop.is_set():
            try:
                self.batches.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _Stopped


class _Stopped(Exception):
    """The writing side gave up; the reader ends quietly."""


_COPY_WRITES: type[Writing] = CopyFirst  # checked by mypy: a plan's Writing
