"""Documents a target's own TTL indexes delete: not drift (SPEC §8a).

A sync copies the source's indexes, TTL indexes (`expireAfterSeconds`) included, so the
target's TTL monitor deletes documents by itself, often a minute before the source's
monitor deletes the same ones. Without this, syncd would take each such delete for
someone's edit of the target: drift, a refused sync, a continuous collection stopped.

A document the target lacks, that the last sync left there and nobody else's write can
be told apart from, counts as expired when the source's version of it (what the target
held, unless the source changed it since) holds, in a TTL index's field, a date (or an
array with a date) older than the index's `expireAfterSeconds` allow now: the monitor
deletes exactly those. The sync then treats it as any other difference from the source
(it copies the source's version, which the monitor deletes again unless the source's
monitor was first).

Left as drift: a delete by a TTL index with a `partialFilterExpression` (whether the
document was in the index is the server's to say), and a document whose source version
has since moved its date into the future (the version the target deleted is not known).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import bson

from syncd.mongo.source import CollectionSpec

Rule = tuple[str, float]  # a TTL index's field path and expireAfterSeconds
Expired = Callable[[bytes], bool]
# Dates out of datetime's range stay DatetimeMS (no TTL index expires them meaningfully).
TZ_AWARE: bson.CodecOptions[dict[str, Any]] = bson.CodecOptions(
    tz_aware=True, datetime_conversion=bson.DatetimeConversion.DATETIME_AUTO
)


def expiry_rules(spec: CollectionSpec | None) -> tuple[Rule, ...]:
    """The TTL indexes of a collection as (field, seconds): single-field, no partial
    filter (the ones whose deletes can be told from a document alone)."""
    if spec is None:
        return ()
    rules = []
    for index in spec.indexes:
        seconds, key = index.get("expireAfterSeconds"), index.get("key") or {}
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            continue
        if len(key) != 1 or "partialFilterExpression" in index:
            continue
        field = next(iter(key))
        if field != "_id":
            rules.append((str(field), float(seconds)))
    return tuple(rules)


def expired_by(rules: tuple[Rule, ...], now: dt.datetime | None = None) -> Expired | None:
    """A test of a raw document: would these TTL indexes have deleted it by `now`?"""
    if not rules:
        return None
    when = now or dt.datetime.now(dt.UTC)

    def expired(raw: bytes) -> bool:
        document: dict[str, Any] = bson.decode(raw, codec_options=TZ_AWARE)
        for field, seconds in rules:
            for value in _values(document, field.split(".")):
                if isinstance(value, dt.datetime) and value + dt.timedelta(seconds=seconds) < when:
                    return True
        return False

    return expired


def _values(value: Any, path: list[str]) -> Iterator[Any]:
    """Every value at a dotted path, through arrays, as an index sees it."""
    if not path:
        if isinstance(value, list):
            yield from value
        else:
            yield value
        return
    if isinstance(value, list):
        for item in value:
            yield from _values(item, path)
    elif isinstance(value, dict) and path[0] in value:
        yield from _values(value[path[0]], path[1:])
