"""How one side's documents of a collection are read (`View`): the query the server applies
to every read, and the transform applied to each document read. The collection policy
(`engine/policy.py`) builds the views from the config; `MongoSource` reads through them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pymongo.errors import OperationFailure

from syncd.errors import SyncdError
from syncd.mongo.changestream import ChangeSink
from syncd.mongo.rawbson import raw_id
from syncd.mongo.retry import UNAUTHORIZED_CODES, is_transient, server_reason

Mask = Callable[[bytes], bytes]  # a raw document -> the same document masked (masking.Masker)


class FilterRejected(SyncdError):
    """The server refused a collection's filter."""


@dataclass(frozen=True)
class View:
    """How one side's documents of a collection are read: the server-side query, and the
    transform applied to each document read (masking, on the source side)."""

    name: str
    query: dict[str, Any] | None = None
    mask: Mask | None = None
    filter_at: str = ""

    def transform(self, raw: bytes) -> bytes:
        return raw if self.mask is None else self.mask(raw)

    def by_id(self, ids: list[object]) -> dict[str, Any]:
        wanted: dict[str, Any] = {"_id": {"$in": ids}}
        return wanted if self.query is None else {"$and": [wanted, self.query]}

    def events(self, sink: ChangeSink) -> ChangeSink:
        """Where a change stream's events of this collection go: with a filter, a document
        in an event is only named (it is read by `_id` through the filter afterwards)."""
        if self.query is not None:
            return _Named(sink)
        if self.mask is not None:
            return _Masked(sink, self.mask)
        return sink

    @contextmanager
    def reading(self, label: str) -> Iterator[None]:
        """A server's refusal of the filter, named with the collection and the config line."""
        try:
            yield
        except OperationFailure as exc:
            if self.query is None or is_transient(exc) or exc.code in UNAUTHORIZED_CODES:
                raise
            raise FilterRejected(
                f"{self.name}: {label} rejected the filter at {self.filter_at} "
                f"({server_reason(exc)}); fix the collection's `filter:` (a MongoDB query in "
                "Extended JSON), then run again"
            ) from None


PLAIN = View("")


class _Named:
    """Events of a filtered collection: a document is named, then read through the filter."""

    def __init__(self, sink: ChangeSink) -> None:
        self.sink = sink

    def put(self, raw: bytes, *, inserted: bool = False) -> None:
        self.sink.named(raw_id(raw), inserted=inserted)

    def gone(self, rid: bytes) -> None:
        self.sink.gone(rid)

    def named(self, rid: bytes, *, inserted: bool = False) -> None:
        self.sink.named(rid, inserted=inserted)


class _Masked:
    """Events of a masked collection: the documents they carry are masked."""

    def __init__(self, sink: ChangeSink, mask: Mask) -> None:
        self.sink, self.mask = sink, mask

    def put(self, raw: bytes, *, inserted: bool = False) -> None:
        self.sink.put(self.mask(raw), inserted=inserted)

    def gone(self, rid: bytes) -> None:
        self.sink.gone(rid)

    def named(self, rid: bytes, *, inserted: bool = False) -> None:
        self.sink.named(rid, inserted=inserted)
