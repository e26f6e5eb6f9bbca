"""Retention: keep the newest `keep_last` good backups per endpoint, and never the wrong one."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import bson
import pytest

from syncd.backup import (
    BackupError,
    BackupInfo,
    BackupWriter,
    apply_retention,
    list_backups,
    restore_lock,
)
from syncd.mongo.source import CollectionSpec

START = dt.datetime(2026, 1, 11, 3, 0, tzinfo=dt.UTC)

# Holds a restore lock on a backup (in another process) until its stdin closes.
RESTORING = r"""
import sys
from pathlib import Path
from syncd.backup import find_backup, restore_lock

with restore_lock(find_backup(Path(sys.argv[1]), sys.argv[2])):
    print("restoring", flush=True)
    sys.stdin.readline()
"""


def _backup(backups_dir: Path, endpoint: str, hours: int) -> BackupInfo:
    now = START + dt.timedelta(hours=hours)
    with BackupWriter(backups_dir, endpoint, "app", kind="full", compress="none", now=now) as w:
        w.write_collection(CollectionSpec("users"), [bson.encode({"_id": hours})])
        return w.commit()


def _damage(info: BackupInfo) -> None:
    (info.path / "manifest.json").write_text("not json")


def _names(backups_dir: Path, endpoint: str) -> list[str]:
    return [b.name for b in list_backups(backups_dir) if b.endpoint == endpoint]


@pytest.fixture
def backups_dir(tmp_path: Path) -> Path:
    return tmp_path / "backups"


def test_keeps_the_newest_verified_backups_of_that_endpoint_only(backups_dir: Path) -> None:
    local = [_backup(backups_dir, "local", h) for h in range(7)]
    production = [_backup(backups_dir, "production", h) for h in range(3)]

    removed = apply_retention(backups_dir, "local", 5)

    assert sorted(removed) == [local[0].name, local[1].name]
    assert _names(backups_dir, "local") == [b.name for b in reversed(local[2:])]
    assert _names(backups_dir, "production") == [b.name for b in reversed(production)]
    assert [p.name for p in backups_dir.iterdir() if p.name.startswith(".")] == []


def test_damaged_backups_do_not_count_and_go_once_superseded(backups_dir: Path) -> None:
    old_damaged = _backup(backups_dir, "local", 0)
    good = [_backup(backups_dir, "local", h) for h in (1, 2, 3)]
    new_damaged = _backup(backups_dir, "local", 4)
    _damage(old_damaged)
    _damage(new_damaged)

    removed = apply_retention(backups_dir, "local", 2)

    # The newest damaged one stays for inspection; the good ones kept are still two.
    assert sorted(removed) == sorted([old_damaged.name, good[0].name])
    assert _names(backups_dir, "local") == [new_damaged.name, good[2].name, good[1].name]


def test_never_deletes_the_only_good_backup(backups_dir: Path) -> None:
    good = _backup(backups_dir, "local", 0)
    damaged = [_backup(backups_dir, "local", h) for h in (1, 2)]
    for info in damaged:
        _damage(info)

    assert apply_retention(backups_dir, "local", 0) == []
    assert good.name in _names(backups_dir, "local")


def test_keeps_backups_named_in_use(backups_dir: Path) -> None:
    infos = [_backup(backups_dir, "local", h) for h in range(4)]

    removed = apply_retention(backups_dir, "local", 1, in_use={infos[0].name})

    assert sorted(removed) == [infos[1].name, infos[2].name]
    assert _names(backups_dir, "local") == [infos[3].name, infos[0].name]


def test_keeps_a_backup_that_another_process_is_restoring(backups_dir: Path) -> None:
    infos = [_backup(backups_dir, "local", h) for h in range(3)]
    with subprocess.Popen(
        [sys.executable, "-c", RESTORING, str(backups_dir), infos[0].name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as restore:
        assert restore.stdout is not None and restore.stdin is not None
        assert restore.stdout.readline().strip() == "restoring"

        assert apply_retention(backups_dir, "local", 1) == [infos[1].name]
        assert infos[0].path.is_dir()

        restore.stdin.close()
        assert restore.wait() == 0

    assert apply_retention(backups_dir, "local", 1) == [infos[0].name]
    assert _names(backups_dir, "local") == [infos[2].name]


def test_restore_lock_on_a_removed_backup_says_so(backups_dir: Path) -> None:
    infos = [_backup(backups_dir, "local", h) for h in range(2)]
    apply_retention(backups_dir, "local", 1)

    with pytest.raises(BackupError, match="no longer exists"), restore_lock(infos[0]):
        pass
    with restore_lock(infos[1]):
        assert apply_retention(backups_dir, "local", 1) == []
