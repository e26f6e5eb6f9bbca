"""Read one side of a collection into a scan: per document its `_id` and digest, in a
table `scratch.py` owns (`ScanTable`), the file it names.

The source side also spools its raw documents to a file, so the apply step writes exactly
the snapshot that was planned and verified, with one read of the source.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from syncd.engine.gcpause import gc_paused
from syncd.mongo.rawbson import digest, id_key, raw_id

BATCH_ROWS = 5000
Progress = Callable[[int], None]


@dataclass(frozen=True)
class ScanResult:
    count: int
    bytes: int


Row = tuple[bytes, bytes, bytes, int | None, int | None]  # idkey, rid, digest, off, len


class Rows(Protocol):
    """Where a scan puts its rows (`scratch.ScanTable`)."""

    def insert(self, rows: list[Row]) -> int: ...

    def count(self) -> int: ...


class RawReader(Protocol):
    """What a scan reads: any collection of raw BSON documents (a DocumentSource, or a
    view of one)."""

    label: str

    def iter_raw(self, name: str) -> Iterator[bytes]: ...


def scan_collection(
    source: RawReader,
    name: str,
    table: Rows,
    *,
    spool: Path | None = None,
    progress: Progress | None = None,
) -> ScanResult:
    """Digest every document of `name` into `table` (new and empty)."""
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
                    seen += table.insert(rows)
                    rows = []
                    if progress is not None:
                        progress(seen)
            seen += table.insert(rows)
            if progress is not None:
                progress(seen)
        count = table.count()
    finally:
        if spool_file is not None:
            spool_file.close()  # raises again on a full disk: the flush fails
    return ScanResult(count, total)


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
