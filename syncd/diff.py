"""`syncd diff FLOW`: what a sync would change, and what drifted, document by document.

The plan is made as `sync --dry-run` makes it (nothing is written anywhere); while each
collection's scratch files still exist, `planned_documents` reads its per-document rows
(the only place that knows how the plan stores them), the documents are fetched from both
sides by `_id` in batches, and `syncd.docdiff` lists the fields that differ. At most `limit`
documents are fetched and shown; the rest are only counted.

Hook password fields (`hooks.*.password_field` on the hook's collection) are never shown:
both values read `<hidden>`. Documents are shown as the sync compares them: the source's
masked by the collection's `mask` (engine/policy.py), never with the original values.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import bson
from bson import ObjectId
from pymongo.collection import Collection

from syncd.config.model import Config, DriftPolicy
from syncd.docdiff import ABSENT, HIDDEN, FieldDiff, field_differences, hidden, show, type_name
from syncd.endpoints import opened
from syncd.engine.flow import SyncOptions, get_flow, sync_flow
from syncd.engine.plan import CollectionPlan, Plan
from syncd.engine.policy import Policies
from syncd.mongo.fetch import batched, fetch_raw
from syncd.mongo.rawbson import id_key, id_value, raw_id
from syncd.mongo.view import View

DEFAULT_LIMIT = 50
Op = Literal["insert", "replace", "delete"]


@dataclass(frozen=True)
class PlannedDoc:
    """One document the plan would write, or found drifted."""

    rid: bytes  # the raw `_id` element (type byte + value)
    op: Op
    drifted: bool  # changed on the target since the last sync (or no memory yet)
    action: str  # apply | keep (merge keeps the target's edit) | conflict | retain (deletes: false)


def planned_documents(
    plan: CollectionPlan, source: Collection[Any], query: dict[str, Any], limit: int
) -> Iterator[PlannedDoc]:
    """The plan's per-document rows, drifted ones first, then by `_id`, as its way of
    writing lists them (`Writing.rows`: from the scratch; a first copy's from `source`,
    matching `query`, at most `limit`)."""
    for rid, op, drifted, action in plan.writing.rows(plan, source, query, limit):
        yield PlannedDoc(rid, cast(Op, op), drifted, action)


@dataclass(frozen=True)
class ShownField:
    path: str
    source: str | None  # relaxed Extended JSON (shortened), None when absent
    target: str | None
    what: str = "value"


@dataclass
class DocumentDiff:
    id: str
    op: Op
    drifted: bool
    action: str
    note: str  # why, in words
    fields: list[ShownField] = field(default_factory=list)


@dataclass
class CollectionDiff:
    plan: CollectionPlan
    documents: list[DocumentDiff] = field(default_factory=list)
    more: int = 0  # documents of the plan not shown (past the limit)


@dataclass
class DiffReport:
    flow: str
    source: str
    target: str
    collections: list[CollectionDiff] = field(default_factory=list)
    ids_not_found: list[str] = field(default_factory=list)
    plan: Plan | None = None

    @property
    def shown(self) -> int:
        return sum(len(c.documents) for c in self.collections)

    @property
    def more(self) -> int:
        return sum(c.more for c in self.collections)


def id_candidates(text: str) -> list[Any]:
    """The `_id`s an `--id` value may mean: an ObjectId for 24 hex digits, an integer for a
    number, and always the string itself. Any of them matches."""
    candidates: list[Any] = []
    if len(text) == 24 and ObjectId.is_valid(text):
        candidates.append(ObjectId(text))
    try:
        candidates.append(int(text))
    except ValueError:
        pass
    candidates.append(text)
    return candidates


def parse_ids(texts: Iterable[str]) -> dict[bytes, str]:
    """`--id` values by the identity (`id_key`) of each `_id` they may mean."""
    keys: dict[bytes, str] = {}
    for text in texts:
        for value in id_candidates(text):
            keys[id_key(raw_id(bson.encode({"_id": value})))] = text
    return keys


def diff_flow(
    config: Config,
    flow_name: str,
    collections: Sequence[str] | None = None,
    *,
    ids: Sequence[str] = (),
    limit: int = DEFAULT_LIMIT,
) -> DiffReport:
    flow = get_flow(config, flow_name)
    report = DiffReport(flow.name, flow.source, flow.target)
    wanted = parse_ids(ids)
    found: set[str] = set()
    budget = [max(0, limit)]
    policies = Policies(config)
    with opened(config.endpoints[flow.source], config.endpoints[flow.target]) as (src, tgt):

        def on_plan(plan: CollectionPlan) -> None:
            secrets = [h.password_field for h in config.hooks.values() if h.collection == plan.name]
            source_view = policies(plan.name).source
            context = _Context(
                src.db[plan.name], tgt.db[plan.name], flow.target, secrets, source_view
            )
            rows = planned_documents(plan, context.source, _query(context, wanted), budget[0])
            if wanted:
                rows = _matching(rows, wanted, found)
            collection = _collection_diff(plan, rows, context, budget)
            if not wanted:  # rows not listed (a first copy's) are counted by the plan
                shown = len(collection.documents)
                collection.more = max(collection.more, plan.changes - shown)
            report.collections.append(collection)

        options = SyncOptions(collections=collections, dry_run=True, on_plan=on_plan)
        report.plan = sync_flow(config, flow.name, options).plan
    report.ids_not_found = sorted(set(wanted.values()) - found)
    return report


@dataclass(frozen=True)
class _Context:
    source: Collection[Any]
    target: Collection[Any]
    target_name: str
    secrets: list[str]
    view: View  # the source's documents as the sync sees them (filtered, masked)


def _matching(
    rows: Iterable[PlannedDoc], wanted: dict[bytes, str], found: set[str]
) -> Iterator[PlannedDoc]:
    for row in rows:
        text = wanted.get(id_key(row.rid))
        if text is not None:
            found.add(text)
            yield row


def _query(context: _Context, wanted: dict[bytes, str]) -> dict[str, Any]:
    """The source's documents a listing read from the source shows: those asked for, as
    the sync reads them (its filter)."""
    query: dict[str, Any] = {}
    if wanted:
        values = [v for text in sorted(set(wanted.values())) for v in id_candidates(text)]
        query = {"_id": {"$in": values}}
    if context.view.query is not None:
        query = {"$and": [query, context.view.query]}
    return query


def _collection_diff(
    plan: CollectionPlan, rows: Iterable[PlannedDoc], context: _Context, budget: list[int]
) -> CollectionDiff:
    result = CollectionDiff(plan)
    shown: list[PlannedDoc] = []
    for row in rows:
        if budget[0] > 0:
            shown.append(row)
            budget[0] -= 1
        else:
            result.more += 1
    for batch in batched(shown):
        result.documents += _document_diffs(batch, plan.drift_policy, context)
    return result


def _document_diffs(
    batch: list[PlannedDoc], policy: DriftPolicy, context: _Context
) -> list[DocumentDiff]:
    name = context.source.name
    sources = fetch_raw(
        context.source, [r.rid for r in batch if r.op != "delete"], what=f"diff {name}"
    )
    sources = {key: context.view.transform(raw) for key, raw in sources.items()}
    targets = fetch_raw(
        context.target, [r.rid for r in batch if r.op != "insert"], what=f"diff {name}"
    )
    documents = []
    for row in batch:
        key = id_key(row.rid)
        source, target = sources.get(key), targets.get(key)
        doc = DocumentDiff(
            str(id_value(row.rid)), row.op, row.drifted, row.action, _note(row, policy, context)
        )
        if source is None and row.op != "delete" or target is None and row.op != "insert":
            doc.note += "; it changed again since the plan was made"
        if row.op == "replace" or row.drifted:
            doc.fields = _shown_fields(source, target, context.secrets)
        documents.append(doc)
    return documents


def _shown_fields(
    source: bytes | None, target: bytes | None, secrets: list[str]
) -> list[ShownField]:
    differences = field_differences(
        bson.decode(source) if source is not None else {},
        bson.decode(target) if target is not None else {},
    )
    return [_shown(d, secrets) for d in differences]


def _shown(diff: FieldDiff, secrets: list[str]) -> ShownField:
    if hidden(diff.path, secrets):
        return ShownField(
            diff.path,
            HIDDEN if diff.source is not ABSENT else None,
            HIDDEN if diff.target is not ABSENT else None,
            diff.what,
        )
    source, target = _text(diff.source), _text(diff.target)
    if source is not None and source == target:  # same rendering, different BSON type
        source += f" ({type_name(diff.source)})"
        target += f" ({type_name(diff.target)})"
    return ShownField(diff.path, source, target, diff.what)


def _text(value: Any) -> str | None:
    return None if value is ABSENT else show(value)


def _note(row: PlannedDoc, policy: DriftPolicy, context: _Context) -> str:
    target = context.target_name
    if row.action == "conflict":
        return f"changed on both sides since the last sync (drift: {policy} refuses the run)"
    if row.action == "keep":
        return f"changed on {target} since the last sync; kept (drift: merge)"
    if row.action == "retain":
        return f"only on {target}; kept (deletes: false)"
    if not row.drifted:
        return {
            "insert": f"not on {target}",
            "delete": f"only on {target}",
            "replace": "differs",
        }[row.op]
    what = {
        "insert": f"deleted on {target} since the last sync",
        "delete": f"added on {target} since the last sync",
        "replace": f"changed on {target} since the last sync",
    }[row.op]
    consequence = {
        "abort": "drift: abort refuses the run",
        "overwrite": "drift: overwrite replaces it, after a backup",
        "merge": "drift: merge keeps it",
    }[policy]
    return f"drifted: {what} ({consequence})"
