"""Rules of the collection policy (`filter`, `deletes`, `mask`, `mask_except`) that span
keys: a filter that does not parse, masks without a key, masked data on a flow into a
protected endpoint, and what GridFS cannot take.
"""

from __future__ import annotations

import fnmatch
from typing import Any

from syncd.config.load import ConfigIssue, LoadedYaml
from syncd.config.query import FilterInvalid, canonical_filter, overlaps, query_fields, to_query

GRIDFS = ("fs.files", "fs.chunks")
TIME_VARIABLES = ("$$NOW", "$$CLUSTER_TIME")
Path = list[str | int]


def policy_issues(
    loaded: LoadedYaml,
    collections: list[Any],
    flows: dict[str, Any] | None,
    endpoints: dict[str, Any] | None,
    masking: Any,
) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    names = [e.get("name") if isinstance(e, dict) else None for e in collections]
    for index, entry in enumerate(collections):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            continue
        path: Path = ["collections", index]
        gridfs = [g for g in GRIDFS if _first_match(names, g) == index]
        mask = entry.get("mask")
        masked = sorted(mask) if isinstance(mask, dict) else []
        issues += _filter_issues(loaded, path, entry, gridfs, masked)
        if "mask_except" in entry and "mask" not in entry:
            issues.append(loaded.issue([*path, "mask_except"], "only applies with mask", key=True))
        if not masked:
            continue
        issues += _mask_path_issues(loaded, path, masked)
        if "fs.chunks" in gridfs:
            issues.append(
                loaded.issue(
                    [*path, "mask"],
                    "fs.chunks holds the bytes of GridFS files, which cannot be masked; mask "
                    "fields of fs.files instead (filename, metadata...)",
                    key=True,
                )
            )
        if not isinstance(masking, dict):
            issues.append(
                loaded.issue(
                    [*path, "mask"],
                    "a mask needs a masking key: add `masking: {key_env: SYNCD_MASK_KEY}` "
                    "(or key_file) at the top level of the config",
                    key=True,
                )
            )
        issues += _protected_issues(loaded, path, entry, flows, endpoints)
    return issues


def _first_match(names: list[Any], collection: str) -> int | None:
    """Index of the entry that decides `collection` (the first that matches)."""
    for index, name in enumerate(names):
        if isinstance(name, str) and fnmatch.fnmatchcase(collection, name):
            return index
    return None


def _filter_issues(
    loaded: LoadedYaml, path: Path, entry: dict[str, Any], gridfs: list[str], masked: list[str]
) -> list[ConfigIssue]:
    if "filter" not in entry:
        return []
    at: Path = [*path, "filter"]
    if gridfs:
        return [
            loaded.issue(
                at,
                f"{' and '.join(gridfs)} cannot be filtered: GridFS files and chunks always "
                "travel together, and a filter would separate them"
                + (
                    ""
                    if entry["name"] in GRIDFS
                    else "; list fs.files and fs.chunks before this entry, without a filter"
                ),
                key=True,
            )
        ]
    if not isinstance(entry["filter"], dict):
        return []  # the schema's type error says it
    try:
        text = canonical_filter(entry["filter"])
    except FilterInvalid as exc:
        return [loaded.issue(at, str(exc))]
    clock = [v for v in TIME_VARIABLES if f'"{v}"' in text]
    if clock:
        return [
            loaded.issue(
                at,
                f"the filter depends on the time of the sync ({clock[0]}): a document would "
                "leave it without any change, which a sync by change streams cannot see; use a "
                'fixed date ({$date: "2026-01-01T00:00:00Z"}) and move it forward when needed',
            )
        ]
    fields = query_fields(to_query(text))
    clashes = sorted({m for m in masked for f in fields if overlaps(f, m)})
    if not clashes:
        return []
    return [
        loaded.issue(
            at,
            f"the filter uses {', '.join(repr(c) for c in clashes)}, which "
            f"{'is' if len(clashes) == 1 else 'are'} masked: the target holds the masked values,"
            " so the filter would not find the same documents there; filter on unmasked fields",
        )
    ]


def _mask_path_issues(loaded: LoadedYaml, path: Path, masked: list[str]) -> list[ConfigIssue]:
    issues = []
    for inner in masked:
        outer = next((m for m in masked if len(m) < len(inner) and overlaps(m, inner)), None)
        if outer is not None:
            issues.append(
                loaded.issue(
                    [*path, "mask", inner],
                    f"'{inner}' is inside '{outer}', which is masked already; keep one",
                    key=True,
                )
            )
    return issues


def _protected_issues(
    loaded: LoadedYaml,
    path: Path,
    entry: dict[str, Any],
    flows: dict[str, Any] | None,
    endpoints: dict[str, Any] | None,
) -> list[ConfigIssue]:
    """Masked data must never reach production: no flow of the collection may write to a
    protected endpoint."""
    if flows is None or endpoints is None:
        return []
    listed = entry.get("flows")
    travels = [f for f in listed if f in flows] if isinstance(listed, list) else sorted(flows)
    safe = [f for f in sorted(flows) if not _protected(flows[f], endpoints)]
    issues = []
    for flow in travels:
        if not _protected(flows[flow], endpoints):
            continue
        target = flows[flow]["target"]
        if isinstance(listed, list):
            at: Path = [*path, "flows", listed.index(flow)]
            advice = "take it out of this list"
        else:
            at = [*path, "mask"]
            wanted = f"flows: [{', '.join(safe)}]" if safe else "flows into unprotected endpoints"
            advice = f"this collection travels every flow; add {wanted}"
        issues.append(
            loaded.issue(
                at,
                f"masked data must never reach production: flow '{flow}' writes to protected "
                f"endpoint '{target}'; {advice}",
                key=not isinstance(listed, list),
            )
        )
    return issues


def _protected(flow: Any, endpoints: dict[str, Any]) -> bool:
    if not isinstance(flow, dict):
        return False
    target = endpoints.get(str(flow.get("target")))
    return isinstance(target, dict) and target.get("protected") is True
