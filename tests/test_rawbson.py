"""Raw BSON helpers of the engine: finding `_id` without decoding, `_id` identity as
MongoDB sees it, digests that notice every byte. Pure functions, no server."""

from __future__ import annotations

import datetime as dt
import struct
import uuid
from typing import Any

import bson
import pytest
from bson import (
    Binary,
    Code,
    Decimal128,
    Int64,
    MaxKey,
    MinKey,
    ObjectId,
    Regex,
    Timestamp,
)
from bson.codec_options import CodecOptions
from bson.son import SON
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.mongo.rawbson import (
    digest,
    id_document,
    id_key,
    id_value,
    raw_id,
    split_documents,
)

UTC_OPTIONS = CodecOptions(tz_aware=True, tzinfo=dt.UTC, uuid_representation=4)

# One value of every BSON type Python's bson can write (undefined, DBPointer and symbol are
# built by hand below: the driver reads them but does not write them).
EVERY_TYPE: dict[str, Any] = {
    "double": 1.5,
    "string": "Ñuñoa ✓",
    "document": {"a": {"b": [1, 2]}},
    "array": [1, "two", {"three": 3.0}],
    "binary": Binary(b"\x00\x01\xff", 0),
    "uuid": Binary.from_uuid(uuid.UUID(int=7)),
    "objectid": ObjectId("677b9c4c6c996d087ed9d57d"),
    "bool": True,
    "datetime": dt.datetime(2025, 1, 6, 9, 0, tzinfo=dt.UTC),
    "null": None,
    "regex": Regex("^a.*z$", "im"),
    "code": Code("function () { return 1; }"),
    "code_w_scope": Code("function () { return x; }", {"x": 1}),
    "int32": 42,
    "timestamp": Timestamp(1_700_000_000, 3),
    "int64": Int64(2**40),
    "decimal": Decimal128("12345.6789"),
    "minkey": MinKey(),
    "maxkey": MaxKey(),
}


def element(etype: int, name: str, value: bytes) -> bytes:
    return bytes([etype]) + name.encode() + b"\x00" + value


def document(*elements: bytes) -> bytes:
    body = b"".join(elements)
    return struct.pack("<i", len(body) + 5) + body + b"\x00"


def bson_string(text: str) -> bytes:
    data = text.encode() + b"\x00"
    return struct.pack("<i", len(data)) + data


HAND_MADE = [
    element(0x06, "undefined", b""),
    element(0x0C, "dbpointer", bson_string("ns.coll") + bytes(12)),
    element(0x0E, "symbol", bson_string("sym")),
]


def test_id_is_found_after_a_field_of_every_bson_type() -> None:
    fields = bson.encode(EVERY_TYPE)[4:-1]  # the elements, without length and terminator
    raw = document(fields, *HAND_MADE, element(0x02, "_id", bson_string("last")))

    assert id_value(raw_id(raw)) == "last"


@pytest.mark.parametrize("name", sorted(EVERY_TYPE))
def test_an_id_of_any_type_round_trips(name: str) -> None:
    value = EVERY_TYPE[name]
    raw = bson.encode(SON([("before", 1), ("_id", value), ("after", "x")]))

    rid = raw_id(raw)

    assert (
        bson.decode(id_document(rid), UTC_OPTIONS)["_id"]
        == bson.decode(bson.encode({"v": value}), UTC_OPTIONS)["v"]
    )
    assert id_document(rid) == bson.encode({"_id": value})


def test_a_document_without_id_is_an_error() -> None:
    with pytest.raises(ValueError, match="no _id"):
        raw_id(bson.encode({"a": 1}))


def test_an_unknown_element_type_is_an_error_not_a_wrong_id() -> None:
    raw = document(element(0x42, "odd", b"\x00\x00"), element(0x10, "_id", struct.pack("<i", 1)))
    with pytest.raises(ValueError, match="unknown BSON element type 0x42"):
        raw_id(raw)


def rid_of(value: Any) -> bytes:
    return raw_id(bson.encode({"_id": value}))


def test_numbers_equal_as_ids_share_one_identity() -> None:
    """MongoDB finds {_id: 1} for 1, NumberLong(1) and 1.0: one document, not three."""
    keys = {id_key(rid_of(v)) for v in (1, Int64(1), 1.0)}
    assert len(keys) == 1
    assert id_key(rid_of(-5)) == id_key(rid_of(Int64(-5))) == id_key(rid_of(-5.0))


def test_ids_that_differ_keep_different_identities() -> None:
    values = [1, 2, 1.5, "1", ObjectId(b"\x00" * 12), {"a": 1}, [1], True, None, 2**62, 1e300]
    keys = [id_key(rid_of(v)) for v in values]
    assert len(set(keys)) == len(values)


def test_large_doubles_do_not_overflow_the_identity() -> None:
    assert id_key(rid_of(2.0**70)) != id_key(rid_of(Int64(2**62)))
    assert id_key(rid_of(float("inf"))) == rid_of(float("inf"))
    assert id_key(rid_of(float("nan"))) == rid_of(float("nan"))


def test_split_documents_gives_back_each_document() -> None:
    docs = [bson.encode({"_id": i, "pad": "x" * i}) for i in range(5)]
    assert list(split_documents(b"".join(docs))) == docs
    assert list(split_documents(b"")) == []


def test_digest_notices_field_order_and_numeric_type() -> None:
    """What the engine compares is exactly what is stored: {a:1,b:2} is not {b:2,a:1},
    and 1 is not 1.0 (an application reading the document sees the difference)."""
    base = digest(bson.encode(SON([("_id", 1), ("a", 1), ("b", 2)])))
    assert base == digest(bson.encode(SON([("_id", 1), ("a", 1), ("b", 2)])))
    assert base != digest(bson.encode(SON([("_id", 1), ("b", 2), ("a", 1)])))
    assert base != digest(bson.encode(SON([("_id", 1), ("a", 1.0), ("b", 2)])))
    assert base != digest(bson.encode(SON([("_id", 1), ("a", Int64(1)), ("b", 2)])))
    assert len(base) == 16


ids = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20).map(lambda b: Binary(b, 0)),
    st.binary(min_size=12, max_size=12).map(ObjectId),
    st.dictionaries(
        st.text(st.characters(codec="utf-8", exclude_characters="\x00$."), max_size=5),
        st.integers(-5, 5),
        max_size=3,
    ),
)
fields = st.dictionaries(
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=8).filter(
        lambda k: k != "_id"
    ),
    st.one_of(st.none(), st.booleans(), st.integers(-(2**31), 2**31 - 1), st.text(max_size=30)),
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(ids, fields, st.integers(min_value=0, max_value=6))
def test_raw_id_finds_the_id_anywhere_in_the_document(
    value: Any, other: dict[str, Any], position: int
) -> None:
    items = list(other.items())
    items.insert(min(position, len(items)), ("_id", value))
    raw = bson.encode(SON(items))

    rid = raw_id(raw)

    assert id_document(rid) == bson.encode({"_id": value})
    decoded = id_value(rid)
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        assert id_key(rid) == id_key(rid_of(int(value)))
    assert bson.encode({"_id": decoded}) == bson.encode({"_id": value})
