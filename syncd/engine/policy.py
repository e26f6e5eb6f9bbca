"""A collection's policy (SPEC §4 "Collection policy"), applied where documents enter the
engine: `filter`, `deletes: false` and `mask`.

Both sides of a collection are read through a `View` (`MongoSource` applies it to every
read: whole collections, reads by `_id`, counts and change events):

- the filter goes to the server with every read (`find(filter)`, and for reads by `_id`
  `{$and: [{_id: {$in: ...}}, filter]}`), so MongoDB itself decides what matches. A
  change event of a filtered collection only names its document, which is then read by
  `_id` with the filter: a document that left the filter reads as gone. So the plan
  compares the two sides' matching documents: target documents that do not match are
  never read, written or deleted, and a source document that stops matching is gone
  from the source (deleted on the target, unless `deletes: false`);
- the source's documents are masked as they are read (`masking.py`), so the plan, the
  writes, the verification and the memory all see the masked result: a re-run with
  nothing changed writes nothing;
- `deletes: false` is the plan's: a target document the source does not have stays, is
  counted as kept, and is neither drift nor pending work.

A policy is also marked in the memory (`marks`: short hashes of the filter, the mask rules
and the masking key's fingerprint, never the key): when the marks differ from those of the
last sync, the collection is read whole once, so every document is compared under the new
policy (a new key re-masks every masked document, as updates, not drift).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pymongo.errors import OperationFailure

from syncd.config.model import Config
from syncd.config.query import to_query
from syncd.config.secrets import resolve
from syncd.engine.changestream import ChangeSink
from syncd.engine.masking import Masker
from syncd.engine.rawbson import raw_id
from syncd.engine.retry import UNAUTHORIZED_CODES, is_transient, server_reason
from syncd.errors import SyncdError

SRC, TGT = "src", "tgt"  # as scratch.SRC / scratch.TGT
MARK_WORDS = {
    "filter": "the filter",
    "deletes": "deletes",
    "mask": "the mask rules",
    "key": "the masking key",
}


class FilterRejected(SyncdError):
    """The server refused a collection's filter."""


@dataclass(frozen=True)
class View:
    """How one side's documents of a collection are read: the server-side query, and the
    transform applied to each document read (masking, on the source side)."""

    name: str
    query: dict[str, Any] | None = None
    mask: Masker | None = None
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


@dataclass(frozen=True)
class Policy:
    """One collection's policy: what each side is read through, whether the source's
    deletions apply, and the marks the memory keeps of it."""

    name: str
    source: View
    target: View
    deletes: bool = True
    marks: dict[str, str] = field(default_factory=dict)
    bypass_validation: bool = False  # write past the target's validator (needs dbAdmin)

    def view(self, which: str) -> View:
        return self.source if which == SRC else self.target

    @property
    def filtered(self) -> bool:
        return self.target.query is not None


class Policies:
    """Per collection, its policy as the config says; built when first asked for. The
    masking key is read then, once, and only when a masked collection is asked for."""

    def __init__(self, config: Config | None = None) -> None:
        self.config = config
        self._built: dict[str, Policy] = {}
        self._key: bytes | None = None

    def __call__(self, name: str) -> Policy:
        if name not in self._built:
            self._built[name] = self._build(name)
        return self._built[name]

    def reads(self, which: str) -> Callable[[str], View]:
        return lambda name: self(name).view(which)

    def _build(self, name: str) -> Policy:
        entry = self.config.policy_for(name) if self.config is not None else None
        if entry is None:
            return Policy(name, View(name), View(name))
        marks: dict[str, str] = {}
        query = None
        if entry.filter is not None:
            query = to_query(entry.filter)
            marks["filter"] = _short(entry.filter)
        if not entry.deletes:
            marks["deletes"] = "false"
        masker = None
        if entry.mask:
            exempt = entry.mask_except
            masker = Masker(self._masking_key(), entry.mask, exempt)
            rules: dict[str, Any] = {"mask": sorted(entry.mask), "except": None}
            if exempt is not None:
                rules["except"] = [exempt.field, sorted(map(str, exempt.values))]
            marks["mask"] = _short(json.dumps(rules))
            marks["key"] = masker.fingerprint()
        return Policy(
            name,
            View(name, query, masker, entry.filter_at),
            View(name, query, None, entry.filter_at),
            deletes=entry.deletes,
            marks=marks,
            bypass_validation=entry.bypass_validation,
        )

    def _masking_key(self) -> bytes:
        if self._key is None:
            assert self.config is not None and self.config.masking is not None  # noqa: S101
            self._key = resolve(self.config.masking.key, what="masking key").encode()
        return self._key


class RestorePolicies(Policies):
    """A restore's: every document as the backup holds it (no filter, no mask), written past
    the target's validator where the config's collection says `bypass_validation: true`."""

    def _build(self, name: str) -> Policy:
        entry = self.config.policy_for(name) if self.config is not None else None
        bypass = entry is not None and entry.bypass_validation
        return Policy(name, View(name), View(name), bypass_validation=bypass)


def changed(before: dict[str, str], now: dict[str, str]) -> str:
    """Why a collection is read whole after its policy changed."""
    what = [MARK_WORDS[k] for k in MARK_WORDS if before.get(k) != now.get(k)]
    reason = f"{' and '.join(what)} changed since the last sync"
    if {"mask", "key"} & {k for k in MARK_WORDS if before.get(k) != now.get(k)}:
        reason += " (masked anew, not drift)"
    return reason


def _short(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


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

    def __init__(self, sink: ChangeSink, mask: Masker) -> None:
        self.sink, self.mask = sink, mask

    def put(self, raw: bytes, *, inserted: bool = False) -> None:
        self.sink.put(self.mask(raw), inserted=inserted)

    def gone(self, rid: bytes) -> None:
        self.sink.gone(rid)

    def named(self, rid: bytes, *, inserted: bool = False) -> None:
        self.sink.named(rid, inserted=inserted)
