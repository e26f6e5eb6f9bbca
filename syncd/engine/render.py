"""Plain-text tables and plan summaries for people; JSON goes through `json.dumps`."""

from __future__ import annotations

from collections.abc import Sequence

from syncd.engine.plan import Plan


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def plan_table(plan: Plan) -> str:
    rows = []
    for c in plan.collections:
        drift = str(c.drifted) if c.drifted else "-"
        if c.drifted and c.drift_policy != "abort":
            drift += f" ({c.drift_policy})"
        rows.append(
            [
                c.name,
                c.source_count,
                c.target_count,
                c.inserts,
                c.replaces,
                deletes_cell(c.deletes, c.kept_deletes),
                drift,
                len(c.specs.describe()) or "-",
                c.found_by,
            ]
        )
    headers = [
        "collection",
        plan.source,
        plan.target,
        "insert",
        "update",
        "delete",
        "drift",
        "index/opt",
        "changes found by",
    ]
    return table(headers, rows)


def deletes_cell(deletes: int, kept: int) -> str:
    """The deletes of a collection, with the source's deletions kept (deletes: false)."""
    return f"{deletes} ({kept} kept)" if kept else str(deletes)


def plan_header(plan: Plan) -> str:
    totals = plan.totals()
    return (
        f"{plan.flow}: {plan.source} -> {plan.target}, {len(plan.collections)} collections: "
        f"{totals['inserts']} to insert, {totals['updates']} to update, "
        f"{totals['deletes']} to delete, {totals['drift']} drifted"
    )


def kept_lines(plan: Plan) -> list[str]:
    """The source's deletions a sync does not apply (deletes: false), per collection."""
    return [
        f"  {c.name}: {c.kept_deletes} document(s) that {plan.source} does not have stay on "
        f"{plan.target} (deletes: false)"
        for c in plan.collections
        if c.kept_deletes
    ]


def drift_details(plan: Plan) -> list[str]:
    lines = []
    for c in plan.collections:
        if c.drift_ids and (c.drift_policy == "abort" or c.conflicts):
            ids = c.conflict_ids if c.drift_policy == "merge" else c.drift_ids
            count = c.conflicts if c.drift_policy == "merge" else c.drifted
            more = f" and {count - len(ids)} more" if count > len(ids) else ""
            what = (
                "changed on both sides"
                if c.drift_policy == "merge"
                else (f"changed on {plan.target} since the last sync")
            )
            lines.append(f"  {c.name}: {what}: {', '.join(ids)}{more}")
        for change in c.specs.immutable:
            lines.append(f"  {c.name}: option '{change}' differs and cannot be changed in place")
    return lines
