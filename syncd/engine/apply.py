"""Apply a collection plan to the target: batched bulk writes, never a drop-and-rebuild."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from bson.raw_bson import RawBSONDocument
from pymongo import DeleteMany, DeleteOne, IndexModel, InsertOne, ReplaceOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, CollectionInvalid, OperationFailure

from syncd import pause
from syncd.engine.context import Check, go_on
from syncd.engine.plan import CollectionPlan
from syncd.errors import SyncdError
from syncd.mongo.privileges import check_validation
from syncd.mongo.rawbson import id_value
from syncd.mongo.retry import with_retries
from syncd.mongo.sharding import keyed
from syncd.mongo.specs import index_model_args
from syncd.mongo.timeouts import max_time

log = logging.getLogger("syncd.engine")

BATCH_DOCS = 1000
BATCH_BYTES = 8 * 1024 * 1024
DUPLICATE_KEY = 11000
INDEX_NOT_FOUND = 27
Progress = Callable[[int], None]
WriteOp = InsertOne[Any] | ReplaceOne[Any] | DeleteMany


class RawDocument(RawBSONDocument):
    """A raw document that answers whether it is empty without decoding itself: pymongo's
    `ReplaceOne` asks (`if replacement`), which inflates a plain `RawBSONDocument` whole,
    every embedded document too (most of a replace's client CPU)."""

    __slots__ = ()

    def __bool__(self) -> bool:
        return len(self.raw) > 5  # an empty document is its length and its end only


@dataclass
class Applied:
    inserted: int = 0
    replaced: int = 0
    deleted: int = 0


def prepare_collection(db: Database[Any], plan: CollectionPlan) -> None:
    """Create the collection, change options, drop indexes that differ: before documents.

    Each step is retried; each is idempotent (a retried create or drop finds it done)."""
    specs = plan.specs
    if specs.left_out:
        log.warning(
            "left out what the target's MongoDB version does not know",
            extra={"collection": plan.name, "left_out": "; ".join(specs.left_out)},
        )
    if specs.create is not None:
        with_retries(lambda: _create(db, plan.name, specs.create or {}), what=f"create {plan.name}")
    if specs.collmod:
        command = {"collMod": plan.name, **specs.collmod}
        with_retries(lambda: db.command(command), what=f"collMod {plan.name}")
    for name in specs.drop_indexes:
        drop = partial(_drop_index, db[plan.name], name)
        with_retries(drop, what=f"drop index {plan.name}")


def _create(db: Database[Any], name: str, options: dict[str, Any]) -> None:
    try:
        db.create_collection(name, **options)
    except CollectionInvalid:
        log.info("collection already exists", extra={"collection": name})


def _drop_index(coll: Collection[Any], name: str) -> None:
    try:
        coll.drop_index(name)
    except OperationFailure as exc:
        if exc.code != INDEX_NOT_FOUND:
            raise


def finish_collection(db: Database[Any], plan: CollectionPlan) -> None:
    """Create the source's indexes once the documents match (a unique index can then hold)."""
    if plan.specs.create_indexes:
        models = []
        for spec in plan.specs.create_indexes:
            keys, kwargs = index_model_args(spec)
            models.append(IndexModel(keys, **kwargs))
        with_retries(  # no maxTimeMS: a build answers when the index is built (timeouts.py)
            lambda: db[plan.name].create_indexes(models, **max_time("index")),
            what=f"create indexes {plan.name}",
        )


def apply_deletes(coll: Collection[Any], rids: Iterable[bytes], check: Check = go_on) -> int:
    """Delete by `_id`, in batches; `check` before each (the run's: `RunContext`)."""
    deleted = 0
    ids: list[Any] = []
    for rid in rids:
        ids.append(id_value(rid))
        if len(ids) >= BATCH_DOCS:
            deleted += _delete(coll, ids, check)
            ids = []
    return deleted + _delete(coll, ids, check)


def remove_retyped(coll: Collection[Any], rids: Iterable[bytes], check: Check = go_on) -> int:
    """Delete the documents whose `_id` is stored with another numeric type than on the
    source (NumberLong(7) for 7): MongoDB treats them as one `_id`, so a replace cannot
    change the type; the replace then re-inserts them with the source's `_id`."""
    return apply_deletes(coll, rids, check)


def _delete(coll: Collection[Any], ids: list[Any], check: Check) -> int:
    if not ids:
        return 0
    # One delete per _id, not one `$in`: SecantusDB's `$in` costs grow with the square of
    # the list (1000 ids: ~4 s); by _id either way, so a retried batch does the same.
    ops = [DeleteOne({"_id": _id}) for _id in ids]
    check()  # a stopping run or a lost write lease stops before this batch
    keyed_ops = keyed(coll, ops)  # behind mongos, filters carry the shard key
    write = partial(coll.bulk_write, keyed_ops, ordered=False)
    try:
        if keyed_ops:
            with_retries(write, what=f"delete {coll.name}")
    except BulkWriteError as exc:
        _refuse_unconfirmed(coll, exc.details)
        raise
    return len(ids)


def apply_writes(
    coll: Collection[Any],
    writes: Iterable[tuple[str, bytes, bytes]],
    progress: Progress | None = None,
    *,
    bypass: bool = False,
    check: Check = go_on,
) -> Applied:
    """Replaces then inserts: (op, rid, raw document) as the scratch lists them. `bypass`:
    past the target's validator (the collection's `bypass_validation`); `check` before each
    batch (the run's: `RunContext.before_batch`)."""
    applied = Applied()
    deferred: list[WriteOp] = []
    for ops in _batches(_write_ops(writes)):
        deferred += _bulk(coll, ops, applied, bypass, check)
        if progress:
            progress(applied.inserted + applied.replaced)
    _retry_deferred(coll, deferred, applied, bypass, check)
    return applied


def apply_inserts(
    coll: Collection[Any],
    batches: Iterable[list[bytes]],
    progress: Progress | None = None,
    *,
    bypass: bool = False,
    check: Check = go_on,
) -> Applied:
    """Insert batches of raw documents as they arrive (a first copy, see `stream.py`)."""
    applied = Applied()
    deferred: list[WriteOp] = []
    for batch in batches:
        ops: list[WriteOp] = [InsertOne(RawBSONDocument(raw)) for raw in batch]
        deferred += _bulk(coll, ops, applied, bypass, check)
        if progress:
            progress(applied.inserted + applied.replaced)
    _retry_deferred(coll, deferred, applied, bypass, check)
    return applied


def _write_ops(writes: Iterable[tuple[str, bytes, bytes]]) -> Iterator[tuple[WriteOp, int]]:
    for op, rid, raw in writes:
        document = RawDocument(raw)
        if op == "insert":
            yield InsertOne(document), len(raw)
        else:
            yield ReplaceOne({"_id": id_value(rid)}, document, upsert=True), len(raw)


def _batches(ops: Iterator[tuple[WriteOp, int]]) -> Iterator[list[WriteOp]]:
    batch: list[WriteOp] = []
    size = 0
    for op, length in ops:
        batch.append(op)
        size += length
        if len(batch) >= BATCH_DOCS or size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _bulk(
    coll: Collection[Any], ops: list[WriteOp], applied: Applied, bypass: bool, check: Check
) -> list[WriteOp]:
    """Write a batch unordered; return the ops a unique index refused, to retry later.

    An insert refused on `_id` (the document arrived since the scan, or a re-run after a
    cut-short sync) becomes a replace, so re-runs never fail on duplicate keys. Without
    `bypass` the flag is not sent at all: it needs more than readWrite (privileges.py).
    """
    check()  # a stopping run or a lost write lease stops before this batch
    ops = keyed(coll, ops)  # behind mongos, filters carry the shard key
    try:
        result = with_retries(
            lambda: coll.bulk_write(ops, ordered=False, bypass_document_validation=bypass),
            what=f"write {coll.name}",
        )
        _count(result.inserted_count, result.upserted_count + result.matched_count, applied)
        pause.point("write.batch")
        return []
    except BulkWriteError as exc:
        details = exc.details
        check_validation(coll.name, details)
        _count(
            details.get("nInserted", 0),
            details.get("nUpserted", 0) + details.get("nMatched", 0),
            applied,
        )
        _refuse_unconfirmed(coll, details)
        retry: list[WriteOp] = []
        for error in details.get("writeErrors", []):
            if error.get("code") != DUPLICATE_KEY:
                raise
            op = ops[error["index"]]
            retry.append(_as_replace(op) if _on_id(error) else op)
        return retry


def _refuse_unconfirmed(coll: Collection[Any], details: Mapping[str, Any]) -> None:
    """A write the server applied but whose write concern failed (a reply with only a
    `writeConcernError`) is not done: it may be rolled back, so nothing may remember it."""
    errors = details.get("writeConcernErrors") or []
    if errors:
        first = errors[0]
        raise SyncdError(
            f"{coll.name}: the server did not confirm the writes' write concern "
            f"({first.get('errmsg', '')}, code {first.get('code')}); check the replica set's "
            "health and the URI's w=/journal= options, then run again (the next run converges)"
        )


def _on_id(error: dict[str, Any]) -> bool:
    pattern = error.get("keyPattern")
    if pattern is not None:
        return list(pattern) == ["_id"]
    return "_id_" in str(error.get("errmsg", ""))


def _as_replace(op: WriteOp) -> WriteOp:
    if isinstance(op, InsertOne):
        document = op._doc  # noqa: SLF001 - pymongo keeps the document here
        return ReplaceOne({"_id": document["_id"]}, document, upsert=True)
    return op


def _count(inserted: int, replaced: int, applied: Applied) -> None:
    applied.inserted += inserted
    applied.replaced += replaced


def _retry_deferred(
    coll: Collection[Any], deferred: list[WriteOp], applied: Applied, bypass: bool, check: Check
) -> None:
    """Unique-index conflicts resolve once the rest of the collection is written (a value
    moved from one document to another); retry while that makes progress."""
    while deferred:
        before = len(deferred)
        deferred = _bulk(coll, deferred, applied, bypass, check)
        if len(deferred) >= before:
            raise SyncdError(
                f"{coll.name}: {len(deferred)} document(s) collide with a unique index on the "
                "target that the source does not have, or swap unique values; compare the "
                "target's indexes with the source's and fix the data, then run again"
            )
