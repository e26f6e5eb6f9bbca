"""Reading backups: list, find, verify, and `BackupSource`, a backup as a `DocumentSource`.

`list_backups` checks each backup cheaply (manifest parses, every file it names is there
with its recorded size); `verify_backup` re-reads and re-hashes everything. A backup only
gets its final name after its writer verified it, so the cheap check catches what can
happen afterwards short of bit rot: deleted, truncated or hand-edited files.
"""

from __future__ import annotations

import difflib
import gzip
import hashlib
import logging
import os
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

import bson.errors
from bson.timestamp import Timestamp

from syncd.backup.errors import BackupError
from syncd.backup.fsio import FileStream
from syncd.backup.layout import (
    MANIFEST,
    BackupInfo,
    CollectionEntry,
    Manifest,
    parse_manifest,
    parse_name,
    spec_from_bson,
    spec_from_metadata,
)
from syncd.mongo.changestream import Drained, Router
from syncd.mongo.source import CollectionSpec

log = logging.getLogger(__name__)


def _file_sizes(path: Path) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for root, _dirs, files in os.walk(path):
        for name in files:
            full = Path(root, name)
            try:
                sizes[full.relative_to(path).as_posix()] = full.stat().st_size
            except OSError:
                continue
    return sizes


def _cheap_problem(manifest: Manifest, sizes: dict[str, int]) -> str | None:
    for name, entry in manifest.collections.items():
        expected = [(entry.file, entry.bytes), (entry.metadata_file, None)]
        if entry.inserted_ids_file is not None:
            expected.append((entry.inserted_ids_file, entry.inserted_ids_bytes))
        for rel, size in expected:
            if rel not in sizes:
                return f"{name}: {rel} is missing"
            if size is not None and sizes[rel] != size:
                return f"{name}: {rel} has {sizes[rel]} bytes, the manifest says {size}"
    return None


def _unreadable(path: Path, size: int, problem: str) -> BackupInfo:
    parsed = parse_name(path.name)
    if parsed is not None:
        endpoint, created = parsed
    else:
        endpoint = ""
        try:
            created = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        except OSError:
            created = datetime.fromtimestamp(0, UTC)
    return BackupInfo(
        name=path.name,
        path=path,
        endpoint=endpoint,
        database="",
        kind="full",
        created=created,
        collections={},
        size_bytes=size,
        verified=False,
        problem=problem,
    )


def read_info(path: Path) -> BackupInfo:
    """What a backup directory holds, checked cheaply. Never raises for a broken backup."""
    sizes = _file_sizes(path)
    size = sum(sizes.values())
    try:
        manifest = parse_manifest((path / MANIFEST).read_bytes())
    except FileNotFoundError:
        return _unreadable(path, size, "no manifest.json (not a complete syncd backup)")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return _unreadable(path, size, f"manifest.json is unreadable ({type(exc).__name__})")
    problem = _cheap_problem(manifest, sizes)
    return BackupInfo(
        name=path.name,
        path=path,
        endpoint=manifest.endpoint,
        database=manifest.database,
        kind=manifest.kind,
        created=manifest.created,
        collections=manifest.collections,
        size_bytes=size,
        verified=problem is None,
        reason=manifest.reason,
        compress=manifest.compress,
        absent=tuple(manifest.absent),
        syncd_version=manifest.syncd_version,
        problem=problem,
    )


def list_backups(backups_dir: Path) -> list[BackupInfo]:
    """Complete backups (not the hidden work-in-progress ones), newest first."""
    try:
        entries = [e for e in os.scandir(backups_dir) if not e.name.startswith(".")]
    except FileNotFoundError:
        return []
    infos = [read_info(Path(e.path)) for e in entries if e.is_dir(follow_symlinks=False)]
    return sorted(infos, key=lambda info: (info.created, info.name), reverse=True)


def find_backup(backups_dir: Path, name: str) -> BackupInfo:
    """The backup called `name` (verified or not: callers decide what to do with a bad one)."""
    if name and not name.startswith(".") and "/" not in name:
        path = backups_dir / name
        if path.is_dir() and not path.is_symlink():
            return read_info(path)
    names = [info.name for info in list_backups(backups_dir)]
    hint = difflib.get_close_matches(name, names, n=1)
    message = f"no backup named {name!r} in {backups_dir}"
    if hint:
        message += f"; did you mean {hint[0]!r}?"
    raise BackupError(message + " (`syncd backup list` shows them all)")


def _check_stream(
    label: str, path: Path, gzip_: bool, count: int, size: int, sha: str
) -> str | None:
    stream = FileStream(path, gzip_)
    try:
        found = stream.count_documents()
    except (OSError, ValueError) as exc:
        return f"{label}: {exc}"
    if stream.bytes != size or stream.sha256 != sha:
        return f"{label}: {path.name} does not match its checksum (changed or damaged on disk)"
    if found != count:
        return f"{label}: {path.name} holds {found} documents, the manifest says {count}"
    return None


def _check_entry(root: Path, name: str, entry: CollectionEntry, gzip_: bool) -> list[str]:
    problems = []
    problem = _check_stream(name, root / entry.file, gzip_, entry.count, entry.bytes, entry.sha256)
    if problem:
        problems.append(problem)
    if entry.inserted_ids_file is not None:
        problem = _check_stream(
            f"{name} (inserted ids)",
            root / entry.inserted_ids_file,
            gzip_,
            entry.inserted_ids,
            entry.inserted_ids_bytes,
            entry.inserted_ids_sha256 or "",
        )
        if problem:
            problems.append(problem)
    try:
        data = (root / entry.metadata_file).read_bytes()
        if hashlib.sha256(data).hexdigest() != entry.metadata_sha256:
            problems.append(f"{name}: {entry.metadata_file} does not match its checksum")
        else:
            spec_from_metadata(gzip.decompress(data) if gzip_ else data, name)
        if entry.spec_bson:
            spec_from_bson(entry.spec_bson, name, None)
    except (OSError, ValueError, EOFError, KeyError, bson.errors.BSONError) as exc:
        problems.append(f"{name}: metadata unreadable ({exc})")
    return problems


def backup_problems(path: Path) -> list[str]:
    """Everything wrong with the backup at `path`, re-reading every byte; [] when it is good."""
    try:
        manifest = parse_manifest((path / MANIFEST).read_bytes())
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return [f"manifest.json is unreadable ({type(exc).__name__})"]
    problems: list[str] = []
    for name, entry in manifest.collections.items():
        problems += _check_entry(path, name, entry, manifest.compress == "gzip")
    return problems


def verify_backup(info: BackupInfo) -> bool:
    """Re-hash and re-count the whole backup (what `backup list --verify` shows)."""
    problems = backup_problems(info.path)
    for problem in problems:
        log.warning("backup %s: %s", info.name, problem)
    return not problems


class BackupSource:
    """A backup as a read-only `DocumentSource`, independent of the database it came from.

    `iter_raw` streams a collection and, at its end, checks the file against its sha256
    and count, raising `BackupError` on a mismatch.
    """

    def __init__(self, info: BackupInfo) -> None:
        if info.problem is not None and not info.collections:
            raise BackupError(f"backup {info.name} cannot be read: {info.problem}")
        self.info = info
        self.label = f"backup {info.name}"

    def list_collections(self) -> list[str]:
        return list(self.info.collections)

    def _entry(self, name: str) -> CollectionEntry | None:
        return self.info.collections.get(name)

    def collection_spec(self, name: str) -> CollectionSpec | None:
        entry = self._entry(name)
        if entry is None:
            return None
        try:
            data = (self.info.path / entry.metadata_file).read_bytes()
            if self.info.compress == "gzip":
                data = gzip.decompress(data)
            spec = spec_from_metadata(data, name)
            if entry.spec_bson:
                spec = spec_from_bson(entry.spec_bson, name, spec.uuid)
            return spec
        except (OSError, ValueError, EOFError, KeyError, bson.errors.BSONError) as exc:
            raise BackupError(
                f"backup {self.info.name}: metadata of {name} is unreadable ({exc}); "
                "pick another backup (`syncd backup list`)"
            ) from None

    def count(self, name: str) -> int:
        entry = self._entry(name)
        return entry.count if entry is not None else 0

    def changes_unsupported(self) -> str | None:
        return "a backup has no change stream"

    def server_version(self) -> tuple[int, ...]:
        return ()  # no server: every option and index field is kept

    def current_token(self) -> bytes:
        raise BackupError(f"{self.label} has no change stream")

    def read_changes(
        self,
        token: bytes,
        names: list[str],
        route: Router,
        limit: int | None = None,
        *,
        budgets: Mapping[str, int] | None = None,
        fence: Timestamp | None = None,
    ) -> Drained:
        raise BackupError(f"{self.label} has no change stream")

    def fetch(self, name: str, ids: list[object]) -> list[bytes]:
        raise BackupError(f"{self.label} is read whole, not by _id")

    def iter_raw(self, name: str) -> Iterator[bytes]:
        entry = self._entry(name)
        if entry is None:
            return iter(())
        return self._stream(name, entry.file, entry.count, entry.bytes, entry.sha256)

    def inserted_ids(self, name: str) -> Iterator[bytes]:
        """`{_id: ...}` documents of what the sync behind a "changes" backup inserted."""
        entry = self._entry(name)
        if entry is None or entry.inserted_ids_file is None:
            return iter(())
        return self._stream(
            name,
            entry.inserted_ids_file,
            entry.inserted_ids,
            entry.inserted_ids_bytes,
            entry.inserted_ids_sha256 or "",
        )

    def _stream(self, name: str, rel: str, count: int, size: int, sha: str) -> Iterator[bytes]:
        stream = FileStream(self.info.path / rel, self.info.compress == "gzip")
        seen = 0
        try:
            for doc in stream.documents():
                seen += 1
                yield doc
        except (OSError, ValueError) as exc:
            raise self._damaged(name, str(exc)) from None
        if stream.bytes != size or stream.sha256 != sha:
            raise self._damaged(name, f"{rel} does not match its checksum")
        if seen != count:
            raise self._damaged(name, f"{rel} holds {seen} documents, expected {count}")

    def _damaged(self, name: str, what: str) -> BackupError:
        return BackupError(
            f"backup {self.info.name} is damaged ({name}: {what}); "
            "pick another backup (`syncd backup list --verify`)"
        )
