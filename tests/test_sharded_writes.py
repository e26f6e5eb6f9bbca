"""Issue 22, point 8: behind mongos, writes carry the shard key and a read of a stream
waits for its fence.

SecantusDB has no mongos, so these are tests of the units that decide: the filters a batch
is written with (from `config.collections`' shard key and the target's current values),
and when an empty read of a change stream ends one (`at_end`), with tokens in MongoDB's
own format. Against a replica set (SecantusDB) the writes are unchanged.
"""

from __future__ import annotations

from typing import Any

import bson
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp
from pymongo import DeleteOne, InsertOne, ReplaceOne
from pymongo.database import Database

from syncd.mongo.changestream import at_end, token_time
from syncd.mongo.sharding import is_mongos, keyed, keyed_filter, keyed_ops, shard_key_fields


def _key(_id: Any) -> bytes:
    return bson.encode({"_id": _id})


def test_the_shard_key_comes_from_config_collections() -> None:
    entry = {"_id": "app.contracts", "key": {"tenant": 1, "meta.region": "hashed"}}
    assert shard_key_fields(entry) == ("tenant", "meta.region")
    assert shard_key_fields({"_id": "app.x", "key": {"_id": "hashed"}}) == ()  # _id is enough
    assert shard_key_fields({"_id": "app.x", "key": {"a": 1}, "dropped": True}) == ()
    assert shard_key_fields(None) == ()


def test_filters_carry_the_targets_shard_key_values() -> None:
    fields = ("tenant", "meta.region")
    new = RawBSONDocument(bson.encode({"_id": 1, "tenant": "b", "meta": {"region": "eu"}}))
    fresh = RawBSONDocument(bson.encode({"_id": 2, "tenant": "c"}))
    ops = [
        ReplaceOne({"_id": 1}, new, upsert=True),  # held on the target under tenant "a"
        ReplaceOne({"_id": 2}, fresh, upsert=True),  # not on the target: an upsert
        InsertOne(RawBSONDocument(bson.encode({"_id": 3}))),
        DeleteOne({"_id": 4}),  # on the target
        DeleteOne({"_id": 5}),  # not on the target: nothing to delete
    ]
    current = {
        _key(1): {"_id": 1, "tenant": "a", "meta": {"region": "us"}},
        _key(4): {"_id": 4, "tenant": "d"},
    }

    keyed_ = keyed_ops(ops, fields, current)

    assert [type(op).__name__ for op in keyed_] == [
        "ReplaceOne",
        "ReplaceOne",
        "InsertOne",
        "DeleteOne",
    ]
    replace_held, replace_new, insert, delete = keyed_
    assert replace_held._filter == {"_id": 1, "tenant": "a", "meta.region": "us"}
    assert replace_held._doc is new and replace_held._upsert
    assert replace_new._filter == {"_id": 2, "tenant": "c", "meta.region": None}  # missing: null
    assert insert is ops[2]
    assert delete._filter == {"_id": 4, "tenant": "d", "meta.region": None}


def test_keyed_filter_reads_dotted_paths_and_leaves_id_alone() -> None:
    doc = {"_id": 7, "a": {"b": {"c": 3}}, "x": [1]}
    assert keyed_filter(7, ("_id", "a.b.c", "x", "a.z"), doc) == {
        "_id": 7,
        "a.b.c": 3,
        "x": [1],
        "a.z": None,
    }


def test_writes_to_a_replica_set_are_unchanged(local_db: Database[Any]) -> None:
    ops = [ReplaceOne({"_id": 1}, {"_id": 1, "a": 1}, upsert=True), DeleteOne({"_id": 2})]
    local_db.contracts.insert_one({"_id": 2})
    assert not is_mongos(local_db)
    assert keyed(local_db.contracts, ops) == ops


def _token(t: int, i: int) -> dict[str, str]:
    """A resume token in MongoDB's format: hex KeyString, type 130 then the Timestamp."""
    return {"_data": f"82{t:08X}{i:08X}2B0229296E04"}


def test_an_empty_read_ends_at_the_fence_and_behind_mongos_only_there() -> None:
    fence = Timestamp(1_800_000_000, 5)
    before, same_time, after = (
        _token(1_800_000_000, 3),
        _token(1_800_000_000, 5),
        _token(1_800_000_001, 1),
    )
    assert token_time(before) == Timestamp(1_800_000_000, 3)

    # A replica set: a read that no longer moves is at the end of the history.
    assert at_end(before, before, fence, mongos=False)
    assert not at_end(before, _token(1_799_999_999, 1), fence, mongos=False)
    # mongos: a read that does not move only says a shard is behind: wait for the fence.
    assert not at_end(before, before, fence, mongos=True)
    assert at_end(same_time, before, fence, mongos=True)
    assert at_end(after, after, fence, mongos=True)
    # A token whose time is not known: the replica set's rule.
    opaque = {"_data": "not a key string"}
    assert at_end(opaque, opaque, fence, mongos=True)
    assert at_end(before, before, None, mongos=True)
