"""Field-by-field comparison of two decoded documents, for `syncd diff`. Pure: no I/O.

`field_differences(source, target)` lists every path where the two differ, as
`FieldDiff(path, source value, target value)`: nested documents by dotted path, arrays by
index (`address.lines[1]`), `ABSENT` for a side that does not have the path. Values are
compared as MongoDB compares stored documents byte for byte: the type counts (1, 1.0 and
Int64(1) differ, so do True and 1), and so does the order of fields; a document whose
fields only come in another order gets one `FieldDiff` at that level, with the field names
in each side's order (`what="field order"`).

`show(value)` renders a value as relaxed Extended JSON, shortened past `MAX_SHOWN` chars.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from bson import json_util
from bson.json_util import RELAXED_JSON_OPTIONS

MAX_SHOWN = 80
ELLIPSIS = "…"
HIDDEN = "<hidden>"


class _Absent:
    """The path does not exist on that side."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


class FieldDiff(NamedTuple):
    path: str
    source: Any  # the decoded value, or ABSENT
    target: Any
    what: str = "value"  # or "field order"


def field_differences(source: Mapping[str, Any], target: Mapping[str, Any]) -> list[FieldDiff]:
    """Every path where `source` and `target` differ, in the source's field order."""
    return list(_differences("", source, target))


def _differences(path: str, source: Any, target: Any) -> Iterable[FieldDiff]:
    if isinstance(source, Mapping) and isinstance(target, Mapping):
        yield from _mapping_differences(path, source, target)
    elif _is_array(source) and _is_array(target):
        for index in range(max(len(source), len(target))):
            yield from _differences(
                f"{path}[{index}]",
                source[index] if index < len(source) else ABSENT,
                target[index] if index < len(target) else ABSENT,
            )
    elif not same(source, target):
        yield FieldDiff(path, source, target)


def _mapping_differences(
    path: str, source: Mapping[str, Any], target: Mapping[str, Any]
) -> Iterable[FieldDiff]:
    found = False
    for key in [*source, *(k for k in target if k not in source)]:
        for diff in _differences(
            f"{path}.{key}" if path else str(key),
            source.get(key, ABSENT),
            target.get(key, ABSENT),
        ):
            found = True
            yield diff
    if not found and list(source) != list(target):
        yield FieldDiff(path or "(document)", list(source), list(target), "field order")


def _is_array(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray)


def same(a: Any, b: Any) -> bool:
    """Equal as stored: same BSON type, same value, fields in the same order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, Mapping):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if _is_array(a):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and a != a and b != b:  # NaN is stored as NaN on both sides
        return True
    return bool(a == b)


def show(value: Any, *, limit: int = MAX_SHOWN) -> str:
    """Relaxed Extended JSON, shortened with an ellipsis past `limit` characters."""
    if value is ABSENT:
        return "(absent)"
    text = json_util.dumps(value, json_options=RELAXED_JSON_OPTIONS, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


def type_name(value: Any) -> str:
    """For two values that read the same but differ in BSON type (1 vs 1.0 vs Int64(1))."""
    names = {"int": "int32", "Int64": "int64", "float": "double", "bool": "bool"}
    return names.get(type(value).__name__, type(value).__name__)


def hidden(path: str, secret_fields: Iterable[str]) -> bool:
    """True when `path` is one of `secret_fields` or inside one (`password.hash`)."""
    return any(
        path == field or path.startswith((f"{field}.", f"{field}[")) for field in secret_fields
    )
