"""Collection options and indexes: what the target must change to match the source."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from syncd.mongo.source import CollectionSpec

MUTABLE_OPTIONS = (
    "validator",
    "validationLevel",
    "validationAction",
    "changeStreamPreAndPostImages",
)
OPTION_DEFAULTS: dict[str, Any] = {
    "validator": {},
    "validationLevel": "strict",
    "validationAction": "error",
}
IGNORED_OPTIONS = {"uuid"}
# What a server before a version does not know: collection options, and index fields.
# A target of an older version gets the collection without them (and a warning naming
# them), not a failed sync: clustered collections came in 5.3, pre- and post-images of
# change streams and `prepareUnique` in 6.0.
OPTIONS_SINCE: dict[str, tuple[int, ...]] = {
    "clusteredIndex": (5, 3),
    "changeStreamPreAndPostImages": (6, 0),
}
INDEX_FIELDS_SINCE: dict[str, tuple[int, ...]] = {"prepareUnique": (6, 0)}
# Index types a server from a version refuses: geoHaystack was removed in 5.0.
INDEX_TYPES_UNTIL: dict[str, tuple[int, ...]] = {"geoHaystack": (5, 0)}


@dataclass(frozen=True)
class SpecChanges:
    """Everything about a collection except its documents."""

    create: dict[str, Any] | None = None
    collmod: dict[str, Any] = field(default_factory=dict)
    immutable: tuple[str, ...] = ()
    drop_indexes: tuple[str, ...] = ()
    create_indexes: tuple[dict[str, Any], ...] = ()
    left_out: tuple[str, ...] = ()  # of the source's spec, what the target's version lacks

    @property
    def empty(self) -> bool:
        return (
            self.create is None
            and not self.collmod
            and not self.immutable
            and not self.drop_indexes
            and not self.create_indexes
        )

    def describe(self) -> list[str]:
        lines = []
        if self.create is not None:
            options = ", ".join(sorted(self.create)) or "no options"
            lines.append(f"create collection ({options})")
        if self.collmod:
            lines.append(f"change options: {', '.join(sorted(self.collmod))}")
        lines += [f"drop index {name}" for name in self.drop_indexes]
        lines += [f"create index {spec['name']}" for spec in self.create_indexes]
        lines += [f"leave out {what}" for what in self.left_out]
        return lines


def _plain(value: Any) -> Any:
    """Comparable form: mapping order kept (it matters for index keys), numbers unified."""
    if isinstance(value, Mapping):
        return tuple((str(k), _plain(v)) for k, v in value.items())
    if isinstance(value, list | tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _index_identity(spec: Mapping[str, Any]) -> Any:
    return _plain({k: v for k, v in spec.items() if k not in ("v", "ns", "name")})


def compare_specs(
    source: CollectionSpec | None,
    target: CollectionSpec | None,
    version: tuple[int, ...] = (),
) -> SpecChanges:
    """What the target must change to match the source, as far as a target server of
    `version` knows how (() when unknown: all of it)."""
    if source is None:
        return SpecChanges()
    source, left_out = for_version(source, version)
    changes = _compare(source, target)
    return replace(changes, left_out=left_out) if left_out else changes


def for_version(
    spec: CollectionSpec, version: tuple[int, ...]
) -> tuple[CollectionSpec, tuple[str, ...]]:
    """`spec` without what a server of `version` does not know, and what that was, named
    ("option clusteredIndex (MongoDB 5.3+)", "index loc_haystack (geoHaystack, before 5.0)")."""
    if not version:
        return spec, ()
    left_out: list[str] = []
    options = dict(spec.options)
    for key, since in OPTIONS_SINCE.items():
        if key in options and version < since:
            del options[key]
            left_out.append(f"option {key} (MongoDB {_dotted(since)}+)")
    indexes = []
    for index in spec.indexes:
        kinds = [str(kind) for kind in index.get("key", {}).values()]
        removed = [kind for kind in kinds if version >= INDEX_TYPES_UNTIL.get(kind, (999,))]
        if removed:
            until = _dotted(INDEX_TYPES_UNTIL[removed[0]])
            left_out.append(f"index {index.get('name')} ({removed[0]}, before MongoDB {until})")
            continue
        unknown = [
            key for key, since in INDEX_FIELDS_SINCE.items() if key in index and version < since
        ]
        for key in unknown:
            added = _dotted(INDEX_FIELDS_SINCE[key])
            left_out.append(f"index field {key} of {index.get('name')} (MongoDB {added}+)")
        indexes.append({k: v for k, v in index.items() if k not in unknown})
    if not left_out:
        return spec, ()
    return replace(spec, options=options, indexes=tuple(indexes)), tuple(left_out)


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def _compare(source: CollectionSpec, target: CollectionSpec | None) -> SpecChanges:
    source_indexes = {str(spec["name"]): spec for spec in source.indexes if spec["name"] != "_id_"}
    if target is None:
        return SpecChanges(
            create={k: v for k, v in source.options.items() if k not in IGNORED_OPTIONS},
            create_indexes=tuple(source_indexes.values()),
        )
    collmod, immutable = _option_changes(source.options, target.options)
    target_indexes = {str(spec["name"]): spec for spec in target.indexes if spec["name"] != "_id_"}
    drop = [
        name
        for name, spec in target_indexes.items()
        if name not in source_indexes
        or _index_identity(spec) != _index_identity(source_indexes[name])
    ]
    create = [
        spec for name, spec in source_indexes.items() if name not in target_indexes or name in drop
    ]
    return SpecChanges(None, collmod, tuple(immutable), tuple(sorted(drop)), tuple(create))


def _option_changes(
    source: Mapping[str, Any], target: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    collmod: dict[str, Any] = {}
    immutable: list[str] = []
    for key in sorted((set(source) | set(target)) - IGNORED_OPTIONS):
        wanted = source.get(key, OPTION_DEFAULTS.get(key))
        current = target.get(key, OPTION_DEFAULTS.get(key))
        if _plain(wanted) == _plain(current):
            continue
        if key in MUTABLE_OPTIONS:
            collmod[key] = wanted if wanted is not None else OPTION_DEFAULTS.get(key, {})
        else:
            immutable.append(key)
    return collmod, immutable


def index_model_args(spec: Mapping[str, Any]) -> tuple[list[tuple[str, Any]], dict[str, Any]]:
    """Arguments for `IndexModel(keys, **kwargs)` from a listIndexes document."""
    keys = [(str(k), v) for k, v in spec["key"].items()]
    kwargs = {str(k): v for k, v in spec.items() if k not in ("key", "v", "ns")}
    return keys, kwargs
