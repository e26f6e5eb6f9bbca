"""`syncd backup import`: a mongodump directory of one database into the backup store.

The layout read is the one of mongodump from MongoDB Database Tools 100.x (`--out`
directory mode, not `--archive`):

    DUMP/DB/COLL.bson                  concatenated BSON documents
    DUMP/DB/COLL.metadata.json         canonical Extended JSON: options, indexes, uuid,
                                       collectionName
    with --gzip: COLL.bson.gz and COLL.metadata.json.gz (both compressed)

PATH is the dump root holding one database folder, or that folder itself. File names are
collection names escaped as Go's url.PathEscape does (`file_stem`); the metadata's
`collectionName` wins where a long name was shortened. Views (metadata only, with
`viewOn`), time-series collections and `system.*` collections are left out, as syncd
never syncs them; files mongodump writes beside the data (`prelude.json`, `oplog.bson`)
and unknown files are ignored, as mongorestore ignores them.

Nothing under PATH is written. Every document is checked (framing, an `_id`) while it is
copied into a new backup, which is written and verified like any other (`BackupWriter`):
an unreadable or damaged dump aborts the import and leaves nothing behind.
"""

from __future__ import annotations

import gzip
import logging
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal
from urllib.parse import unquote

import bson.errors

from syncd.backup.errors import BackupError
from syncd.backup.fsio import FileStream
from syncd.backup.layout import BackupInfo, spec_from_metadata
from syncd.backup.writer import BackupWriter
from syncd.mongo.rawbson import raw_id
from syncd.mongo.source import CollectionSpec

log = logging.getLogger(__name__)

DATA_SUFFIXES = (".bson", ".bson.gz")
METADATA_SUFFIXES = (".metadata.json", ".metadata.json.gz")
ROOT_FILES = {"prelude.json", "oplog.bson", "manifest.json"}  # beside the database folders


class DumpError(BackupError):
    """The directory is not a usable mongodump of one database; nothing was imported."""


@dataclass
class DumpCollection:
    stem: str  # the file name without its suffix, as mongodump escaped it
    data: Path | None = None
    metadata: Path | None = None

    @property
    def gzip(self) -> bool:
        return self.data is not None and self.data.name.endswith(".gz")


@dataclass
class Dump:
    folder: Path  # the database folder
    database: str
    collections: dict[str, tuple[CollectionSpec, DumpCollection]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # name -> why it is left out

    @property
    def compressed(self) -> bool:
        return any(c.gzip for _, c in self.collections.values())

    def created(self) -> datetime:
        """When mongodump wrote it: the newest modification time of its files."""
        files = [p for _, c in self.collections.values() for p in (c.data, c.metadata) if p]
        stamps = [_stat(path).st_mtime for path in files] or [_stat(self.folder).st_mtime]
        return datetime.fromtimestamp(max(stamps), UTC)


def read_dump(path: Path) -> Dump:
    """The database folder of the dump at `path`, its collections and their specs."""
    folder = database_folder(path.absolute())
    files = _entries(folder)
    dump = Dump(folder, folder.name)
    for stem, entry in sorted(files.items()):
        spec = _spec(entry, unquote(stem))
        why = _skip_reason(spec)
        if why is not None:
            dump.skipped[spec.name] = why
            continue
        if entry.data is None:
            raise DumpError(
                f"{entry.metadata}: metadata of {spec.name} without its {stem}.bson[.gz]; "
                "is the dump complete? Nothing was imported"
            )
        if spec.name in dump.collections:
            raise DumpError(
                f"{folder}: two files hold collection {spec.name}; nothing was imported"
            )
        dump.collections[spec.name] = (spec, entry)
    if not dump.collections:
        raise DumpError(f"{folder}: no collection to import ({_skipped(dump) or 'none found'})")
    return dump


def database_folder(path: Path) -> Path:
    """`path` itself when it holds collection files, else its one database folder."""
    if not path.is_dir():
        why = "does not exist" if not path.exists() else "is not a directory"
        raise DumpError(f"{path} {why}; give the directory mongodump wrote (its --out)")
    if _has_data(path):
        return path
    folders = sorted(p for p in _listing(path) if p.is_dir() and _has_data(p))
    if not folders:
        raise DumpError(
            f"{path} is not a mongodump directory: no COLL.bson or COLL.bson.gz in it or in a "
            "database folder below it"
        )
    if len(folders) > 1:
        names = ", ".join(p.name for p in folders)
        raise DumpError(
            f"{path} holds several databases ({names}); a backup is of one database: give "
            f"the folder of the one to import, e.g. {folders[0]}"
        )
    return folders[0]


def import_dump(
    path: Path,
    endpoint: str,
    backups_dir: Path,
    *,
    compress: Literal["gzip", "none"],
) -> tuple[BackupInfo, Dump]:
    """Copy the dump at `path` into a new, verified "full" backup of `endpoint`."""
    dump = read_dump(path)
    for name, why in sorted(dump.skipped.items()):
        log.info("import %s: skipping %s: %s", dump.folder, name, why)
    with BackupWriter(
        backups_dir,
        endpoint,
        dump.database,
        kind="full",
        compress=compress,
        reason=f"imported from {dump.folder}",
        now=dump.created(),
    ) as writer:
        for spec, entry in dump.collections.values():
            writer.write_collection(spec, _documents(entry, spec.name))
        return writer.commit(), dump


# -- reading the folder ------------------------------------------------------------------


def _listing(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError as exc:
        raise DumpError(f"cannot read {folder}: {exc.strerror or exc}") from None


def _stat(path: Path) -> os.stat_result:
    try:
        return path.stat()
    except OSError as exc:
        raise DumpError(f"cannot read {path}: {exc.strerror or exc}") from None


def _has_data(folder: Path) -> bool:
    return any(
        p.name.endswith(DATA_SUFFIXES) and p.name not in ROOT_FILES for p in _listing(folder)
    )


def _entries(folder: Path) -> dict[str, DumpCollection]:
    entries: dict[str, DumpCollection] = {}
    for path in _listing(folder):
        name = path.name
        for suffixes, kind in ((METADATA_SUFFIXES, "metadata"), (DATA_SUFFIXES, "data")):
            suffix = next((s for s in suffixes if name.endswith(s)), None)
            if suffix is None:
                continue
            entry = entries.setdefault(name[: -len(suffix)], DumpCollection(name[: -len(suffix)]))
            if getattr(entry, kind) is not None:
                raise DumpError(
                    f"{folder}: both {getattr(entry, kind).name} and {name}; keep the "
                    "plain or the gzip file, not both. Nothing was imported"
                )
            setattr(entry, kind, path)
            break
    return entries


def _spec(entry: DumpCollection, fallback: str) -> CollectionSpec:
    """Options and indexes from the metadata file (none: defaults, as mongorestore does)."""
    if entry.metadata is None:
        return CollectionSpec(fallback)
    try:
        data = entry.metadata.read_bytes()
        if entry.metadata.name.endswith(".gz"):
            data = gzip.decompress(data)
        return spec_from_metadata(data, fallback)
    except OSError as exc:
        raise DumpError(f"cannot read {entry.metadata}: {exc.strerror or exc}") from None
    except (ValueError, EOFError, KeyError, TypeError, AttributeError, bson.errors.BSONError) as e:
        raise DumpError(
            f"{entry.metadata} is not mongodump metadata ({e}); nothing was imported"
        ) from None


def _skip_reason(spec: CollectionSpec) -> str | None:
    if spec.name.startswith("system."):
        return "a system collection"
    if "viewOn" in spec.options:
        return "a view (its source collection is imported)"
    if "timeseries" in spec.options:
        return "a time-series collection (not supported)"
    return None


def _skipped(dump: Dump) -> str:
    return "; ".join(f"{name}: {why}" for name, why in sorted(dump.skipped.items()))


def _documents(entry: DumpCollection, name: str) -> Iterator[bytes]:
    """The documents of a collection file, each checked to be whole BSON with an `_id`."""
    assert entry.data is not None  # noqa: S101 - read_dump requires it
    path, seen = entry.data, 0
    try:
        for raw in FileStream(path, entry.gzip).documents():
            try:
                raw_id(raw)
            except (ValueError, IndexError, struct.error) as exc:
                raise DumpError(
                    f"{path}: document {seen + 1} of {name} is not valid BSON with an _id "
                    f"({exc}); nothing was imported"
                ) from None
            seen += 1
            yield raw
    except OSError as exc:
        raise DumpError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise DumpError(
            f"{path} is damaged after {seen} document(s) of {name} ({exc}); is the dump "
            "complete? Nothing was imported"
        ) from None
