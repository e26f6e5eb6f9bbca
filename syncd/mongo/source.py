"""Where documents come from: a live MongoDB database or a backup on disk.

The engine makes a target collection equal to a `DocumentSource` collection, so a sync
(source = another endpoint) and a restore (source = a backup) share one apply path.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import closing
from dataclasses import dataclass, field
from functools import partial, wraps
from typing import Any, Protocol, TypeVar

from bson.timestamp import Timestamp
from pymongo.database import Database

from syncd import pause
from syncd.config.model import OWN_PREFIX, own_collection
from syncd.mongo import changestream, server
from syncd.mongo.changestream import ChangeSink, Drained, Router
from syncd.mongo.fetch import batched
from syncd.mongo.rawbson import split_documents
from syncd.mongo.rawcursor import find_documents
from syncd.mongo.retry import with_retries
from syncd.mongo.timeouts import max_time, max_time_ms
from syncd.mongo.view import PLAIN, View


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

    def changes_unsupported(self) -> str | None:
        """Why changes cannot be followed here (no change streams), or None."""
        ...

    def server_version(self) -> tuple[int, ...]:
        """The server's version, () when there is none: which options and index fields it
        knows (specs.py leaves out the others)."""
        ...

    def current_token(self) -> bytes:
        """A resume point at the present end of the change stream."""
        ...

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
        """The changes to `names` after `token`, each into `route(name)`; at most `limit`;
        a collection past its `budgets` is left to a full read; read up to `fence` at least
        when given, else up to the server's time now (see changestream.drain)."""
        ...

    def fetch(self, name: str, ids: list[object]) -> list[bytes]:
        """The documents with these `_id`s that exist now (any order)."""
        ...


SKIPPED_PREFIXES = ("system.", OWN_PREFIX)


T = TypeVar("T")


class SharedReads:
    """What several sides of one command read of the same database, read once: `status`
    plans every flow at once, and each would list the collections, read every spec and
    take a resume point of the same endpoint. Whoever asks first reads; the others wait
    for that answer. Only for a command that writes nothing (its answers stay true)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reads: dict[tuple[str, ...], Future[Any]] = {}

    def get(self, key: tuple[str, ...], read: Callable[[], T]) -> T:
        with self._lock:
            reading = self._reads.get(key)
            mine = reading is None
            if reading is None:
                reading = self._reads[key] = Future()
        if mine:
            try:
                reading.set_result(read())
            except BaseException as exc:
                reading.set_exception(exc)
        result: T = reading.result()
        return result


def _shared(method: Callable[..., T]) -> Callable[..., T]:
    """A MongoSource read that its `shared` reads once per command (by method and name)."""

    @wraps(method)
    def read(self: MongoSource, *args: str) -> T:
        if self.shared is None:
            return method(self, *args)
        return self.shared.get((method.__name__, *args), lambda: method(self, *args))

    return read


class MongoSource:
    """A live database as a DocumentSource; documents stay raw BSON.

    `views` gives each collection's `View` (view.py): every read of documents, counts
    and change events included, goes through it (the filter to the server, the mask to
    each document read)."""

    def __init__(
        self,
        db: Database[Any],
        label: str,
        *,
        batch_size: int = 2000,
        views: Callable[[str], View] | None = None,
        shared: SharedReads | None = None,
    ) -> None:
        self.db = db
        self.shared = shared
        self.label = label
        self.batch_size = batch_size
        self.views = views
        self._unsupported: tuple[str | None] | None = None
        self._version: tuple[int, ...] | None = None
        self._listing: dict[str, Mapping[str, Any]] | None = None

    def listing(self) -> dict[str, Mapping[str, Any]]:
        """Every collection's `listCollections` entry, by name: one listing per run, read
        the first time it is needed (`forget_listing` after writing)."""
        if self._listing is None and self.shared is not None:
            self._listing = self.shared.get(("listing", ""), self._read_listing)
        if self._listing is None:
            self._listing = self._read_listing()
        return self._listing

    def _read_listing(self) -> dict[str, Mapping[str, Any]]:
        infos = with_retries(
            lambda: list(self.db.list_collections(**max_time("metadata"))),
            what=f"list collections ({self.label})",
        )
        return {str(info["name"]): info for info in infos}

    def forget_listing(self) -> None:
        """The next `listing` is read again (the collections were written since)."""
        self._listing = None

    def view(self, name: str) -> View:
        return PLAIN if self.views is None else self.views(name)

    def list_collections(self) -> list[str]:
        names = []
        for name, info in self.listing().items():
            if info.get("type", "collection") == "collection" and not name.startswith(
                SKIPPED_PREFIXES
            ):
                names.append(name)
        return sorted(names)

    def skipped_collections(self) -> dict[str, str]:
        """Name -> why it is not synced: views, system, time-series and syncd's own collections."""
        skipped = {}
        for name, info in self.listing().items():
            kind = info.get("type", "collection")
            if own_collection(name):
                skipped[name] = "syncd's own collection"
            elif name.startswith(SKIPPED_PREFIXES):
                skipped[name] = "a system collection"
            elif kind != "collection" or "timeseries" in info.get("options", {}):
                skipped[name] = (
                    f"a {kind if kind != 'collection' else 'time-series'} on {self.label}"
                )
        return skipped

    @_shared
    def collection_spec(self, name: str) -> CollectionSpec | None:
        info = self.listing().get(name)
        if info is None or info.get("type", "collection") != "collection":
            return None
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
        view = self.view(name)
        batch = partial(pause.point, "read.batch", self.db.name)
        documents = find_documents(self.db, name, view.query or {}, self.batch_size, batch)
        with closing(documents), view.reading(self.label):
            yield from documents if view.mask is None else map(view.mask, documents)

    def count(self, name: str) -> int:
        view = self.view(name)
        with view.reading(self.label):
            return int(self.db[name].count_documents(view.query or {}, **max_time("count")))

    def record_count(self, name: str, *, expected: int | None = None) -> int:
        """The collection's document count from its record count (cheap on MongoDB); of a
        filtered collection, the count of its matching documents.

        A record count is metadata, which MongoDB documents as wrong after an unclean
        shutdown and on a sharded cluster (orphaned documents): when it differs from
        `expected` (what a verification needs), the documents are counted exactly before
        anyone is told they differ."""
        what = f"count {name} ({self.label})"
        if self.view(name).query is None:
            estimate_count = partial(self.db[name].estimated_document_count, **max_time("metadata"))
            estimate = int(with_retries(estimate_count, what=what))
            if expected is None or estimate == expected:
                return estimate
        return int(with_retries(partial(self.count, name), what=what))

    def server_version(self) -> tuple[int, ...]:
        """The server's version ((8, 0, 4)): what options and index fields it knows."""
        if self._version is None:
            client = self.db.client
            self._version = with_retries(
                lambda: server.version(client), what=f"buildInfo ({self.label})"
            )
        return self._version

    def changes_unsupported(self) -> str | None:
        if self._unsupported is None:
            reason = with_retries(
                lambda: changestream.unsupported_reason(self.db),
                what=f"hello ({self.label})",
            )
            self._unsupported = (reason,)
        return self._unsupported[0]

    @_shared
    def current_token(self) -> bytes:
        return changestream.current_token(self.db)

    def read_changes(
        self,
        token: bytes,
        names: list[str],
        route: Router,
        limit: int | None = None,
        *,
        lookup: bool = True,
        budgets: Mapping[str, int] | None = None,
        fence: Timestamp | None = None,
    ) -> Drained:
        """`lookup`: update events carry the document (not needed to count writes). Each
        collection's events go through its view (policy.py)."""

        def viewed(name: str) -> ChangeSink | None:
            sink = route(name)
            return None if sink is None else self.view(name).events(sink)

        return changestream.drain(
            self.db,
            token,
            names,
            viewed,
            label=self.label,
            limit=limit,
            lookup=lookup,
            budgets=budgets,
            fence=fence,
        )

    def fetch(self, name: str, ids: list[object]) -> list[bytes]:
        view = self.view(name)

        def read() -> list[bytes]:
            found: list[bytes] = []
            query = view.by_id(ids)
            cursor = self.db[name].find_raw_batches(query, max_time_ms=max_time_ms("read"))
            with view.reading(self.label), cursor:
                for batch in cursor:
                    found.extend(map(view.transform, split_documents(batch)))
            pause.point("fetch.batch")
            return found

        return with_retries(read, what=f"read {name} by _id ({self.label})")


def read_by_id(
    source: DocumentSource, name: str, wanted: Sequence[tuple[bytes, object]]
) -> Iterator[tuple[list[bytes], list[bytes]]]:
    """(keys asked, documents found) in batches of FETCH_IDS."""
    for batch in batched(wanted):
        yield [key for key, _ in batch], source.fetch(name, [value for _, value in batch])
