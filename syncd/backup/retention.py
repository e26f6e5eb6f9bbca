"""Keeping backups tidy: retention, restore locks, leftovers of killed writers.

Locks are `flock(2)` locks, so the kernel drops them when their holder dies, however it
dies; they work across processes (and across PID namespaces sharing the directory).

- A writer holds `.tmp-NAME-PID-RAND.lock` (beside its `.tmp-NAME-PID-RAND/` directory)
  exclusively until it has renamed its directory to NAME. `clean_leftovers` removes a
  temporary directory only when it can take that lock, i.e. when its writer is gone.
- A restore holds `NAME/.restore.lock` shared (`restore_lock`); retention takes it
  exclusively, without waiting, before it deletes a backup, and skips the backup if it
  cannot. The backup is first renamed to a hidden `.del-...` name, so a half-deleted
  backup is never listed, and whatever is left of it is cleaned later.

Retention policy, per endpoint (`apply_retention`):
- keep the newest `keep_last` verified backups (at least one, whatever `keep_last` says);
- delete older verified ones;
- delete an unverified (damaged, incomplete) backup only when it is older than the newest
  verified one: it is superseded. A damaged backup newer than every good one is kept so
  someone can look at it; it goes once a newer good backup exists.
- never delete a backup named in `in_use` or held by a restore.
Every kind ("full", "changes") counts towards `keep_last`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import shutil
from collections.abc import Collection, Iterator
from pathlib import Path

from syncd.backup.errors import BackupError
from syncd.backup.fsio import fsync_dir
from syncd.backup.layout import RESTORE_LOCK, TMP_PREFIX, TRASH_PREFIX, BackupInfo
from syncd.backup.reader import list_backups
from syncd.util import pid_alive

log = logging.getLogger(__name__)


def _pid_in_name(name: str) -> int | None:
    """The writer's pid in `.tmp-NAME-PID-RAND`, for when its lock file has gone."""
    parts = name.rsplit("-", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


@contextlib.contextmanager
def _exclusive_nowait(path: Path, *, create: bool) -> Iterator[bool]:
    """Yield True holding an exclusive lock on `path`; False when someone else holds it.

    Raises FileNotFoundError when the file (or its directory) does not exist.
    """
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    fd = os.open(path, flags, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _writer_gone(backups_dir: Path, tmp_name: str) -> bool:
    try:
        with _exclusive_nowait(backups_dir / f"{tmp_name}.lock", create=False) as free:
            return free
    except FileNotFoundError:
        return not pid_alive(_pid_in_name(tmp_name))


def _remove_tree(path: Path) -> bool:
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.warning("could not remove %s: %s", path, exc.strerror)
        return False
    return True


def _clean_entry(backups_dir: Path, entry: os.DirEntry[str]) -> bool:
    name = entry.name
    is_dir = entry.is_dir(follow_symlinks=False)
    if name.startswith(TMP_PREFIX) and is_dir:
        if not _writer_gone(backups_dir, name):
            return False
        removed = _remove_tree(Path(entry.path))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(backups_dir / f"{name}.lock")
        return removed
    if name.startswith(TMP_PREFIX) and name.endswith(".lock") and not is_dir:
        if (backups_dir / name.removesuffix(".lock")).exists():
            return False  # its directory is handled above
        with _exclusive_nowait(Path(entry.path), create=False) as free:
            if free:
                os.unlink(entry.path)
            return free
    if name.startswith(TRASH_PREFIX) and is_dir:
        with _exclusive_nowait(Path(entry.path, RESTORE_LOCK), create=True) as free:
            return free and _remove_tree(Path(entry.path))
    return False


def clean_leftovers(backups_dir: Path) -> list[str]:
    """Remove what killed writers and interrupted deletions left; return the names removed."""
    removed: list[str] = []
    try:
        entries = list(os.scandir(backups_dir))
    except FileNotFoundError:
        return removed
    for entry in entries:
        try:
            if _clean_entry(backups_dir, entry):
                removed.append(entry.name)
        except FileNotFoundError:
            continue  # someone else got there first
    for name in removed:
        log.info("removed leftover %s from an interrupted backup", name)
    return removed


@contextlib.contextmanager
def restore_lock(info: BackupInfo) -> Iterator[None]:
    """Hold while reading a backup for a restore: retention will not delete it meanwhile."""
    path = info.path / RESTORE_LOCK
    gone = BackupError(
        f"backup {info.name} no longer exists (removed by retention?); "
        "pick another one from `syncd backup list`"
    )
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:
        raise gone from None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        try:
            still_there = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            still_there = False
        if not still_there:  # retention renamed it away while we waited
            raise gone
        yield
    finally:
        os.close(fd)


def _delete_backup(backups_dir: Path, info: BackupInfo) -> bool:
    try:
        with _exclusive_nowait(info.path / RESTORE_LOCK, create=True) as free:
            if not free:
                log.info("retention: keeping %s, a restore is reading it", info.name)
                return False
            trash = backups_dir / f"{TRASH_PREFIX}{info.name}-{os.getpid()}-{secrets.token_hex(4)}"
            os.rename(info.path, trash)
            fsync_dir(backups_dir)
    except FileNotFoundError:
        return False  # already gone
    _remove_tree(trash)  # if this fails, clean_leftovers retries; it is no longer listed
    return True


def apply_retention(
    backups_dir: Path, endpoint: str, keep_last: int, *, in_use: Collection[str] = ()
) -> list[str]:
    """Delete what the retention policy (module docstring) lets go; return the names removed."""
    clean_leftovers(backups_dir)
    backups = [b for b in list_backups(backups_dir) if b.endpoint == endpoint]
    good = [b for b in backups if b.verified]
    keep = {b.name for b in good[: max(keep_last, 1)]}
    newest_good = good[0].created if good else None
    removed: list[str] = []
    for backup in backups:
        if backup.name in keep or backup.name in in_use:
            continue
        superseded = newest_good is not None and backup.created < newest_good
        if (backup.verified or superseded) and _delete_backup(backups_dir, backup):
            removed.append(backup.name)
            log.info("retention: removed backup %s", backup.name)
    return removed
