"""`create_backup`: snapshot a live database into a backup, streaming raw BSON batches.

Documents are never decoded: `find_raw_batches` hands over the server's reply batches
(concatenated BSON documents) and they go to disk as they are. Collections are read one
after the other in natural order (a capped collection keeps its insertion order); like
mongodump without `--oplog`, the backup is not a point-in-time snapshot across
collections (see `read_order` for GridFS).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import PyMongoError

from syncd.backup.fsio import FileStream
from syncd.backup.layout import BackupInfo, uuid_bytes
from syncd.backup.writer import BackupWriter, Progress
from syncd.config.model import own_collection
from syncd.mongo.retry import with_retries
from syncd.mongo.source import CollectionSpec

log = logging.getLogger(__name__)


def skip_reason(info: Mapping[str, Any]) -> str | None:
    """Why a listCollections entry is not backed up, or None for a regular collection."""
    name = str(info.get("name", ""))
    if name.startswith("system."):
        return "system collection"
    if own_collection(name):
        return "syncd's own collection (the write lease)"
    kind = info.get("type", "collection")
    if kind == "view":
        return "view (its source collection is backed up)"
    if kind != "collection" or "timeseries" in info.get("options", {}):
        return f"{kind if kind != 'collection' else 'time-series'} collections are not supported"
    return None


def read_order(name: str) -> str:
    """Sort key: names in order, but a GridFS `X.chunks` right after its `X.files`.

    GridFS writes a file's chunks before its files document, so reading `X.files` first
    means a file uploaded during the backup shows up as orphan chunks at worst, never as
    a files document without its chunks.
    """
    return name.removesuffix(".chunks") + ".files\x7f" if name.endswith(".chunks") else name


def collection_spec(db: Database[Any], info: Mapping[str, Any]) -> CollectionSpec:
    """Options, indexes and uuid of a collection, from its listCollections entry."""
    name = str(info["name"])
    indexes = tuple(
        {k: v for k, v in index.items() if k != "ns"} for index in db[name].list_indexes()
    )
    return CollectionSpec(
        name=name,
        options=dict(info.get("options", {})),
        indexes=indexes,
        uuid=uuid_bytes(info.get("info", {}).get("uuid")),
    )


BATCH_BYTES = 4 << 20  # aim for raw batches of ~4 MiB: the server's 16 MiB default costs RSS
DEFAULT_BATCH_DOCS = 1000


def _sizes(db: Database[Any], names: Sequence[str]) -> dict[str, tuple[int, float]]:
    """(data size, average document size) per collection, where the server tells."""
    sizes: dict[str, tuple[int, float]] = {}
    for name in names:
        try:
            stats = db.command("collStats", name)
            sizes[name] = (int(stats.get("size", 0)), float(stats.get("avgObjSize", 0)))
        except (PyMongoError, TypeError, ValueError):
            continue
    return sizes


def batch_docs(avg_size: float) -> int:
    if avg_size <= 0:
        return DEFAULT_BATCH_DOCS
    return max(1, min(100_000, int(BATCH_BYTES / avg_size)))


def create_backup(
    db: Database[Any],
    endpoint: str,
    backups_dir: Path,
    *,
    compress: Literal["gzip", "none"],
    collections: Sequence[str] | None = None,
    reason: str | None = None,
    on_progress: Progress | None = None,
    scanned: Mapping[str, Path] | None = None,
) -> BackupInfo:
    """Back up every regular collection of `db` (or the ones named) as a "full" backup.

    Named collections that do not exist are recorded as absent in the manifest.
    `scanned` names files of documents just read from `db` (a sync's scan of its target,
    raw BSON back to back): those collections are written from them, not read again.
    """
    listing = with_retries(
        lambda: {str(info["name"]): info for info in db.list_collections()},
        what=f"back up {endpoint}",
    )
    wanted = sorted(listing if collections is None else set(collections), key=read_order)
    with BackupWriter(
        backups_dir, endpoint, db.name, kind="full", compress=compress, reason=reason
    ) as writer:
        regular = [n for n in wanted if n in listing and skip_reason(listing[n]) is None]
        sizes = _sizes(db, regular)
        writer.estimated_bytes = sum(size for size, _ in sizes.values()) or None
        for name in wanted:
            info = listing.get(name)
            if info is None:
                log.info("backup %s: %s does not exist, recorded as absent", endpoint, name)
                writer.mark_absent(name)
                continue
            why = skip_reason(info)
            if why is not None:
                log.info("backup %s: skipping %s: %s", endpoint, name, why)
                continue
            what = f"back up {name} ({endpoint})"
            spec = with_retries(partial(collection_spec, db, info), what=what)
            if scanned is not None and name in scanned:
                documents = FileStream(scanned[name], gzip=False).documents()
                writer.write_collection(spec, documents, on_progress=on_progress)
                continue
            read = partial(_write_read, writer, db[name], spec, sizes.get(name, (0, 0.0))[1])
            with_retries(partial(read, on_progress), what=what)
        return writer.commit()


def _write_read(
    writer: BackupWriter,
    coll: Collection[Any],
    spec: CollectionSpec,
    avg_size: float,
    on_progress: Progress | None,
) -> None:
    """One read of a collection into the backup; a transient error leaves it out, so a
    retry reads it again from the start (see `BackupWriter.write_collection`)."""
    with coll.find_raw_batches(batch_size=batch_docs(avg_size)) as batches:
        writer.write_collection(spec, batches, on_progress=on_progress)
