"""Writing one backup atomically.

The backup is written under a hidden temporary directory in BACKUPS_DIR, every file
fsynced, then the manifest, then everything is re-read and checked against the manifest;
only then is the directory fsynced, renamed to its final name and the parent fsynced.
Whatever happens before the rename (exception, full disk, kill -9, power cut) leaves at
most a hidden directory that `list_backups` ignores and `clean_leftovers` removes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gzip
import logging
import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Literal

from syncd import pause
from syncd.backup.errors import BackupError
from syncd.backup.fsio import (
    StreamFile,
    count_whole_documents,
    create_private_file,
    fsync_dir,
    make_private_dir,
    write_small_file,
)
from syncd.backup.layout import (
    MANIFEST,
    TMP_PREFIX,
    BackupInfo,
    CollectionEntry,
    Manifest,
    backup_name,
    bson_file,
    check_endpoint_name,
    inserted_ids_file,
    manifest_json,
    metadata_file,
    metadata_json,
    spec_to_bson,
)
from syncd.backup.reader import backup_problems, read_info
from syncd.backup.retention import clean_leftovers
from syncd.mongo.retry import is_transient
from syncd.mongo.source import CollectionSpec

log = logging.getLogger(__name__)

Progress = Callable[[str, int], None]  # (collection, documents written so far)
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_TAKEN = (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR)


def _mb(n: int) -> str:
    return f"{n / 1_000_000:,.1f}"


class BackupWriter:
    """One backup being written. Use as a context manager: an exception aborts it.

    Leaving the `with` block without `commit()` aborts too. `estimated_bytes` (optional,
    set by the caller) is only used to say how much space a backup needs.
    """

    def __init__(
        self,
        backups_dir: Path,
        endpoint: str,
        database: str,
        *,
        kind: Literal["full", "changes"],
        compress: Literal["gzip", "none"],
        reason: str | None = None,
        now: datetime | None = None,
    ) -> None:
        check_endpoint_name(endpoint)
        if not database or "/" in database or database.startswith("."):
            raise BackupError(f"cannot back up a database named {database!r}")
        if now is not None and now.tzinfo is None:
            raise ValueError("now must be an aware datetime")
        self.backups_dir = backups_dir
        self.estimated_bytes: int | None = None
        self._manifest = Manifest(
            endpoint=endpoint,
            database=database,
            kind=kind,
            created=(now or datetime.now(UTC)).astimezone(UTC),
            compress=compress,
            reason=reason,
        )
        self._state: Literal["open", "committed", "aborted"] = "open"
        self._streams: list[StreamFile] = []
        self._lock_fd: int | None = None
        token = f"{backup_name(endpoint, self._manifest.created)}-{os.getpid()}"
        self._tmp = backups_dir / f"{TMP_PREFIX}{token}-{secrets.token_hex(4)}"
        self._lock_path = backups_dir / f"{self._tmp.name}.lock"
        with self._guard():
            self._prepare()

    def _prepare(self) -> None:
        if not self.backups_dir.is_dir():
            self.backups_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.backups_dir, 0o700)
        clean_leftovers(self.backups_dir)
        self._lock_fd = create_private_file(self._lock_path)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        make_private_dir(self._tmp)
        make_private_dir(self._tmp / self._manifest.database)

    # -- context manager --------------------------------------------------------------

    def __enter__(self) -> BackupWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._state == "open":
            if exc_type is None:
                log.warning("backup of %s left without commit: discarded", self.endpoint)
            self.abort()

    @property
    def endpoint(self) -> str:
        return self._manifest.endpoint

    @property
    def _gzip(self) -> bool:
        return self._manifest.compress == "gzip"

    # -- writing ----------------------------------------------------------------------

    def write_collection(
        self,
        spec: CollectionSpec,
        raw_docs: Iterable[bytes],
        *,
        on_progress: Progress | None = None,
    ) -> None:
        """Stream a collection's documents and write its metadata.

        Each item of `raw_docs` holds one or more whole raw BSON documents back to back
        (one document, or a whole batch from `find_raw_batches`). A transient server error
        from `raw_docs` (see `is_transient`) leaves the backup open without this
        collection, so the caller may read it again from the start; any other error
        aborts the backup.
        """
        self._check_open()
        if spec.name in self._manifest.collections:
            raise ValueError(f"collection {spec.name} is already in this backup")
        with self._guard(retryable=True):
            db = self._manifest.database
            rel = bson_file(db, spec.name, self._manifest.compress)
            count, size, sha = self._write_stream(rel, spec.name, raw_docs, on_progress)
            meta_rel = metadata_file(db, spec.name, self._manifest.compress)
            meta = metadata_json(spec)
            if self._gzip:
                meta = gzip.compress(meta, mtime=0)
            meta_sha = write_small_file(self._tmp / meta_rel, meta)
        self._manifest.collections[spec.name] = CollectionEntry(
            count=count,
            bytes=size,
            sha256=sha,
            file=rel,
            metadata_file=meta_rel,
            metadata_sha256=meta_sha,
            spec_bson=spec_to_bson(spec),
        )
        log.info("backup %s: %s, %d documents, %s MB", self.endpoint, spec.name, count, _mb(size))

    def write_inserted_ids(self, collection: str, raw_id_docs: Iterable[bytes]) -> None:
        """For a "changes" backup: `{_id}` documents the sync is about to insert.

        Restoring the backup deletes them. Call after `write_collection` for the same
        collection (its before-images, possibly none).
        """
        self._check_open()
        if self._manifest.kind != "changes":
            raise ValueError("inserted ids belong in a 'changes' backup")
        entry = self._manifest.collections.get(collection)
        if entry is None:
            raise ValueError(f"write_collection({collection!r}) must come first")
        if entry.inserted_ids_file is not None:
            raise ValueError(f"inserted ids of {collection} are already written")
        with self._guard():
            rel = inserted_ids_file(self._manifest.database, collection, self._manifest.compress)
            count, size, sha = self._write_stream(rel, collection, raw_id_docs, None)
        entry.inserted_ids, entry.inserted_ids_file = count, rel
        entry.inserted_ids_bytes, entry.inserted_ids_sha256 = size, sha

    def mark_absent(self, collection: str) -> None:
        """Record that `collection` did not exist when the backup was taken.

        A restore can then drop what a later sync created under that name.
        """
        self._check_open()
        if collection not in self._manifest.absent:
            self._manifest.absent.append(collection)

    def _write_stream(
        self, rel: str, collection: str, items: Iterable[bytes], on_progress: Progress | None
    ) -> tuple[int, int, str]:
        stream = StreamFile(self._tmp / rel, self._gzip)
        self._streams.append(stream)
        count = 0
        for item in items:
            try:
                count += count_whole_documents(item)
            except ValueError as exc:
                raise BackupError(f"{collection}: not a BSON document stream ({exc})") from None
            stream.write(item)
            pause.point("backup.write")  # held the first time only: the first documents
            if on_progress is not None:
                on_progress(collection, count)
        sha = stream.finish()
        self._streams.remove(stream)
        return count, stream.bytes, sha

    # -- commit / abort ---------------------------------------------------------------

    def commit(self) -> BackupInfo:
        """Write the manifest, verify everything, and give the backup its final name."""
        self._check_open()
        with self._guard():
            write_small_file(self._tmp / MANIFEST, manifest_json(self._manifest))
            problems = backup_problems(self._tmp)
            if problems:
                raise BackupError(
                    f"backup of {self.endpoint} failed its verification ({problems[0]}); "
                    f"check the disk under {self.backups_dir} and run it again"
                )
            fsync_dir(self._tmp / self._manifest.database)
            fsync_dir(self._tmp)
            final = self._rename()
            fsync_dir(self.backups_dir)
        self._release_lock()
        self._state = "committed"
        info = read_info(final)
        log.info(
            "backup %s written: %d collections, %d documents, %s MB",
            info.name,
            len(info.collections),
            info.documents,
            _mb(info.size_bytes),
        )
        return info

    def _rename(self) -> Path:
        seq = 1
        while True:
            final = self.backups_dir / backup_name(self.endpoint, self._manifest.created, seq)
            if not os.path.lexists(final):
                try:
                    os.rename(self._tmp, final)
                    return final
                except OSError as exc:
                    if exc.errno not in _TAKEN:
                        raise
            seq += 1

    def abort(self) -> None:
        """Throw the unfinished backup away (nothing is ever listed)."""
        if self._state != "open":
            return
        self._state = "aborted"
        for stream in self._streams:
            stream.discard()
        self._streams.clear()
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._release_lock()

    def _release_lock(self) -> None:
        if self._lock_fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._lock_path)
        os.close(self._lock_fd)
        self._lock_fd = None

    def _check_open(self) -> None:
        if self._state != "open":
            raise ValueError(f"this backup is already {self._state}")

    @contextlib.contextmanager
    def _guard(self, *, retryable: bool = False) -> Iterator[None]:
        """Abort on any error; turn file-system errors into a `BackupError` that says why.

        With `retryable`, a transient server error only drops the partial stream."""
        try:
            yield
        except BaseException as exc:
            if retryable and isinstance(exc, Exception) and is_transient(exc):
                self._drop_partial()
                raise
            if isinstance(exc, OSError):
                written = self._written()
                self.abort()
                raise self._os_error(exc, written) from None
            self.abort()
            raise

    def _drop_partial(self) -> None:
        """Remove the streams being written (one collection's, cut short)."""
        for stream in self._streams:
            stream.discard()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(stream.path)
        self._streams.clear()

    def _written(self) -> int:
        done = sum(e.bytes + e.inserted_ids_bytes for e in self._manifest.collections.values())
        return done + sum(stream.bytes for stream in self._streams)

    def _os_error(self, exc: OSError, written: int) -> BackupError:
        if exc.errno not in _NO_SPACE:
            return BackupError(
                f"cannot write the backup of {self.endpoint} in {self.backups_dir}: "
                f"{exc.strerror or exc}; check that the directory is writable and run it again"
            )
        try:
            free = shutil.disk_usage(self.backups_dir).free
        except OSError:
            free = 0
        if self.estimated_bytes:
            need = f"about {_mb(self.estimated_bytes)} MB (uncompressed data size)"
        else:
            need = f"more than {_mb(written)} MB"
        return BackupError(
            f"not enough space in {self.backups_dir}: {_mb(free)} MB free, the backup of "
            f"{self.endpoint} needs {need}; nothing was kept. Free some space (or lower "
            "backups.keep_last) and run it again"
        )
