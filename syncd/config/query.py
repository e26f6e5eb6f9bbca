"""A collection's `filter`: a MongoDB query written in YAML as Extended JSON.

Parsed once when the config is read (a located error when it does not parse) and kept
as canonical Extended JSON, which keeps every BSON type (`$numberLong` stays an int64),
so the engine gets back exactly the query the operator wrote (`to_query`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

from bson import json_util
from bson.errors import BSONError

FIELD_OPERATORS_WITH_PATHS = ("$expr",)  # aggregation expressions name fields as "$path"


class FilterInvalid(ValueError):
    """The filter is not a query document in Extended JSON; the message says why."""


def canonical_filter(value: Any) -> str:
    """The YAML value of `filter` as canonical Extended JSON; FilterInvalid when it is not
    a document of Extended JSON. A YAML timestamp (2026-01-01) is taken as a date (UTC)."""
    if not isinstance(value, dict):
        raise FilterInvalid("a filter is a query document (a mapping), e.g. {status: active}")
    try:
        text = json.dumps(value, default=_yaml_scalar)
        parsed = json_util.loads(text)
    except (ValueError, TypeError, ArithmeticError, BSONError) as exc:
        raise FilterInvalid(
            f"not valid Extended JSON: {exc} (write BSON types as Extended JSON, e.g. "
            '{$date: "2026-01-01T00:00:00Z"} or {$oid: "<24 hex digits>"})'
        ) from None
    if not isinstance(parsed, dict):
        raise FilterInvalid("a filter is a query document (a mapping), e.g. {status: active}")
    return json_util.dumps(parsed, json_options=json_util.CANONICAL_JSON_OPTIONS)


def to_query(text: str) -> dict[str, Any]:
    """The query document (BSON types) of a canonical filter."""
    query: dict[str, Any] = json_util.loads(text)
    return query


def _yaml_scalar(value: Any) -> Any:
    """PyYAML reads unquoted timestamps as dates: Extended JSON dates, in UTC."""
    if isinstance(value, dt.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return {"$date": moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")}
    if isinstance(value, dt.date):
        return {"$date": f"{value.isoformat()}T00:00:00Z"}
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def query_fields(query: Any) -> set[str]:
    """Dotted paths of the fields a query looks at (a superset: a field's sub-keys count)."""
    return set(_fields(query, ""))


def _fields(node: Any, prefix: str) -> Iterator[str]:
    if isinstance(node, list):
        for item in node:
            yield from _fields(item, prefix)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        key = str(key)
        if key in FIELD_OPERATORS_WITH_PATHS:
            yield from _expression_fields(value)
        elif key.startswith("$"):
            yield from _fields(value, prefix)
        else:
            path = f"{prefix}.{key}" if prefix else key
            yield path
            yield from _fields(value, path)


def _expression_fields(node: Any) -> Iterator[str]:
    if isinstance(node, str) and node.startswith("$") and not node.startswith("$$"):
        yield node[1:]
    elif isinstance(node, list):
        for item in node:
            yield from _expression_fields(item)
    elif isinstance(node, dict):
        for value in node.values():
            yield from _expression_fields(value)


def overlaps(first: str, second: str) -> bool:
    """Whether two dotted paths name the same data (equal, or one inside the other)."""
    return first == second or first.startswith(second + ".") or second.startswith(first + ".")
