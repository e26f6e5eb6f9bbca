"""Documents travel byte for byte: every BSON type, field order, numeric types, and `_id`s
of mixed types in one collection (ObjectId, string, int, Int64, double, subdocument...)."""

from __future__ import annotations

import datetime as dt
import struct
import uuid
from typing import Any

import bson
import pytest
from bson import Binary, Code, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.raw_bson import RawBSONDocument
from bson.son import SON

from tests.engine_kit import Pair, collection_state, raw_collection, snapshot, syncd

Capsys = pytest.CaptureFixture[str]
PUSH = ("sync", "to_production", "--yes")

EVERY_TYPE: dict[str, Any] = {
    "double": 1.5,
    "negative_zero": -0.0,
    "nan": float("nan"),
    "infinity": float("-inf"),
    "string": "Ñuñoa ✓ 契約",
    "empty_string": "",
    "document": {"a": {"b": [1, {"c": None}]}},
    "empty_document": {},
    "array": [1, "two", 3.0, [4], {"five": 5}],
    "binary": Binary(b"\x00\x01\xff" * 50, 0),
    "binary_md5": Binary(b"0123456789abcdef", 5),
    "binary_user": Binary(b"\x80custom", 128),
    "uuid": Binary.from_uuid(uuid.UUID("12345678-1234-5678-1234-567812345678")),
    "objectid": ObjectId("677b9c4c6c996d087ed9d57d"),
    "true": True,
    "false": False,
    "datetime": dt.datetime(2025, 1, 6, 9, 0, 0, 123000, tzinfo=dt.UTC),
    "before_1970": dt.datetime(1901, 12, 14, tzinfo=dt.UTC),
    "null": None,
    "regex": Regex("^contrato.*$", "imsx"),
    "code": Code("function () { return 1; }"),
    "code_w_scope": Code("function () { return x; }", {"x": 1}),
    "int32": -(2**31),
    "timestamp": Timestamp(1_700_000_000, 3),
    "int64": Int64(2**62),
    "decimal": Decimal128("-12345.678900"),
    "decimal_nan": Decimal128("NaN"),
    "minkey": MinKey(),
    "maxkey": MaxKey(),
}
MIXED_IDS: list[Any] = [
    ObjectId("677b9c4c6c996d087ed9d57d"),
    "677b9c4c6c996d087ed9d57d",  # the same hex as a string: another document
    "",
    1,
    Int64(2**40),
    2.5,
    -3,
    {"org": "valkyria", "n": 1},
    {"n": 1, "org": "valkyria"},  # same fields, other order: another document
    Binary.from_uuid(uuid.UUID(int=1)),
    dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
    True,
    Decimal128("1.5"),
]


def pushed(pair: Pair, capsys: Capsys, *extra: str) -> str:
    result = syncd(capsys, pair.config, *PUSH, *extra)
    assert result.code == 0, result.err
    return result.out


def test_every_bson_type_travels_byte_for_byte(pair: Pair, capsys: Capsys) -> None:
    docs = [{"_id": i, **EVERY_TYPE, "n": i} for i in range(30)]
    pair.local.kinds.insert_many(docs)

    pushed(pair, capsys)
    again = pushed(pair, capsys)

    assert snapshot(pair.production) == snapshot(pair.local)
    assert "nothing to do" in again  # NaN, -0.0 ... compare equal to themselves


def test_field_order_and_numeric_type_changes_travel(pair: Pair, capsys: Capsys) -> None:
    pair.local.kinds.insert_many([{"_id": i, "a": 1, "b": 2} for i in range(3)])
    pushed(pair, capsys)
    pair.local.kinds.replace_one({"_id": 0}, SON([("b", 2), ("a", 1)]))
    pair.local.kinds.replace_one({"_id": 1}, {"a": 1.0, "b": 2})
    pair.local.kinds.replace_one({"_id": 2}, {"a": Int64(1), "b": 2})

    out = pushed(pair, capsys)

    assert "3 to update" in out
    assert snapshot(pair.production) == snapshot(pair.local)


def test_mixed_id_types_in_one_collection(pair: Pair, capsys: Capsys) -> None:
    pair.local.mixed.insert_many([{"_id": i, "v": 0} for i in MIXED_IDS])
    pushed(pair, capsys)
    assert snapshot(pair.production) == snapshot(pair.local)

    for n, _id in enumerate(MIXED_IDS):
        if n % 3 == 0:
            pair.local.mixed.update_one({"_id": _id}, {"$set": {"v": 1}})
        elif n % 3 == 1:
            pair.local.mixed.delete_one({"_id": _id})
    pair.local.mixed.insert_one({"_id": Int64(-3 - 2**40), "v": "new"})
    out = pushed(pair, capsys)

    assert snapshot(pair.production) == snapshot(pair.local)
    assert "0 drifted" in out


def test_an_id_stored_as_int64_on_the_target_becomes_the_sources_int(
    pair: Pair, capsys: Capsys
) -> None:
    """MongoDB sees _id 7 and NumberLong(7) as one document, so the sync must replace it,
    and the target must end up byte-equal to the source: with the source's int32 _id."""
    pair.local.ids.insert_many([{"_id": 7, "v": "same"}, {"_id": 8, "v": "x"}])
    pair.production.ids.insert_many([{"_id": Int64(7), "v": "same"}, {"_id": 8.0, "v": "x"}])

    out = pushed(pair, capsys, "--drift", "overwrite")

    assert "2 to update" in out and "0 to insert" in out
    assert collection_state(pair.production.ids) == collection_state(pair.local.ids)
    assert pushed(pair, capsys).count("nothing to do") == 1


def element(etype: int, name: str, value: bytes) -> bytes:
    return bytes([etype]) + name.encode() + b"\x00" + value


def bson_string(text: str) -> bytes:
    data = text.encode() + b"\x00"
    return struct.pack("<i", len(data)) + data


def deprecated_types_document(n: int) -> bytes:
    """undefined, DBPointer and symbol: the driver reads them but cannot write them."""
    body = element(0x10, "_id", struct.pack("<i", n))
    body += element(0x06, "undefined", b"")
    body += element(0x0C, "dbpointer", bson_string("db.coll") + bytes.fromhex("677b9c4c" * 3))
    body += element(0x0E, "symbol", bson_string("sym"))
    return struct.pack("<i", len(body) + 5) + body + b"\x00"


def test_deprecated_bson_types_travel_byte_for_byte(pair: Pair, capsys: Capsys) -> None:
    raw = [deprecated_types_document(n) for n in range(3)]
    pair.local.old.insert_many([RawBSONDocument(r) for r in raw])
    stored = [bytes(d.raw) for d in raw_collection(pair.local.old).find(sort=[("_id", 1)])]
    if stored != raw:
        pytest.skip(
            "SecantusDB rewrites deprecated BSON types on insert (undefined -> null, "
            "DBPointer -> DBRef document, symbol -> string), so they cannot reach a sync"
        )

    pushed(pair, capsys)

    assert snapshot(pair.production) == snapshot(pair.local)
    assert bson.decode(raw[0])["_id"] == 0
