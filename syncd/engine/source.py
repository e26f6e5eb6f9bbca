"""Where documents come from: a live MongoDB database or a backup on disk.

The engine makes a target collection equal to a `DocumentSource` collection, so a sync
(source = another endpoint) and a restore (source = a backup) share one apply path.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from pymongo.database import Database

from syncd.config.model import OWN_PREFIX, own_collection
from syncd.engine.rawbson import split_documents


@dataclass(frozen=True)
class CollectionSpec:
    """What a collection is besides its documents: options and index definitions.

    `indexes` are index documents as `listIndexes` returns them, minus `ns`.
    `options` are the `options` of `listCollections` (validator, capped, collation...).
    """

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    indexes: tuple[dict[str, Any], ...] = ()
    uuid: bytes | None = None


class DocumentSource(Protocol):
    """A read-only set of collections of raw BSON documents."""

    label: str

    def list_collections(self) -> list[str]:
        """Names of the collections (regular collections only: no views, no system.*)."""
        ...

    def collection_spec(self, name: str) -> CollectionSpec | None:
        """Options and indexes, or None when the collection does not exist."""
        ...

    def iter_raw(self, name: str) -> Iterator[bytes]:
        """Every document of the collection as raw BSON bytes, in any order, streaming."""
        ...

    def count(self, name: str) -> int:
        """Number of documents (exact)."""
        ...


SKIPPED_PREFIXES = ("system.", OWN_PREFIX)


class MongoSource:
    """A live database as a DocumentSource; documents stay raw BSON."""

    def __init__(self, db: Database[Any], label: str, *, batch_size: int = 2000) -> None:
        self.db = db
        self.label = label
        self.batch_size = batch_size

    def list_collections(self) -> list[str]:
        names = []
        for info in self.db.list_collections(filter={"type": "collection"}):
            name = str(info["name"])
            if not name.startswith(SKIPPED_PREFIXES):
                names.append(name)
        return sorted(names)

    def skipped_collections(self) -> dict[str, str]:
        """Name -> why it is not synced: views, system, time-series and syncd's own collections."""
        skipped = {}
        for info in self.db.list_collections():
            name, kind = str(info["name"]), info.get("type", "collection")
            if own_collection(name):
                skipped[name] = "syncd's own collection"
            elif name.startswith(SKIPPED_PREFIXES):
                skipped[name] = "a system collection"
            elif kind != "collection" or "timeseries" in info.get("options", {}):
                skipped[name] = (
                    f"a {kind if kind != 'collection' else 'time-series'} on {self.label}"
                )
        return skipped

    def collection_spec(self, name: str) -> CollectionSpec | None:
        infos = list(self.db.list_collections(filter={"name": name}))
        if not infos or infos[0].get("type", "collection") != "collection":
            return None
        info = infos[0]
        indexes = []
        for index in self.db[name].list_indexes():
            spec = dict(index)
            spec.pop("ns", None)
            indexes.append(spec)
        uuid = info.get("info", {}).get("uuid")
        return CollectionSpec(
            name=name,
            options=dict(info.get("options", {})),
            indexes=tuple(indexes),
            uuid=bytes(uuid) if uuid is not None else None,
        )

    def iter_raw(self, name: str) -> Iterator[bytes]:
        cursor = self.db[name].find_raw_batches(batch_size=self.batch_size)
        try:
            for batch in cursor:
                yield from split_documents(batch)
        finally:
            cursor.close()

    def count(self, name: str) -> int:
        return int(self.db[name].count_documents({}))
