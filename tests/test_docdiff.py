"""The field-by-field comparison behind `syncd diff`, without a server."""

from __future__ import annotations

import datetime as dt
from typing import Any

import bson
from bson import Int64, ObjectId

from syncd.docdiff import ABSENT, FieldDiff, field_differences, hidden, show, type_name


def diff(source: dict[str, Any], target: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    return [(d.path, d.source, d.target) for d in field_differences(source, target)]


def test_equal_documents_have_no_differences() -> None:
    doc = {"_id": 1, "name": "Ada", "tags": ["a", "b"], "address": {"city": "Lima"}}
    assert field_differences(doc, dict(doc)) == []


def test_nested_paths_and_array_indexes() -> None:
    source = {"_id": 1, "address": {"lines": ["Av. Larco 1", "Miraflores"], "city": "Lima"}}
    target = {"_id": 1, "address": {"lines": ["Av. Larco 1", "San Isidro"], "city": "Lima"}}
    assert diff(source, target) == [("address.lines[1]", "Miraflores", "San Isidro")]


def test_a_field_on_one_side_only_is_absent_on_the_other() -> None:
    source = {"_id": 1, "status": "signed", "items": [{"sku": "a"}, {"sku": "b"}]}
    target = {"_id": 1, "items": [{"sku": "a"}], "locked": True}
    assert diff(source, target) == [
        ("status", "signed", ABSENT),
        ("items[1]", {"sku": "b"}, ABSENT),
        ("locked", ABSENT, True),
    ]


def test_types_count_as_mongodb_stores_them() -> None:
    source = {
        "_id": 1,
        "n": 1,
        "flag": True,
        "when": dt.datetime(2026, 1, 11, 10, 30, tzinfo=dt.UTC),
    }
    target = {
        "_id": 1,
        "n": Int64(1),
        "flag": 1,
        "when": dt.datetime(2026, 1, 11, 10, 30, tzinfo=dt.UTC),
    }
    assert diff(source, target) == [("n", 1, Int64(1)), ("flag", True, 1)]
    assert (type_name(1), type_name(Int64(1)), type_name(1.0)) == ("int32", "int64", "double")
    assert diff({"x": 1.0}, {"x": 1}) == [("x", 1.0, 1)]


def test_field_order_alone_is_reported_once_at_its_level() -> None:
    source = {"_id": 1, "name": {"first": "Ada", "last": "Lovelace"}}
    target = {"_id": 1, "name": {"last": "Lovelace", "first": "Ada"}}
    assert field_differences(source, target) == [
        FieldDiff("name", ["first", "last"], ["last", "first"], "field order")
    ]
    top = field_differences({"a": 1, "b": 2}, {"b": 2, "a": 1})
    assert top == [FieldDiff("(document)", ["a", "b"], ["b", "a"], "field order")]


def test_a_document_replaced_by_an_array_is_one_difference() -> None:
    assert diff({"x": {"a": 1}}, {"x": [1]}) == [("x", {"a": 1}, [1])]


def test_values_show_as_relaxed_extended_json_shortened() -> None:
    oid = ObjectId("65a0f1c2e4b0a1b2c3d4e5f6")
    assert show(oid) == '{"$oid": "65a0f1c2e4b0a1b2c3d4e5f6"}'
    assert show(Int64(5)) == "5"
    assert (
        show(dt.datetime(2026, 1, 11, 10, 30, tzinfo=dt.UTC)) == '{"$date": "2026-01-11T10:30:00Z"}'
    )
    assert show("señora") == '"señora"'
    assert show(ABSENT) == "(absent)"
    long = show("x" * 200)
    assert len(long) == 80 and long.endswith("…") and long.startswith('"xxx')
    assert show(bson.decode(bson.encode({"b": b"\x00\x01"}))["b"]) == (
        '{"$binary": {"base64": "AAE=", "subType": "00"}}'
    )


def test_secret_fields_and_what_is_inside_them_are_hidden() -> None:
    secrets = ["encrypted_password"]
    assert hidden("encrypted_password", secrets)
    assert hidden("encrypted_password.hash", secrets)
    assert not hidden("encrypted_password_reset_at", secrets)
    assert not hidden("email", secrets)
