"""The engine's own `find` cursor: documents sliced out of the server's replies as raw
BSON, across `getMore`s, with the cursor killed when the reader stops early."""

from __future__ import annotations

from typing import Any

import bson
import pytest
from bson import ObjectId
from pymongo.database import Database

from syncd.engine.scan import reads_back_in_order
from syncd.mongo.rawbson import elements
from syncd.mongo.rawcursor import array_documents, find_documents
from syncd.mongo.source import MongoSource


def test_array_documents_gives_back_each_embedded_document() -> None:
    docs = [{"_id": i, "x": "y" * i} for i in range(12)]
    raw = bson.encode({"before": 1, "batch": docs, "after": 2})
    (_, _, _, start, end) = next(e for e in elements(raw) if e[1] == b"batch")
    assert [bson.decode(d) for d in array_documents(raw, start, end)] == docs


def test_an_array_of_something_else_than_documents_is_refused() -> None:
    raw = bson.encode({"batch": [1, 2]})
    (_, _, _, start, end) = next(elements(raw))
    with pytest.raises(ValueError, match="type 0x10"):
        array_documents(raw, start, end)


def test_elements_of_an_embedded_document_keep_offsets_into_the_outer_one() -> None:
    raw = bson.encode({"a": 1, "inner": {"b": "c", "d": 2}})
    (_, _, _, start, end) = next(e for e in elements(raw) if e[1] == b"inner")
    assert [(key, raw[vs:ve]) for _, key, _, vs, ve in elements(raw, start, end)] == [
        (b"b", b"\x02\x00\x00\x00c\x00"),
        (b"d", b"\x02\x00\x00\x00"),
    ]


def test_every_document_is_read_across_batches_and_filtered(
    local_db: Database[dict[str, Any]],
) -> None:
    local_db.things.insert_many([{"_id": i, "even": i % 2 == 0} for i in range(25)])
    found = [bson.decode(raw) for raw in find_documents(local_db, "things", {}, 4)]
    assert sorted(d["_id"] for d in found) == list(range(25))
    evens = [
        bson.decode(raw)["_id"] for raw in find_documents(local_db, "things", {"even": True}, 3)
    ]
    assert sorted(evens) == list(range(0, 25, 2))
    assert list(find_documents(local_db, "missing", {}, 4)) == []


def test_a_reader_that_stops_early_kills_its_cursor(local_db: Database[dict[str, Any]]) -> None:
    local_db.things.insert_many([{"_id": ObjectId()} for _ in range(20)])
    calls: list[int] = []
    before = _open_cursors(local_db)
    documents = find_documents(local_db, "things", {}, 5, lambda: calls.append(1))
    assert len([next(documents) for _ in range(7)]) == 7
    assert _open_cursors(local_db) == before + 1
    documents.close()
    assert len(calls) == 2  # the first batch and one getMore
    assert _open_cursors(local_db) == before


def _open_cursors(db: Database[dict[str, Any]]) -> int:
    status = db.command("serverStatus").get("metrics", {}).get("cursor", {})
    return int(status.get("open", {}).get("total", 0))


def test_a_copy_reads_back_in_order_only_when_each_document_is_at_its_place(
    local_db: Database[dict[str, Any]], tmp_path: Any
) -> None:
    from syncd.mongo.rawbson import digest

    docs = [{"_id": i, "v": i} for i in range(10)]
    local_db.things.insert_many(docs)
    source = MongoSource(local_db, "local", batch_size=3)
    order = tmp_path / "src.order"
    order.write_bytes(b"".join(digest(bson.encode(d)) for d in docs))
    assert reads_back_in_order(source, "things", order)
    order.write_bytes(b"".join(digest(bson.encode(d)) for d in docs[:9]))
    assert not reads_back_in_order(source, "things", order)  # one more on the target
    order.write_bytes(b"".join(digest(bson.encode(d)) for d in [*docs, docs[0]]))
    assert not reads_back_in_order(source, "things", order)  # one less
    local_db.things.update_one({"_id": 4}, {"$set": {"v": 0}})
    order.write_bytes(b"".join(digest(bson.encode(d)) for d in docs))
    assert not reads_back_in_order(source, "things", order)
    assert not reads_back_in_order(source, "things", tmp_path / "none.order")
