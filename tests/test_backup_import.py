"""`syncd backup import PATH --endpoint E`: a mongodump directory of one database (plain or
`--gzip`) becomes a verified backup that `list` shows and `restore` restores; PATH is only
read; a directory that is not a usable dump is refused with nothing imported.

Dumps are written in mongodump's layout (MongoDB Database Tools 100.x) by syncd's own
backup writer, copied out of the backup store, plus hand-made files where a test needs
mongodump's exact metadata or a broken dump.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
from pathlib import Path

import bson
import pytest
from pymongo import IndexModel

from syncd.backup import create_backup, list_backups
from tests.engine_kit import Pair, index_specs, snapshot, syncd

Capsys = pytest.CaptureFixture[str]


def tree_digest(root: Path) -> str:
    """Names, modes and bytes of everything under `root`."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        digest.update(f"{path.relative_to(root)}\0{info.st_mode:o}\0".encode())
        if path.is_file() and not path.is_symlink():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def fill(pair: Pair) -> None:
    db = pair.production
    db.users.insert_many(
        [{"_id": i, "email": f"user{i}@valkyria.com", "name": f"User {i}"} for i in range(40)]
    )
    db.users.create_indexes([IndexModel("email", unique=True)])
    db.create_collection(
        "contracts", validator={"$jsonSchema": {"bsonType": "object", "required": ["number"]}}
    )
    db.contracts.insert_many([{"_id": f"c{i}", "number": i} for i in range(25)])
    db["audit events"].insert_one({"_id": bson.ObjectId(), "what": "a name with a space"})


def mongodump_of(pair: Pair, out: Path, *, gzip_: bool) -> Path:
    """`mongodump --out OUT [--gzip]` of production: OUT/DB/COLL.bson[.gz] + metadata."""
    scratch = out.parent / f".writer-{out.name}"
    info = create_backup(
        pair.production, "production", scratch, compress="gzip" if gzip_ else "none"
    )
    out.mkdir(parents=True)
    shutil.copytree(info.path / pair.production.name, out / pair.production.name)
    shutil.rmtree(scratch)
    return out


def store(pair: Pair) -> list[str]:
    """Everything in the backup store, hidden work directories included."""
    return sorted(p.name for p in pair.backups.iterdir()) if pair.backups.exists() else []


@pytest.mark.parametrize("gzip_", [False, True], ids=["plain", "gzip"])
def test_an_imported_dump_is_listed_verified_and_restores(
    pair: Pair, capsys: Capsys, tmp_path: Path, gzip_: bool
) -> None:
    fill(pair)
    dump = mongodump_of(pair, tmp_path / "dump", gzip_=gzip_)
    before = tree_digest(dump)
    files = sorted(p.name for p in (dump / pair.production.name).iterdir())
    suffix = ".gz" if gzip_ else ""
    assert f"users.bson{suffix}" in files and f"users.metadata.json{suffix}" in files
    assert f"audit%20events.bson{suffix}" in files

    imported = syncd(capsys, pair.config, "backup", "import", str(dump), "--endpoint", "production")

    assert imported.code == 0, imported.err
    (info,) = list_backups(pair.backups)
    assert info.verified and info.kind == "full" and info.endpoint == "production"
    assert imported.out.startswith(f"{info.name}: imported {dump / pair.production.name} (")
    assert ("mongodump --gzip" in imported.out) == gzip_
    assert "3 collections, 66 documents" in imported.out
    assert tree_digest(dump) == before
    listing = syncd(capsys, pair.config, "backup", "list", "--verify", "--json")
    (listed,) = json.loads(listing.out)
    assert listed["verified"] is True
    assert listed["collections"] == {"audit events": 1, "contracts": 25, "users": 40}

    restored = syncd(capsys, pair.config, "backup", "restore", info.name, "--to", "local")

    assert restored.code == 0, restored.err
    assert snapshot(pair.local) == snapshot(pair.production)
    assert index_specs(pair.local.users) == index_specs(pair.production.users)
    options = pair.local.command("listCollections", filter={"name": "contracts"})
    assert options["cursor"]["firstBatch"][0]["options"]["validator"]["$jsonSchema"]["required"]


def test_the_database_folder_itself_and_mongodumps_own_metadata_are_read(
    pair: Pair, capsys: Capsys, tmp_path: Path
) -> None:
    """Metadata exactly as mongodump 100.x writes it (canonical Extended JSON, `ns`-less
    index documents, no `type`), a view that has metadata only, and a gzip dump."""
    folder = tmp_path / "valkyria_ecm_production"
    folder.mkdir()
    users = [bson.encode({"_id": bson.ObjectId(), "email": f"u{i}@valkyria.com"}) for i in range(5)]
    (folder / "users.bson.gz").write_bytes(gzip.compress(b"".join(users)))
    metadata = (
        '{"indexes":[{"v":{"$numberInt":"2"},"key":{"_id":{"$numberInt":"1"}},"name":"_id_"},'
        '{"v":{"$numberInt":"2"},"key":{"email":{"$numberInt":"1"}},"name":"email_1",'
        '"unique":true}],"uuid":"0c1b5c3a8b2d4e6f9a0b1c2d3e4f5a6b","collectionName":"users"}'
    )
    (folder / "users.metadata.json.gz").write_bytes(gzip.compress(metadata.encode()))
    view = (
        '{"options":{"viewOn":"users","pipeline":[{"$match":{"active":true}}]},'
        '"indexes":[],"collectionName":"active_users","type":"view"}'
    )
    (folder / "active_users.metadata.json.gz").write_bytes(gzip.compress(view.encode()))

    imported = syncd(
        capsys, pair.config, "backup", "import", str(folder), "--endpoint", "production"
    )

    assert imported.code == 0, imported.err
    assert "database valkyria_ecm_production): 1 collections, 5 documents" in imported.out
    assert "not imported: active_users: a view" in imported.out
    (info,) = list_backups(pair.backups)
    restored = syncd(capsys, pair.config, "backup", "restore", info.name, "--to", "local")
    assert restored.code == 0, restored.err
    assert sorted(pair.local.users.find().distinct("email")) == [
        f"u{i}@valkyria.com" for i in range(5)
    ]
    assert index_specs(pair.local.users)["email_1"]["unique"] is True


def broken_dumps(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (PATH, what the error says)."""
    good = [bson.encode({"_id": i, "v": "x" * 50}) for i in range(10)]
    cases: dict[str, tuple[Path, str]] = {}

    def folder(name: str, db: str = "app") -> Path:
        path = tmp_path / name / db
        path.mkdir(parents=True)
        return path

    empty = tmp_path / "not-a-dump"
    empty.mkdir(parents=True)
    (empty / "notes.txt").write_text("not a dump")
    cases["not a dump"] = (empty, "is not a mongodump directory")
    missing = tmp_path / "nowhere"
    cases["no such directory"] = (missing, "does not exist")
    for db in ("app", "reports"):
        (folder("several", db) / "users.bson").write_bytes(b"".join(good))
    cases["several databases"] = (tmp_path / "several", "holds several databases (app, reports)")
    truncated = folder("truncated")
    (truncated / "users.bson").write_bytes(b"".join(good)[:-7])
    (truncated / "orders.bson").write_bytes(b"".join(good))
    cases["truncated bson"] = (tmp_path / "truncated", "users.bson is damaged after 9 document(s)")
    cut_gzip = folder("cut-gzip")
    (cut_gzip / "users.bson.gz").write_bytes(gzip.compress(b"".join(good))[:-20])
    cases["truncated gzip"] = (cut_gzip, "truncated gzip file")
    unreadable = folder("unreadable")
    (unreadable / "orders.bson").write_bytes(b"".join(good))
    os.symlink(tmp_path / "gone.bson", unreadable / "users.bson")
    cases["unreadable file"] = (unreadable, "cannot read")
    bad_meta = folder("bad-metadata")
    (bad_meta / "users.bson").write_bytes(b"".join(good))
    (bad_meta / "users.metadata.json").write_text("{not json")
    cases["unreadable metadata"] = (bad_meta, "users.metadata.json is not mongodump metadata")
    no_id = folder("no-id")
    (no_id / "users.bson").write_bytes(bson.encode({"name": "no id"}))
    cases["document without _id"] = (no_id, "document 1 of users is not valid BSON with an _id")
    return cases


@pytest.mark.parametrize(
    "case",
    [
        "not a dump",
        "no such directory",
        "several databases",
        "truncated bson",
        "truncated gzip",
        "unreadable file",
        "unreadable metadata",
        "document without _id",
    ],
)
def test_a_broken_dump_is_refused_clearly_with_nothing_imported(
    pair: Pair, capsys: Capsys, tmp_path: Path, case: str
) -> None:
    path, says = broken_dumps(tmp_path / "dumps")[case]
    before = tree_digest(path) if path.exists() else None
    stored = store(pair)

    result = syncd(capsys, pair.config, "backup", "import", str(path), "--endpoint", "production")

    assert result.code == 1, result.out
    assert says in result.err
    assert "Traceback" not in result.err
    assert store(pair) == stored  # no backup, no half-written one
    assert list_backups(pair.backups) == []
    if before is not None:
        assert tree_digest(path) == before


def test_import_needs_a_configured_endpoint(pair: Pair, capsys: Capsys, tmp_path: Path) -> None:
    result = syncd(capsys, pair.config, "backup", "import", str(tmp_path), "--endpoint", "prod")

    assert result.code == 2
    assert "unknown endpoint 'prod' (endpoints: local, production)" in result.err
