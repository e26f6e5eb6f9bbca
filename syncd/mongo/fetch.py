"""Read documents by `_id`, in `$in` batches, retrying transient errors like scans do.

Every read here is idempotent (a query by `_id`), so a batch cut short by a lost
connection is simply read again. Documents stay raw BSON; results are keyed by `id_key`
(MongoDB's identity of an `_id`: 1, 1L and 1.0 are one document).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

from pymongo.collection import Collection

from syncd import pause
from syncd.mongo.rawbson import id_key, id_value, raw_id, split_documents
from syncd.mongo.retry import with_retries
from syncd.mongo.timeouts import max_time_ms

T = TypeVar("T")
FETCH_IDS = 100  # larger `$in` lists get slower per document on some servers


def batched(items: Iterable[T], size: int = FETCH_IDS) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def find_by_ids(coll: Collection[Any], ids: Sequence[object], *, what: str) -> list[bytes]:
    """The raw documents of `coll` with these `_id` values (one `$in`, retried)."""
    if not ids:
        return []

    def read() -> list[bytes]:
        found: list[bytes] = []
        query = {"_id": {"$in": list(ids)}}
        with coll.find_raw_batches(query, max_time_ms=max_time_ms("read")) as cursor:
            for batch in cursor:
                found.extend(split_documents(batch))
        pause.point("fetch.batch")
        return found

    return with_retries(read, what=what)


def fetch_raw(coll: Collection[Any], rids: Sequence[bytes], *, what: str) -> dict[bytes, bytes]:
    """id_key -> raw document, for the raw `_id`s of `rids` that `coll` holds."""
    found = find_by_ids(coll, [id_value(rid) for rid in rids], what=what)
    return {id_key(raw_id(raw)): raw for raw in found}


def fetch_batches(
    coll: Collection[Any], rids: Iterable[bytes], *, what: str
) -> Iterator[tuple[list[bytes], dict[bytes, bytes]]]:
    """(raw `_id`s of a batch, what `fetch_raw` found for them), batch after batch."""
    for batch in batched(rids):
        yield batch, fetch_raw(coll, batch, what=what)
