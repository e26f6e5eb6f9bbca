"""Files of a backup: private, fsynced, hashed as written, streamed in chunks both ways."""

from __future__ import annotations

import contextlib
import hashlib
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

CHUNK = 1 << 20  # bytes per write/read: the memory a stream holds, whatever the backup size
GZIP_LEVEL = 6  # zlib's default, what `mongodump --gzip` (Go compress/gzip) uses too
_GZIP_WBITS = 31  # zlib container = gzip header and trailer


def make_private_dir(path: Path) -> None:
    os.mkdir(path, 0o700)
    os.chmod(path, 0o700)  # explicitly: the umask could have taken bits away, never added


def create_private_file(path: Path) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)
    return fd


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StreamFile:
    """A new 0600 file written in chunks, gzip-compressed or not, hashed as it goes out."""

    def __init__(self, path: Path, gzip: bool) -> None:
        self.path = path
        self.bytes = 0
        self._sha = hashlib.sha256()
        self._buffer = bytearray()
        self._zip = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS) if gzip else None
        self._fd: int | None = create_private_file(path)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._buffer += data
        if len(self._buffer) >= CHUNK:
            self._drain()

    def _drain(self) -> None:
        data = self._zip.compress(self._buffer) if self._zip is not None else bytes(self._buffer)
        self._buffer.clear()
        self._emit(data)

    def _emit(self, data: bytes) -> None:
        if not data or self._fd is None:
            return
        self._sha.update(data)
        self.bytes += len(data)
        write_all(self._fd, data)

    def finish(self) -> str:
        """Flush, fsync and close; return the sha256 of the file's bytes."""
        self._drain()
        if self._zip is not None:
            self._emit(self._zip.flush())
        if self._fd is None:
            raise ValueError(f"{self.path.name} is already closed")
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        return self._sha.hexdigest()

    def discard(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def write_small_file(path: Path, data: bytes) -> str:
    """Write, fsync and close a whole small file (metadata, manifest); return its sha256."""
    fd = create_private_file(path)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return hashlib.sha256(data).hexdigest()


# -- BSON framing -----------------------------------------------------------------------


def scan_documents(data: bytes | bytearray | memoryview, start: int = 0) -> tuple[int, int]:
    """Count the whole BSON documents from `start`; return (count, offset after the last).

    Checks only the framing (int32 length, trailing NUL); documents are not decoded.
    Raises ValueError on a length that cannot be a document.
    """
    view = memoryview(data)
    end = len(view)
    offset = start
    count = 0
    while end - offset >= 4:
        size = int.from_bytes(view[offset : offset + 4], "little")
        if size < 5:
            raise ValueError(f"invalid BSON document length {size} at byte {offset}")
        if offset + size > end:
            break
        if view[offset + size - 1] != 0:
            raise ValueError(f"BSON document at byte {offset} does not end with NUL")
        offset += size
        count += 1
    return count, offset


def count_whole_documents(data: bytes | bytearray | memoryview) -> int:
    """Number of documents in `data`, which must hold whole documents only."""
    count, offset = scan_documents(data)
    if offset != len(data):
        raise ValueError("data ends inside a BSON document")
    return count


class FileStream:
    """Reads a backup file in chunks (decompressing gzip); hashes the bytes on disk."""

    def __init__(self, path: Path, gzip: bool) -> None:
        self.path = path
        self.gzip = gzip
        self.bytes = 0
        self._sha = hashlib.sha256()

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def chunks(self) -> Iterator[bytes]:
        try:
            yield from self._chunks()
        except zlib.error as exc:
            raise ValueError(f"{self.path.name} is not a valid gzip file: {exc}") from None

    def _chunks(self) -> Iterator[bytes]:
        with open(self.path, "rb") as handle:
            unzip = zlib.decompressobj(_GZIP_WBITS) if self.gzip else None
            while raw := handle.read(CHUNK):
                self._sha.update(raw)
                self.bytes += len(raw)
                if unzip is None:
                    yield raw
                    continue
                yield unzip.decompress(raw)
                while unzip.eof and unzip.unused_data:  # a further gzip member
                    rest = unzip.unused_data
                    unzip = zlib.decompressobj(_GZIP_WBITS)
                    yield unzip.decompress(rest)
            if unzip is not None:
                if not unzip.eof:
                    raise ValueError(f"{self.path.name} is a truncated gzip file")
                yield unzip.flush()

    def documents(self) -> Iterator[bytes]:
        """Each raw BSON document of the file, never holding more than a chunk or two."""
        pending = bytearray()
        for chunk in self.chunks():
            pending += chunk
            view = memoryview(pending)
            offset = 0
            while len(pending) - offset >= 4:
                size = int.from_bytes(view[offset : offset + 4], "little")
                if size < 5:
                    raise ValueError(f"{self.path.name}: invalid BSON document length {size}")
                if offset + size > len(pending):
                    break
                yield bytes(view[offset : offset + size])
                offset += size
            view.release()
            del pending[:offset]
        if pending:
            raise ValueError(f"{self.path.name} ends inside a BSON document")

    def count_documents(self) -> int:
        """Read the whole file; return its document count (framing checked)."""
        pending = bytearray()
        total = 0
        for chunk in self.chunks():
            pending += chunk
            count, offset = scan_documents(pending)
            total += count
            del pending[:offset]
        if pending:
            raise ValueError(f"{self.path.name} ends inside a BSON document")
        return total
