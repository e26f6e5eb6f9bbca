"""What a backup holds on disk: mongodump's layout, metadata, manifest, permissions.

And `BackupSource` reading it back: documents, indexes, options and GridFS bytes.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import bson
import gridfs
import pytest
from bson import ObjectId, json_util
from bson.raw_bson import RawBSONDocument
from pymongo import ASCENDING, IndexModel
from pymongo.database import Database

from syncd.backup import (
    BackupError,
    BackupInfo,
    BackupSource,
    BackupWriter,
    create_backup,
    list_backups,
    verify_backup,
)
from syncd.backup.create import read_order
from syncd.mongo.source import CollectionSpec
from tests.support.servers import Server

NAME_RE = re.compile(r"^production_\d{8}_\d{6}(_\d+)?$")


@pytest.fixture
def db(production_db: Database[Any]) -> Database[Any]:
    """A fresh database on the shared "production" test server (tests/conftest.py)."""
    return production_db


@pytest.fixture
def backups_dir(tmp_path: Path) -> Path:
    return tmp_path / "state" / "backups"


def _docs(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as handle:
        return list(bson.decode_file_iter(handle))


def _metadata(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    text = (gzip.decompress(data) if path.name.endswith(".gz") else data).decode()
    result: dict[str, Any] = json_util.loads(text, json_options=json_util.CANONICAL_JSON_OPTIONS)
    return result


def _fill_users(db: Database[Any], n: int = 250) -> None:
    db.users.insert_many(
        {
            "_id": ObjectId(),
            "email": f"user{i}@valkyria.com",
            "age": i,
            "joined": dt.datetime(2025, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=i),
            "tags": ["a", "b"][: i % 3],
            "nested": {"n": i, "pi": 3.14},
        }
        for i in range(n)
    )


@pytest.mark.parametrize("compress", ["gzip", "none"])
def test_backup_files_are_what_mongodump_writes(
    db: Database[Any], backups_dir: Path, compress: Any
) -> None:
    _fill_users(db)
    db.audit_events.insert_one({"action": "login"})

    info = create_backup(db, "production", backups_dir, compress=compress)

    assert NAME_RE.match(info.name)
    assert info.path == backups_dir / info.name
    gz = ".gz" if compress == "gzip" else ""
    folder = info.path / db.name
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"audit_events.bson{gz}", f"audit_events.metadata.json{gz}"]
        + [f"users.bson{gz}", f"users.metadata.json{gz}"]
    )
    on_disk = _docs(folder / f"users.bson{gz}")
    live = list(db.users.find())
    assert sorted(on_disk, key=lambda d: d["_id"]) == sorted(live, key=lambda d: d["_id"])
    assert info.collections["users"].count == 250
    assert info.collections["audit_events"].count == 1
    assert info.verified and info.kind == "full" and info.compress == compress


def test_metadata_carries_indexes_options_and_uuid(db: Database[Any], backups_dir: Path) -> None:
    validator = {"$jsonSchema": {"bsonType": "object", "required": ["email"]}}
    db.create_collection("users", validator=validator, collation={"locale": "fr", "strength": 2})
    db.users.create_indexes(
        [
            IndexModel([("email", ASCENDING)], unique=True),
            IndexModel([("age", ASCENDING)], partialFilterExpression={"age": {"$gt": 17}}),
            IndexModel([("joined", ASCENDING)], expireAfterSeconds=3600),
        ]
    )
    db.create_collection("audit_events", capped=True, size=65536, max=1000)
    db.users.insert_one({"email": "a@b.c"})
    live_uuid = next(db.list_collections(filter={"name": "users"}))["info"]["uuid"]

    info = create_backup(db, "production", backups_dir, compress="none")

    meta_path = info.path / db.name / "users.metadata.json"
    raw = meta_path.read_text()
    assert list(json.loads(raw)) == ["options", "indexes", "uuid", "collectionName", "type"]
    assert '"$numberInt"' in raw  # canonical Extended JSON, as mongodump writes it
    meta = _metadata(meta_path)
    assert meta["collectionName"] == "users" and meta["type"] == "collection"
    assert meta["uuid"] == bytes(live_uuid).hex()
    assert meta["options"]["validator"] == validator
    assert meta["options"]["collation"]["locale"] == "fr"
    by_name = {index["name"]: index for index in meta["indexes"]}
    assert set(by_name) == {"_id_", "email_1", "age_1", "joined_1"}
    assert by_name["email_1"]["unique"] is True
    assert by_name["age_1"]["partialFilterExpression"] == {"age": {"$gt": 17}}
    assert by_name["joined_1"]["expireAfterSeconds"] == 3600
    assert all("ns" not in index for index in meta["indexes"])

    capped = _metadata(info.path / db.name / "audit_events.metadata.json")
    assert capped["options"]["capped"] is True
    assert capped["options"]["size"] == 65536 and capped["options"]["max"] == 1000


def test_gzip_backup_compresses_metadata_like_mongodump_gzip(
    db: Database[Any], backups_dir: Path
) -> None:
    db.users.create_index("email", unique=True)
    db.users.insert_one({"email": "a@b.c"})

    info = create_backup(db, "production", backups_dir, compress="gzip")

    meta = _metadata(info.path / db.name / "users.metadata.json.gz")
    assert "email_1" in {index["name"] for index in meta["indexes"]}


def test_manifest_records_counts_checksums_and_no_uri(
    server_production: Server, db: Database[Any], backups_dir: Path
) -> None:
    _fill_users(db, 40)

    info = create_backup(db, "production", backups_dir, compress="gzip", reason="before sync")

    manifest = json.loads((info.path / "manifest.json").read_text())
    assert manifest["endpoint"] == "production"
    assert manifest["database"] == db.name
    assert manifest["kind"] == "full"
    assert manifest["reason"] == "before sync"
    assert manifest["syncd_version"]
    created = dt.datetime.fromisoformat(manifest["created"])
    assert created.utcoffset() == dt.timedelta(0)
    assert info.created == created
    users = manifest["collections"]["users"]
    bson_path = info.path / users["file"]
    assert users["count"] == 40
    assert users["bytes"] == bson_path.stat().st_size
    assert users["sha256"] == hashlib.sha256(bson_path.read_bytes()).hexdigest()
    for path in info.path.rglob("*"):
        if path.is_file():
            text = path.read_bytes()
            assert b"mongodb://" not in text
            assert f"{server_production.host}:{server_production.port}".encode() not in text


def test_files_are_0600_and_directories_0700_whatever_the_umask(
    db: Database[Any], backups_dir: Path
) -> None:
    db.users.insert_one({"email": "a@b.c"})
    old = os.umask(0)
    try:
        info = create_backup(db, "production", backups_dir, compress="gzip")
    finally:
        os.umask(old)

    assert stat.S_IMODE(backups_dir.stat().st_mode) == 0o700
    for path in [info.path, *info.path.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), path


def test_views_and_system_collections_are_left_out_and_missing_ones_recorded(
    db: Database[Any], backups_dir: Path
) -> None:
    db.users.insert_one({"email": "a@b.c"})
    db.create_collection("active_users", viewOn="users", pipeline=[{"$match": {}}])

    everything = create_backup(db, "production", backups_dir, compress="none")
    chosen = create_backup(
        db, "production", backups_dir, compress="none", collections=["users", "not_there"]
    )

    assert list(everything.collections) == ["users"]
    assert list(chosen.collections) == ["users"]
    assert chosen.absent == ("not_there",)
    assert BackupSource(chosen).collection_spec("not_there") is None


def _raw_sorted(db: Database[Any], name: str) -> list[bytes]:
    coll = db.get_collection(
        name, codec_options=db.codec_options.with_options(document_class=RawBSONDocument)
    )
    return sorted(bytes(doc.raw) for doc in coll.find())


@pytest.mark.parametrize("compress", ["gzip", "none"])
def test_backup_source_gives_back_documents_indexes_options_and_gridfs(
    db: Database[Any], backups_dir: Path, compress: Any
) -> None:
    _fill_users(db, 300)
    db.users.create_index("email", unique=True)
    # "$regex" reads back from Extended JSON as a BSON regex: the exact copy must win.
    validator = {"action": {"$type": "string"}, "email": {"$regex": "@"}}
    db.create_collection("audit_events", validator=validator)
    db.audit_events.insert_one({"action": "login", "email": "a@b.c"})
    payload = os.urandom(700_000)  # several 255 KiB chunks
    file_id = gridfs.GridFS(db).put(payload, filename="contract.pdf")
    live = {c["name"]: c for c in db.list_collections()}

    info = create_backup(db, "local", backups_dir, compress=compress)
    source = BackupSource(info)

    assert source.label == f"backup {info.name}"
    assert sorted(source.list_collections()) == ["audit_events", "fs.chunks", "fs.files", "users"]
    for name in source.list_collections():
        assert sorted(source.iter_raw(name)) == _raw_sorted(db, name)
        assert source.count(name) == db[name].count_documents({})
        spec = source.collection_spec(name)
        assert spec is not None
        assert spec.options == live[name].get("options", {})
        assert {i["name"]: i for i in spec.indexes} == {
            i["name"]: {k: v for k, v in i.items() if k != "ns"} for i in db[name].list_indexes()
        }
        assert spec.uuid == bytes(live[name]["info"]["uuid"])

    # Database-name independent: load it into another database, GridFS reads the same bytes.
    other = db.client[db.name + "_copy"]
    try:
        for name in source.list_collections():
            other[name].insert_many([RawBSONDocument(raw) for raw in source.iter_raw(name)])
        assert gridfs.GridFS(other).get(file_id).read() == payload
    finally:
        db.client.drop_database(other.name)


def test_changes_backup_keeps_inserted_ids_where_mongorestore_does_not_look(
    backups_dir: Path,
) -> None:
    before = [bson.encode({"_id": i, "v": "old"}) for i in range(3)]
    inserted = [bson.encode({"_id": 100 + i}) for i in range(5)]
    with BackupWriter(
        backups_dir, "production", "app", kind="changes", compress="gzip", reason="to_production"
    ) as writer:
        writer.write_collection(CollectionSpec("users"), iter(before))
        writer.write_inserted_ids("users", iter(inserted))
        info = writer.commit()

    source = BackupSource(info)
    assert list(source.iter_raw("users")) == before
    assert list(source.inserted_ids("users")) == inserted
    assert info.collections["users"].inserted_ids == 5
    assert info.kind == "changes"
    files = [p.name for p in (info.path / "app").iterdir()]
    ids_files = [f for f in files if "inserted-ids" in f]
    assert len(ids_files) == 1
    assert not ids_files[0].endswith((".bson", ".bson.gz", ".json", ".json.gz"))


def test_damaged_file_fails_verification_and_reading(backups_dir: Path) -> None:
    docs = [bson.encode({"_id": i, "pad": "x" * 100}) for i in range(50)]
    with BackupWriter(backups_dir, "local", "app", kind="full", compress="none") as writer:
        writer.write_collection(CollectionSpec("users"), docs)
        info = writer.commit()
    assert verify_backup(info)
    path = info.path / info.collections["users"].file
    data = bytearray(path.read_bytes())
    data[200] ^= 0xFF  # same size: only a re-hash notices
    path.write_bytes(bytes(data))

    listed = _only(list_backups(backups_dir))
    assert listed.verified  # the cheap check sees nothing
    assert not verify_backup(listed)
    with pytest.raises(BackupError, match="damaged"):
        list(BackupSource(listed).iter_raw("users"))


def _only(infos: list[BackupInfo]) -> BackupInfo:
    assert len(infos) == 1
    return infos[0]


def test_gridfs_files_are_read_before_their_chunks() -> None:
    names = ["users", "fs.chunks", "attachments.chunks", "fs.files", "attachments.files", "a"]

    assert sorted(names, key=read_order) == [
        "a",
        "attachments.files",
        "attachments.chunks",
        "fs.files",
        "fs.chunks",
        "users",
    ]


@pytest.mark.skipif(
    shutil.which("mongorestore") is None,
    reason="mongorestore (MongoDB Database Tools) is not installed here",
)
@pytest.mark.parametrize("compress", ["gzip", "none"])
def test_mongorestore_restores_the_backup(
    server_production: Server, db: Database[Any], backups_dir: Path, compress: Any
) -> None:
    _fill_users(db, 50)
    db.users.create_index("email", unique=True)
    info = create_backup(db, "production", backups_dir, compress=compress)
    target = db.client[db.name + "_mr"]
    command = ["mongorestore", "--uri", server_production.uri, "--quiet", str(info.path)]
    command += [f"--nsFrom={db.name}.*", f"--nsTo={target.name}.*"]
    command += ["--gzip"] if compress == "gzip" else []
    try:
        subprocess.run(command, check=True, capture_output=True, timeout=120)
        assert _raw_sorted(target, "users") == _raw_sorted(db, "users")
        assert "email_1" in target.users.index_information()
    finally:
        db.client.drop_database(target.name)
