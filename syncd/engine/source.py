"""Where documents come from: a live MongoDB database or a backup on disk.

The engine makes a target collection equal to a `DocumentSource` collection, so a sync
(source = another endpoint) and a restore (source = a backup) share one apply path.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol


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
