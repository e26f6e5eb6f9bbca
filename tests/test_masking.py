"""The masking rules on raw BSON, without a server: deterministic under a key, distinct
values stay distinct, paths through embedded documents and arrays, every byte the mask
does not name kept as it was."""

from __future__ import annotations

import re
from typing import Any

import bson
import pytest
from bson import Decimal128, Int64, ObjectId
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.config.model import MaskExcept
from syncd.engine.masking import Masker
from syncd.mongo.rawbson import elements

KEY = b"unit-test-masking-key"
EMAIL = re.compile(r"^user\.[0-9a-f]{16}@example\.invalid$")


def mask(doc: dict[str, Any], rules: dict[str, str], **kw: Any) -> dict[str, Any]:
    masker = Masker(kw.pop("key", KEY), list(rules.items()), kw.pop("exempt", None))
    masked: dict[str, Any] = bson.decode(masker(bson.encode(doc)))
    return masked


def test_each_rule_gives_its_shape() -> None:
    doc = {"e": "ana@x.cl", "d": "+56 9 1234-0567", "n": "Ana Rojas", "h": "x", "r": "secret"}
    rules = {"e": "email", "d": "digits", "n": "name", "h": "hash", "r": "redact"}

    masked = mask(doc, rules)

    assert EMAIL.match(masked["e"])
    assert re.fullmatch(r"\+\d\d \d \d{4}-\d{4}", masked["d"]) and masked["d"] != doc["d"]
    assert re.fullmatch(r"[A-Z][a-z]+ [A-Z][a-z]+ [A-Z][a-z]{11}", masked["n"]), masked["n"]
    assert re.fullmatch(r"[A-Z][a-z]+ [A-Z][a-z]{13}", mask({"n": "Ana"}, rules)["n"])
    assert re.fullmatch(r"[0-9a-f]{64}", masked["h"])
    assert masked["r"] == "***"


def test_the_same_value_masks_alike_under_one_key_and_otherwise_under_another() -> None:
    rules = {"email": "email"}
    first = mask({"email": "ana@x.cl", "other": 1}, rules)
    again = mask({"_id": 7, "email": "ana@x.cl"}, rules)  # another document, another time
    other_key = mask({"email": "ana@x.cl"}, rules, key=b"another key")

    assert first["email"] == again["email"] != other_key["email"]


def test_distinct_values_stay_distinct() -> None:
    masker = Masker(KEY, [("e", "email"), ("n", "name")])
    emails, names = set(), set()
    for i in range(20_000):
        doc = bson.decode(masker(bson.encode({"e": f"person{i}@x.cl", "n": f"Person {i}"})))
        emails.add(doc["e"])
        names.add(doc["n"])
    assert len(emails) == len(names) == 20_000


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_digits_is_one_to_one_on_every_string_of_a_length(width: int) -> None:
    masker = Masker(KEY, [("d", "digits")])
    inputs = [f"{i:0{width}d}" for i in range(10**width)]
    outputs = {bson.decode(masker(bson.encode({"d": value})))["d"] for value in inputs}
    assert len(outputs) == len(inputs)
    assert {len(value) for value in outputs} == {width}


def test_other_types_under_a_string_rule_become_null_and_hash_takes_anything() -> None:
    doc = {"a": 5, "b": {"x": 1}, "c": None, "d": Int64(5), "e": 5, "f": "5"}
    rules = {"a": "email", "b": "name", "c": "digits", "d": "hash", "e": "hash", "f": "hash"}

    masked = mask(doc, rules)

    assert (masked["a"], masked["b"], masked["c"]) == (None, None, None)
    assert len({masked["d"], masked["e"], masked["f"]}) == 3  # int64 5, int32 5, "5" differ


def test_paths_go_through_embedded_documents_and_arrays() -> None:
    doc = {
        "contact": {"phone": "5550001", "name": "Ana"},
        "contacts": [{"email": "a@x.cl", "k": 1}, {"email": "b@x.cl"}, "not a document"],
        "emails": ["a@x.cl", ["b@x.cl"], 3],
        "phones": ["111", "222"],
    }
    rules = {
        "contact.phone": "digits",
        "contacts.email": "email",
        "emails": "email",
        "phones.1": "redact",
        "missing.field": "null",
    }

    masked = mask(doc, rules)

    assert masked["contact"]["name"] == "Ana" and len(masked["contact"]["phone"]) == 7
    first, second, third = masked["contacts"]
    assert EMAIL.match(first["email"]) and first["k"] == 1 and EMAIL.match(second["email"])
    assert third == "not a document"
    assert EMAIL.match(masked["emails"][0]) and EMAIL.match(masked["emails"][1][0])
    assert masked["emails"][2] is None
    assert masked["phones"] == ["111", "***"]
    assert first["email"] == mask({"e": "a@x.cl"}, {"e": "email"})["e"]  # same value, same mask
    assert "missing" not in masked


def test_mask_except_documents_are_returned_as_they_are() -> None:
    masker = Masker(KEY, [("email", "email")], MaskExcept("owner.email", ("admin@valkyria.com", 7)))
    exempt = bson.encode({"email": "x@y.z", "owner": {"email": "admin@valkyria.com"}})
    by_number = bson.encode({"email": "x@y.z", "owner": [{"email": 7}]})
    other = bson.encode({"email": "x@y.z", "owner": {"email": "someone@valkyria.com"}})

    assert masker(exempt) is exempt and masker(by_number) is by_number
    assert masker(other) != other


BSON_VALUES = st.one_of(
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**63), 2**63 - 1).map(Int64),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.booleans(),
    st.none(),
    st.binary(max_size=10),
    st.just(Decimal128("1.10")),
    st.just(ObjectId("65a1b2c3d4e5f60718293a4b")),
)
DOCS = st.recursive(
    BSON_VALUES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("abxy"), inner),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["a", "b", "x", "y", "z"]), DOCS, min_size=1))
def test_every_byte_the_mask_does_not_name_is_kept(doc: dict[str, Any]) -> None:
    """Masking a.x and b: every other element keeps its exact bytes (type, order); so does
    `a` where the path through it goes nowhere."""
    raw = bson.encode(doc)
    masked = Masker(KEY, [("a.x", "email"), ("b", "hash")])(raw)

    named = {b"b"} | ({b"a"} if isinstance(doc.get("a"), dict | list) else set())

    def kept(data: bytes) -> list[bytes]:
        return [data[s:e] for _, name, s, _, e in elements(data) if name not in named]

    assert list(bson.decode(masked)) == list(doc)  # field order
    assert kept(masked) == kept(raw)
