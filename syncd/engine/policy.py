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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from syncd.config.model import Config
from syncd.config.query import to_query
from syncd.config.secrets import resolve
from syncd.engine.masking import Masker
from syncd.mongo.view import View

SRC, TGT = "src", "tgt"  # as scratch.SRC / scratch.TGT
MARK_WORDS = {
    "filter": "the filter",
    "deletes": "deletes",
    "mask": "the mask rules",
    "key": "the masking key",
}


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
