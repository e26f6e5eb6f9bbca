"""Kills and full disks, for real: the production server SIGKILLed mid-sync and restarted,
`syncd backup create` and `syncd backup restore` SIGKILLed part-way, and a backup folder
(or the whole state directory) on a tiny tmpfs that fills up before the sync may write.

Each time the state left behind must be safe: no half backup listed, the target either
untouched or converging on the next run, the sync memory unchanged by a run that wrote
nothing, and a message that says what happened and what to do, never a traceback.
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bson import Binary
from pymongo.database import Database

from syncd.backup import list_backups
from syncd.state.statedir import StateDir
from tests.engine_kit import (
    Outcome,
    Pair,
    backup_contents,
    make_pair,
    snapshot,
    start_syncd,
    syncd,
)
from tests.support.pause import Holds, during, kill_at
from tests.support.servers import MongoServer

Capsys = pytest.CaptureFixture[str]
PUSH = ("sync", "to_production", "--yes")
# Each attempt against a dead server ends within seconds instead of syncd's defaults.
SHORT = "&serverSelectionTimeoutMS=2000&connectTimeoutMS=2000&socketTimeoutMS=5000"


# -- helpers ------------------------------------------------------------------------------


def fill(db: Database[Any], count: int, *, pad: int = 200, version: int = 1) -> None:
    for start in range(0, count, 5000):
        db.items.insert_many(
            [
                {"_id": i, "v": version, "pad": "x" * pad}
                for i in range(start, min(count, start + 5000))
            ]
        )


def fill_random(db: Database[Any], count: int) -> None:
    """~1 kB of incompressible bytes per document: gzip cannot shrink the backup."""
    db.items.insert_many({"_id": i, "v": 1, "blob": Binary(os.urandom(1000))} for i in range(count))


def last_line(result: Outcome) -> str:
    return result.err.strip().splitlines()[-1]


def hidden_entries(backups: Path) -> list[str]:
    """Temporary backup directories and lock files (what a killed writer leaves)."""
    return sorted(p.name for p in backups.iterdir() if p.name.startswith("."))


def memory_rows(state_dir: Path) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(f"file:{StateDir(state_dir).memory_path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {
            t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall())  # noqa: S608
            for t in sorted(tables)
            if not t.startswith("sqlite_")
        }
    finally:
        conn.close()


@contextlib.contextmanager
def tiny_tmpfs(mount_point: Path, size: str = "1m") -> Iterator[Path]:
    """A real small file system (tmpfs) at `mount_point`, to run out of space for real."""
    mount_point.mkdir(parents=True, exist_ok=True, mode=0o700)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        # The sync ran in this process: files its failed run had open are closed once the
        # frames of its exception are collected (pytest keeps the traceback a while).
        gc.collect()
        subprocess.run(["umount", str(mount_point)], check=True)


# -- the production server dies mid-sync ------------------------------------------------


@pytest.mark.slow
def test_production_killed_mid_sync_and_restarted_then_the_rerun_converges(
    local_db: Database[Any],
    local_uri: str,
    mongo_server_factory: Callable[..., MongoServer],
    tmp_path: Path,
    capsys: Capsys,
) -> None:
    """SIGKILL (a crash, the OOM killer) while syncd inserts, restarted at once: the sync
    either rides it out on its retries or fails cleanly; the next run converges."""
    server = mongo_server_factory()
    fill(local_db, 10_000)
    with server.client() as client:
        production = client["prod"]
        pair = make_pair(
            local_db, production, local_uri, server.uri_for("prod") + SHORT, tmp_path, hook=False
        )

        at_kill: list[int] = []

        def crash_and_restart() -> None:
            at_kill.append(production.items.count_documents({}))
            server.kill()
            server.restart()

        with during(tmp_path, {"write.batch": crash_and_restart}):
            result = syncd(capsys, pair.config, *PUSH)
        assert server.is_running
        assert at_kill and 0 < at_kill[0] < 10_000, "killed mid-way"

        assert result.code in (0, 1), result.text
        assert "Traceback" not in result.text
        if result.code == 1:
            message = last_line(result)
            assert re.match(r"syncd: \w+ items on 'production' \(mongodb://127\.0\.0\.1:", message)
            assert f":{server.port}/prod" in message

        rerun = syncd(capsys, pair.config, *PUSH)

        assert rerun.code == 0, rerun.text
        assert "duplicate key" not in rerun.text.lower()
        assert "0 drifted" in rerun.out
        assert snapshot(production) == snapshot(local_db)


# -- syncd killed while writing a backup or restoring one -------------------------------


def partial_backup_file(backups: Path) -> bool:
    """A hidden (temporary) backup directory with a collection file already on disk."""
    if not backups.is_dir():
        return False
    return any(
        f.stat().st_size > 0 for d in backups.glob(".tmp-*") if d.is_dir() for f in d.rglob("*.gz")
    )


@pytest.mark.slow
def test_a_killed_backup_is_never_listed_and_the_next_backup_cleans_it(
    pair: Pair, capsys: Capsys
) -> None:
    fill_random(pair.production, 10_000)  # ~10 MB that gzip cannot shrink
    log = pair.root / "backup.log"

    holds = Holds.at(pair.root, "backup.write")
    proc = start_syncd(pair, log, "backup", "create", "production", holds=holds)
    kill_at(proc, holds, "backup.write")
    assert partial_backup_file(pair.backups)

    assert hidden_entries(pair.backups), "the killed writer left its temporary directory"
    listed = syncd(capsys, pair.config, "backup", "list", "--json")
    assert listed.code == 0 and listed.out.strip() == "[]"

    created = syncd(capsys, pair.config, "backup", "create", "production")

    assert created.code == 0, created.err
    assert hidden_entries(pair.backups) == []
    [backup] = list_backups(pair.backups)
    assert backup.verified and backup.collections["items"].count == 10_000
    assert backup_contents(pair)[backup.name] == snapshot(pair.production)


@pytest.mark.slow
@pytest.mark.usefixtures("short_lease")  # the killed restore's lease expires in seconds
def test_a_killed_restore_leaves_a_target_the_same_restore_converges_from(
    pair: Pair, capsys: Capsys
) -> None:
    fill(pair.production, 4_000)
    assert syncd(capsys, pair.config, "backup", "create", "production").code == 0
    [good] = list_backups(pair.backups)
    pair.production.items.update_many({}, {"$set": {"v": 2}})
    pair.production.items.delete_many({"_id": {"$gte": 3_900}})
    pair.production.items.insert_many([{"_id": f"new-{i}", "v": 2} for i in range(100)])
    before_restore = snapshot(pair.production)
    log = pair.root / "restore.log"

    holds = Holds.at(pair.root, "write.batch")
    proc = start_syncd(pair, log, "backup", "restore", good.name, "--yes", holds=holds)
    kill_at(proc, holds, "write.batch")
    assert pair.production.items.find_one({"v": 1}) is not None, "the restore began writing"

    assert pair.production.items.count_documents({"v": 2}) > 0, "killed mid-way"
    safety = [b for b in list_backups(pair.backups) if b.name != good.name]
    assert [b.reason for b in safety] == [f"before restore of {good.name}"]
    assert safety[0].verified
    assert backup_contents(pair)[safety[0].name] == before_restore
    assert hidden_entries(pair.backups) == []
    listed = syncd(capsys, pair.config, "backup", "list", "--verify")
    assert listed.code == 0 and "NO (" not in listed.out

    rerun = syncd(capsys, pair.config, "backup", "restore", good.name, "--yes")

    assert rerun.code == 0, rerun.text
    assert "took over the write lease of 'production'" in rerun.err  # the killed restore's
    assert "duplicate key" not in rerun.text.lower()
    assert snapshot(pair.production) == backup_contents(pair)[good.name]


# -- no space for the backup a sync must take first -------------------------------------


def pushed_then_changed(pair: Pair, capsys: Capsys) -> None:
    """Production got ~3 MB by a first push (no backup needed); then every local document
    changes, so the next push replaces them all and must back production up first."""
    fill_random(pair.local, 3_000)
    first = syncd(capsys, pair.config, *PUSH)
    assert first.code == 0, first.err
    assert not pair.backups.exists() or not any(pair.backups.iterdir())
    pair.local.items.update_many({}, {"$set": {"v": 2}})


def assert_nothing_written(
    pair: Pair, target: dict[str, Any], memory: dict[str, Any], result: Outcome
) -> None:
    assert result.code == 1, result.text
    assert "Traceback" not in result.text
    assert snapshot(pair.production) == target
    assert memory_rows(pair.state_dir) == memory


def test_no_space_for_the_backup_before_a_sync_means_no_sync(pair: Pair, capsys: Capsys) -> None:
    pushed_then_changed(pair, capsys)
    target, memory = snapshot(pair.production), memory_rows(pair.state_dir)

    with tiny_tmpfs(pair.backups):
        result = syncd(capsys, pair.config, *PUSH)

        assert_nothing_written(pair, target, memory, result)
        message = last_line(result)
        assert re.search(
            rf"not enough space in {re.escape(str(pair.backups))}: [\d.]+ MB free", message
        )
        assert "needs about" in message and "Free some space" in message
        assert "nothing was written to 'production'" in message
        assert list(pair.backups.iterdir()) == []

    rerun = syncd(capsys, pair.config, *PUSH)  # the space is back

    assert rerun.code == 0, rerun.err
    assert snapshot(pair.production) == snapshot(pair.local)


def test_a_full_state_directory_fails_the_sync_before_it_writes(pair: Pair, capsys: Capsys) -> None:
    """The whole state directory (memory, scratch, backups) on a small disk that the
    sync's scratch files and backup do not fit in."""
    pushed_then_changed(pair, capsys)
    target, memory = snapshot(pair.production), memory_rows(pair.state_dir)
    saved = pair.root / "state.saved"
    shutil.copytree(pair.state_dir, saved)

    with tiny_tmpfs(pair.state_dir, size="2m"):
        shutil.copytree(saved, pair.state_dir, dirs_exist_ok=True)
        result = syncd(capsys, pair.config, *PUSH)

        assert_nothing_written(pair, target, memory, result)
        message = last_line(result)
        assert re.search(r"(no|not enough) space", message), message
        assert str(pair.state_dir) in message
