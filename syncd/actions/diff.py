"""`syncd diff FLOW [-C COLL ...] [--id ID ...] [--limit N] [--json]`: writes nothing."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from syncd.config.model import Config
from syncd.diff import CollectionDiff, DiffReport, DocumentDiff, diff_flow
from syncd.engine.render import plan_header
from syncd.errors import EXIT_OK

OPS = {"insert": "insert", "replace": "update", "delete": "delete"}  # the plan's words


def run(config: Config, args: argparse.Namespace) -> int:
    report = diff_flow(config, args.flow, args.collections, ids=args.ids or (), limit=args.limit)
    if args.json:
        print(json.dumps(as_json(report), indent=2, ensure_ascii=False))
    else:
        print("\n".join(render(report)))
    return EXIT_OK


def render(report: DiffReport) -> list[str]:
    lines = [plan_header(report.plan)] if report.plan is not None else []
    for collection in report.collections:
        lines += _collection_lines(collection, report)
    for text in report.ids_not_found:
        lines.append(
            f"--id {text}: not among the documents this sync would change or found drifted"
        )
    if not report.shown and not report.ids_not_found:
        lines.append("nothing to change: both sides hold the same documents")
    elif report.more:
        lines.append(
            f"{report.shown} document(s) shown, {report.more} more: --limit N shows more, "
            "-C COLL and --id ID narrow it down"
        )
    return lines


def _collection_lines(collection: CollectionDiff, report: DiffReport) -> list[str]:
    lines = []
    for doc in collection.documents:
        lines.append(f"{collection.plan.name} {doc.id}: {OPS[doc.op]}, {doc.note}")
        lines += _field_lines(doc, report)
    if collection.more:
        lines.append(f"{collection.plan.name}: {collection.more} more document(s) not shown")
    for change in collection.plan.specs.describe():
        lines.append(f"{collection.plan.name}: {change}")
    return lines


def _field_lines(doc: DocumentDiff, report: DiffReport) -> list[str]:
    lines = []
    for shown in doc.fields:
        source = shown.source if shown.source is not None else "(absent)"
        target = shown.target if shown.target is not None else "(absent)"
        label = f"{shown.path} ({shown.what})" if shown.what != "value" else shown.path
        lines.append(f"    {label}: {report.source} {source} | {report.target} {target}")
    return lines


def as_json(report: DiffReport) -> dict[str, Any]:
    return {
        "flow": report.flow,
        "source": report.source,
        "target": report.target,
        "totals": report.plan.totals() if report.plan is not None else {},
        "collections": [
            {
                **c.plan.summary(),
                "documents": [
                    {**asdict(d), "op": OPS[d.op], "fields": [asdict(f) for f in d.fields]}
                    for d in c.documents
                ],
                "more": c.more,
            }
            for c in report.collections
        ],
        "ids_not_found": report.ids_not_found,
    }
