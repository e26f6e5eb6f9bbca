"""`syncd sync FLOW`: plan, refuse or confirm, apply, report."""

from __future__ import annotations

import argparse
import json
import sys

from syncd.advice import refusal_advice
from syncd.cli import ask, forced
from syncd.config.model import Config
from syncd.engine.flow import ConfirmationNeeded, PlanRefused, SyncOptions, sync_flow
from syncd.engine.plan import Plan
from syncd.engine.progress import Reporter
from syncd.engine.render import drift_details, kept_lines, plan_header, plan_table
from syncd.errors import EXIT_OK, EXIT_REFUSED


def confirm_on_terminal(plan: Plan) -> bool:
    """Show what will be written where and ask; only called with a terminal attached."""
    print(plan_header(plan), file=sys.stderr)
    print(plan_table(plan), file=sys.stderr)
    return ask(f"Write these changes to protected endpoint '{plan.target}'?")


def run(config: Config, args: argparse.Namespace) -> int:
    interactive = sys.stdin.isatty() and sys.stderr.isatty()
    options = SyncOptions(
        collections=args.collections,
        dry_run=args.dry_run,
        drift=args.drift,
        allow_protected=forced(args),
        confirm=confirm_on_terminal if interactive else None,
        wait=not args.no_wait,
        job="manual sync",
        full=args.full,
        reporter=Reporter(),
    )
    try:
        result = sync_flow(config, args.flow, options)
    except PlanRefused as exc:
        print(plan_header(exc.plan), file=sys.stderr)
        print(plan_table(exc.plan), file=sys.stderr)
        print(f"syncd: refused: {exc}", file=sys.stderr)
        if not isinstance(exc, ConfirmationNeeded):
            for line in drift_details(exc.plan) + refusal_advice(config, exc.plan):
                print(line, file=sys.stderr)
        return EXIT_REFUSED
    plan = result.plan
    if args.json:
        print(json.dumps(_as_json(result, dry_run=args.dry_run), indent=2, default=str))
        return EXIT_OK
    print(plan_header(plan))
    print(plan_table(plan))
    for line in kept_lines(plan):
        print(line)
    if args.dry_run:
        for refusal in plan.refusals:
            print(f"a real run would be refused: {refusal}")
        for line in drift_details(plan):
            print(line)
        print("dry run: nothing was written")
        return EXIT_OK
    if result.backup:
        print(f"backup before sync: {result.backup}")
    if not result.applied:
        print("nothing to do: target already equal")
    else:
        verified = sum(1 for c in result.collections if c.verified)
        print(
            f"done in {result.seconds:.1f} s; {verified}/{len(result.collections)} collections "
            "verified equal to the source"
        )
    for message in result.hook_messages:
        print(message)
    return EXIT_OK


def _as_json(result: object, *, dry_run: bool) -> dict[str, object]:
    from syncd.engine.write import SyncResult

    assert isinstance(result, SyncResult)  # noqa: S101
    return {
        "flow": result.plan.flow,
        "source": result.plan.source,
        "target": result.plan.target,
        "dry_run": dry_run,
        "applied": result.applied,
        "backup": result.backup,
        "seconds": round(result.seconds, 3),
        "totals": result.plan.totals(),
        "collections": [c.summary() for c in result.plan.collections],
        "results": [vars(c) for c in result.collections],
        "hooks": result.hook_messages,
    }
