"""`syncd verify FLOW [-C COLL ...] [--json]`: exit 0 when both sides are equal, 1 when not."""

from __future__ import annotations

import argparse
import json

from syncd.compare import CollectionVerify, VerifyReport, verify_flow
from syncd.config.model import Config
from syncd.engine.progress import Reporter
from syncd.engine.render import table
from syncd.errors import EXIT_FAILED, EXIT_OK


def run(config: Config, args: argparse.Namespace) -> int:
    report = verify_flow(config, args.flow, args.collections, reporter=Reporter())
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, default=str))
    else:
        print("\n".join(render(report)))
    return EXIT_OK if report.equal else EXIT_FAILED


def render(report: VerifyReport) -> list[str]:
    differ = [c for c in report.collections if not c.equal]
    lines = [
        f"verify {report.flow}: {report.source} -> {report.target}, "
        f"{len(report.collections)} collections compared in {report.seconds:.1f} s, "
        f"{len(differ)} differ"
    ]
    rows = [
        [
            c.name,
            c.source_count,
            c.target_count,
            c.missing or "-",
            c.extra or "-",
            c.different or "-",
            len(c.specs) or "-",
        ]
        for c in report.collections
    ]
    headers = ["collection", report.source, report.target, "missing", "extra", "different"]
    lines.append(table([*headers, "index/opt"], rows))
    for c in differ:
        lines += _details(c, report.target)
    if differ:
        lines.append(
            f"different: {report.target} does not hold what {report.source} holds; "
            f"`syncd diff {report.flow}` shows what a sync would change"
        )
    else:
        lines.append("equal: both sides hold the same documents, indexes and options")
    return lines


def _details(c: CollectionVerify, target: str) -> list[str]:
    lines = []
    for what, count, ids in (
        (f"missing on {target}", c.missing, c.missing_ids),
        (f"only on {target}", c.extra, c.extra_ids),
        ("different", c.different, c.different_ids),
    ):
        if count:
            more = f" and {count - len(ids)} more" if count > len(ids) else ""
            lines.append(f"  {c.name}: {what}: {', '.join(ids)}{more}")
    lines += [f"  {c.name}: {spec}" for spec in c.specs]
    return lines
