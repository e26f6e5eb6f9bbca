"""Writes to a sharded collection behind mongos carry the shard key.

Before MongoDB 7.0 mongos refuses a single-document replace with upsert (how syncd writes)
whose filter names `_id` alone on a sharded collection (code 61, ShardKeyNotFound): it
must know which shard the document belongs to; a delete by `_id` alone is sent to every
shard. So on mongos syncd looks up a collection's shard key (in
`config.collections`, once per batch) and the target's current values of it for the
documents a batch replaces or deletes (one `$in` read by `_id`), and each filter carries
`_id` plus those values. A replace of a document the target lacks (an upsert) takes them
from the document written; a delete of a document the target lacks is left out (there is
nothing to delete, and its filter could not be completed). A replace that changes a
document's shard key value is a retryable write, which mongos accepts (4.2 and later).

Where `config.collections` cannot be read (a user with `readWrite` on its database only)
the filters stay `_id` alone, which MongoDB 7.0 and later accept; syncd says so once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import bson
from pymongo import DeleteOne, ReplaceOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import OperationFailure
from pymongo.server_type import SERVER_TYPE

log = logging.getLogger("syncd.engine")

T = TypeVar("T")  # a write model of pymongo's (apply.py's own union of them)
_unreadable: set[str] = set()


def is_mongos(db: Database[Any]) -> bool:
    """Whether the client talks to mongos (hello.msg == "isdbgrid", as pymongo's monitor
    read it: no round trip of its own)."""
    servers = db.client.topology_description.server_descriptions().values()
    return any(server.server_type == SERVER_TYPE.Mongos for server in servers)


def shard_key_fields(entry: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The shard key's field paths from a `config.collections` document (none for an
    unsharded or dropped collection, or a shard key of `_id` alone)."""
    if entry is None or entry.get("dropped"):
        return ()
    fields = tuple(str(field) for field in (entry.get("key") or {}))
    return () if fields == ("_id",) else fields


def shard_key(coll: Collection[Any]) -> tuple[str, ...]:
    """The collection's shard key fields, () when not behind mongos or not sharded."""
    if not is_mongos(coll.database):
        return ()
    try:
        entry = coll.database.client["config"]["collections"].find_one({"_id": coll.full_name})
    except OperationFailure as exc:
        if coll.full_name not in _unreadable:
            _unreadable.add(coll.full_name)
            log.warning(
                f"{coll.name}: cannot read its shard key from config.collections "
                f"({exc.code}); writing by _id alone, which needs MongoDB 7.0 or later "
                "on a sharded collection",
                extra={"collection": coll.name},
            )
        return ()
    return shard_key_fields(entry)


def keyed(coll: Collection[Any], ops: Sequence[T]) -> list[T]:
    """`ops` with every replace's and delete's filter carrying the shard key (see the
    module's docstring); unchanged where there is none."""
    fields = shard_key(coll)
    if not fields:
        return list(ops)
    ids = [op._filter["_id"] for op in ops if isinstance(op, ReplaceOne | DeleteOne)]  # noqa: SLF001
    projection = dict.fromkeys(fields, 1)
    found: list[Mapping[str, Any]] = (
        list(coll.find({"_id": {"$in": ids}}, projection)) if ids else []
    )
    return keyed_ops(ops, fields, {_key(doc["_id"]): doc for doc in found})


def keyed_ops(ops: Sequence[Any], fields: Sequence[str], current: Mapping[bytes, Any]) -> list[Any]:
    """The rewrite itself: `current` maps each `_id` (`_key`) the target holds to its
    document (at least the shard key fields)."""
    result: list[Any] = []
    for op in ops:
        if isinstance(op, ReplaceOne):
            _id = op._filter["_id"]  # noqa: SLF001
            held = current.get(_key(_id), op._doc)  # noqa: SLF001 - an upsert: the new document's
            result.append(ReplaceOne(keyed_filter(_id, fields, held), op._doc, upsert=True))  # noqa: SLF001
        elif isinstance(op, DeleteOne):
            _id = op._filter["_id"]  # noqa: SLF001
            if _key(_id) in current:
                result.append(DeleteOne(keyed_filter(_id, fields, current[_key(_id)])))
        else:
            result.append(op)
    return result


def keyed_filter(_id: Any, fields: Sequence[str], document: Mapping[str, Any]) -> dict[str, Any]:
    """{_id, each shard key field: its value in `document`}; a missing field is null, as
    the shard key index holds it."""
    query: dict[str, Any] = {"_id": _id}
    for field in fields:
        if field != "_id":
            query[field] = _at(document, field.split("."))
    return query


def _at(value: Any, path: list[str]) -> Any:
    for part in path:
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _key(_id: Any) -> bytes:
    return bson.encode({"_id": _id})
