"""GridFS: fs.files and fs.chunks travel together; files of several chunks come back byte
for byte; a deleted or replaced file leaves no chunk behind; no file ever ends a sync
with missing or extra chunks."""

from __future__ import annotations

import hashlib
import math
import random
from typing import Any

import gridfs
import pytest
from bson import ObjectId
from pymongo.database import Database

from tests.engine_kit import Pair, snapshot, syncd

Capsys = pytest.CaptureFixture[str]
PUSH = ("sync", "to_production", "--yes")
CHUNK = 4096  # small chunks: several per file without megabytes of data


def put_files(db: Database[Any], count: int, seed: int = 0) -> dict[ObjectId, bytes]:
    rng = random.Random(seed)
    fs = gridfs.GridFS(db)
    files = {}
    for i in range(count):
        data = rng.randbytes(rng.randrange(1, 6 * CHUNK))
        files[fs.put(data, filename=f"doc_{i}.pdf", chunkSize=CHUNK)] = data
    return files


def read_all(db: Database[Any]) -> dict[ObjectId, bytes]:
    fs = gridfs.GridFS(db)
    return {f._id: f.read() for f in fs.find()}


def assert_whole_files(db: Database[Any]) -> None:
    """Every file has exactly chunks 0..n-1 of the right sizes; no chunk without a file."""
    files = {f["_id"]: f for f in db.fs.files.find()}
    chunks: dict[Any, list[tuple[int, int]]] = {}
    for chunk in db.fs.chunks.find({}, {"files_id": 1, "n": 1, "data": 1}):
        chunks.setdefault(chunk["files_id"], []).append((chunk["n"], len(chunk["data"])))
    assert set(chunks) <= set(files), "chunks without a file"
    for file_id, info in files.items():
        expected = math.ceil(info["length"] / info["chunkSize"])
        got = sorted(chunks.get(file_id, []))
        assert [n for n, _ in got] == list(range(expected)), f"file {file_id} chunks"
        assert sum(size for _, size in got) == info["length"]


def test_files_of_several_chunks_round_trip_byte_for_byte(pair: Pair, capsys: Capsys) -> None:
    files = put_files(pair.local, 12)
    assert any(len(data) > 3 * CHUNK for data in files.values())

    result = syncd(capsys, pair.config, *PUSH)

    assert result.code == 0, result.err
    copied = read_all(pair.production)
    assert {k: hashlib.sha256(v).hexdigest() for k, v in copied.items()} == {
        k: hashlib.sha256(v).hexdigest() for k, v in files.items()
    }
    assert snapshot(pair.production) == snapshot(pair.local)
    assert_whole_files(pair.production)


def test_deleted_and_replaced_files_leave_no_chunks_behind(pair: Pair, capsys: Capsys) -> None:
    files = put_files(pair.local, 8)
    assert syncd(capsys, pair.config, *PUSH).code == 0
    fs = gridfs.GridFS(pair.local)
    ids = sorted(files)
    fs.delete(ids[0])
    fs.delete(ids[1])  # replaced: same _id, other content, other number of chunks
    fs.put(b"short now", _id=ids[1], filename="doc_1.pdf", chunkSize=CHUNK)
    fs.delete(ids[2])
    fs.put(b"x" * (7 * CHUNK + 1), _id=ids[2], filename="doc_2.pdf", chunkSize=CHUNK)
    fs.put(b"brand new", filename="new.pdf", chunkSize=CHUNK)

    result = syncd(capsys, pair.config, *PUSH)

    assert result.code == 0, result.err
    assert pair.production.fs.chunks.count_documents({"files_id": ids[0]}) == 0
    assert pair.production.fs.files.count_documents({"_id": ids[0]}) == 0
    assert read_all(pair.production) == read_all(pair.local)
    assert snapshot(pair.production) == snapshot(pair.local)
    assert_whole_files(pair.production)


def test_naming_one_gridfs_collection_brings_its_partner(pair: Pair, capsys: Capsys) -> None:
    put_files(pair.local, 3)
    pair.local.users.insert_one({"_id": 1})

    result = syncd(capsys, pair.config, *PUSH, "-C", "fs.files")

    assert result.code == 0, result.err
    assert "2 collections" in result.out
    assert read_all(pair.production) == read_all(pair.local)
    assert "users" not in pair.production.list_collection_names()
    assert_whole_files(pair.production)


def test_pull_after_production_uploads(pair: Pair, capsys: Capsys) -> None:
    put_files(pair.production, 4, seed=1)
    assert syncd(capsys, pair.config, "sync", "from_production").code == 0
    uploaded = put_files(pair.production, 3, seed=2)
    gridfs.GridFS(pair.production).delete(next(iter(uploaded)))

    result = syncd(capsys, pair.config, "sync", "from_production")

    assert result.code == 0, result.err
    assert "0 drifted" in result.out
    assert read_all(pair.local) == read_all(pair.production)
    assert_whole_files(pair.local)


def test_merge_keeps_production_uploads_and_deletions_whole(pair: Pair, capsys: Capsys) -> None:
    files = put_files(pair.local, 4)
    assert syncd(capsys, pair.config, *PUSH).code == 0
    production_only = put_files(pair.production, 2, seed=5)
    deleted = sorted(files)[0]
    gridfs.GridFS(pair.production).delete(deleted)
    local_only = put_files(pair.local, 2, seed=6)

    result = syncd(capsys, pair.config, *PUSH, "--drift", "merge")

    assert result.code == 0, result.err
    copied = read_all(pair.production)
    assert set(copied) == (set(files) - {deleted}) | set(production_only) | set(local_only)
    for file_id, data in {**production_only, **local_only}.items():
        assert copied[file_id] == data
    assert_whole_files(pair.production)
