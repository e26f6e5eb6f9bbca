"""A backup is all or nothing: kills, errors and a full disk never leave a listed half backup."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bson
import pytest
from bson import Binary
from pymongo.database import Database

from syncd.backup import (
    BackupError,
    BackupSource,
    BackupWriter,
    clean_leftovers,
    create_backup,
    find_backup,
    list_backups,
)
from syncd.mongo.source import CollectionSpec
from tests.support.servers import Server

NOW = dt.datetime(2026, 1, 11, 10, 30, 0, 250_000, tzinfo=dt.UTC)

# Backs up collection "big" and stops, mid-write, after a few batches until killed.
KILLED_WRITER = r"""
import os
import sys
from pathlib import Path
from pymongo import MongoClient
from syncd.backup import BackupWriter
from syncd.backup.create import collection_spec

name, backups = sys.argv[1:3]
db = MongoClient(os.environ["BACKUP_TEST_URI"])[name]
info = next(db.list_collections(filter={"name": "big"}))

def batches():
    with db.big.find_raw_batches(batch_size=500) as cursor:
        for number, batch in enumerate(cursor):
            yield batch
            if number == 5:
                print("writing", flush=True)
                sys.stdin.readline()

with BackupWriter(Path(backups), "production", name, kind="full", compress="gzip") as writer:
    writer.write_collection(collection_spec(db, info), batches())
    writer.commit()
"""


@pytest.fixture
def db(production_db: Database[Any]) -> Database[Any]:
    """A fresh database on the shared "production" test server (tests/conftest.py)."""
    return production_db


@pytest.fixture
def backups_dir(tmp_path: Path) -> Path:
    return tmp_path / "state" / "backups"


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB file system (tmpfs), to run out of space for real."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a 1 MiB tmpfs needs root")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def _fill_big(db: Database[Any], n: int) -> None:
    for start in range(0, n, 2000):
        db.big.insert_many(
            {"_id": i, "blob": Binary(os.urandom(1000))} for i in range(start, min(n, start + 2000))
        )


def _write(backups_dir: Path, endpoint: str = "local", now: dt.datetime = NOW) -> Any:
    docs = [bson.encode({"_id": i}) for i in range(10)]
    with BackupWriter(backups_dir, endpoint, "app", kind="full", compress="gzip", now=now) as w:
        w.write_collection(CollectionSpec("users"), docs)
        return w.commit()


def test_two_backups_in_the_same_second_get_distinct_names(backups_dir: Path) -> None:
    docs = [bson.encode({"_id": 1})]
    first = BackupWriter(backups_dir, "local", "app", kind="full", compress="none", now=NOW)
    second = BackupWriter(backups_dir, "local", "app", kind="full", compress="none", now=NOW)
    with first, second:
        first.write_collection(CollectionSpec("users"), docs)
        second.write_collection(CollectionSpec("users"), docs)
        names = {second.commit().name, first.commit().name}

    assert names == {"local_20260111_103000", "local_20260111_103000_2"}
    assert {b.name for b in list_backups(backups_dir)} == names
    assert all(b.verified for b in list_backups(backups_dir))


def test_killed_backup_is_never_listed_and_its_leftovers_are_cleaned(
    server_production: Server, db: Database[Any], backups_dir: Path
) -> None:
    _fill_big(db, 20_000)
    with subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, db.name, str(backups_dir)],
        env={**os.environ, "BACKUP_TEST_URI": server_production.uri},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as writer:
        try:
            assert writer.stdout is not None
            assert writer.stdout.readline().strip() == "writing"
            temp_dirs = [p for p in backups_dir.iterdir() if p.is_dir()]
            assert len(temp_dirs) == 1 and temp_dirs[0].name.startswith(".tmp-production_")
            partial = next(temp_dirs[0].rglob("big.bson.gz"))
            assert partial.stat().st_size > 0

            assert list_backups(backups_dir) == []
            assert clean_leftovers(backups_dir) == []  # its writer is alive: hands off
            assert temp_dirs[0].exists()
        finally:
            writer.send_signal(signal.SIGKILL)
            writer.wait()

    assert list_backups(backups_dir) == []
    removed = clean_leftovers(backups_dir)
    assert temp_dirs[0].name in removed
    assert list(backups_dir.iterdir()) == []


def test_an_error_while_writing_leaves_nothing_behind(backups_dir: Path) -> None:
    def docs() -> Iterator[bytes]:
        yield bson.encode({"_id": 1})
        raise RuntimeError("connection lost")

    with (
        pytest.raises(RuntimeError, match="connection lost"),
        BackupWriter(backups_dir, "local", "app", kind="full", compress="gzip") as writer,
    ):
        writer.write_collection(CollectionSpec("users"), docs())
        writer.commit()

    assert list(backups_dir.iterdir()) == []


def test_a_writer_left_without_commit_keeps_nothing(backups_dir: Path) -> None:
    with BackupWriter(backups_dir, "local", "app", kind="full", compress="none") as writer:
        writer.write_collection(CollectionSpec("users"), [bson.encode({"_id": 1})])

    assert list(backups_dir.iterdir()) == []


def test_full_disk_fails_with_a_space_message_and_keeps_nothing(
    db: Database[Any], tiny_disk: Path
) -> None:
    _fill_big(db, 3000)  # ~3 MB of incompressible data on a 1 MiB file system
    backups_dir = tiny_disk / "backups"

    with pytest.raises(BackupError) as caught:
        create_backup(db, "production", backups_dir, compress="gzip")

    message = str(caught.value)
    assert re.search(r"not enough space in .*: [\d.,]+ MB free", message)
    assert re.search(r"needs about [\d.]+ MB", message)
    assert "mongodb://" not in message
    assert list(backups_dir.iterdir()) == []
    db.big.delete_many({"_id": {"$gte": 10}})
    assert create_backup(db, "production", backups_dir, compress="gzip").verified


def test_corrupt_manifest_is_listed_as_not_verified(backups_dir: Path) -> None:
    good = _write(backups_dir, now=NOW)
    broken = _write(backups_dir, now=NOW + dt.timedelta(hours=1))
    (broken.path / "manifest.json").write_text('{"format": "syncd-backup/1", "kind": ')

    listed = list_backups(backups_dir)

    assert [b.name for b in listed] == [broken.name, good.name]
    assert [b.verified for b in listed] == [False, True]
    assert listed[0].endpoint == "local"
    assert listed[0].problem is not None and "manifest" in listed[0].problem
    assert json.loads(json.dumps([b.as_dict() for b in listed]))[0]["verified"] is False
    with pytest.raises(BackupError, match="cannot be read"):
        BackupSource(listed[0])


def test_missing_or_truncated_file_is_listed_as_not_verified(backups_dir: Path) -> None:
    truncated = _write(backups_dir, now=NOW)
    missing = _write(backups_dir, now=NOW + dt.timedelta(hours=1))
    path = truncated.path / truncated.collections["users"].file
    path.write_bytes(path.read_bytes()[:-3])
    (missing.path / missing.collections["users"].metadata_file).unlink()

    listed = {b.name: b for b in list_backups(backups_dir)}

    assert not listed[truncated.name].verified
    assert not listed[missing.name].verified
    assert "missing" in (listed[missing.name].problem or "")


def test_find_backup_names_the_closest_match(backups_dir: Path) -> None:
    info = _write(backups_dir)

    assert find_backup(backups_dir, info.name).name == info.name
    with pytest.raises(BackupError, match=r"did you mean 'local_20260111_103000'\?"):
        find_backup(backups_dir, "local_20260111_103001")
    with pytest.raises(BackupError, match="no backup named"):
        find_backup(backups_dir, "../etc")


def test_leftovers_of_interrupted_commits_and_deletions_are_cleaned(backups_dir: Path) -> None:
    kept = _write(backups_dir)
    # A writer killed between its rename and removing its lock file; a retention run
    # killed half-way through deleting a backup.
    (backups_dir / ".tmp-local_20260111_103000-999999-0a0b0c0d.lock").touch()
    trash = backups_dir / ".del-local_20260101_000000-999999-0a0b0c0d"
    (trash / "app").mkdir(parents=True)
    (trash / "app" / "users.bson.gz").write_bytes(b"\x00" * 10)

    removed = clean_leftovers(backups_dir)

    assert sorted(removed) == sorted(
        [".tmp-local_20260111_103000-999999-0a0b0c0d.lock", trash.name]
    )
    assert [p.name for p in backups_dir.iterdir()] == [kept.name]
