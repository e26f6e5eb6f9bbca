"""What to do after a sync was refused for drift or conflicts, in the refused flow's
direction: which configured flow brings the target's edits back to the source, the
`--drift` choices, and the `syncd diff` command that shows the documents.

A pull refused because local has edits suggests pushing them first (the flow whose source
is local and target production, by its name); a push refused because production has
edits suggests pulling them first. Where no flow goes the other way for a collection,
only `--drift merge` (keep the target's edits) and `--drift overwrite` (replace them,
after a backup) are left.
"""

from __future__ import annotations

from syncd.config.model import Config, Flow
from syncd.engine.plan import CollectionPlan, Plan


def refusal_advice(config: Config, plan: Plan) -> list[str]:
    """Sentences to print after the refusal of `plan` (nothing was written)."""
    drifted = [c.name for c in plan.collections if _drift_refused(c)]
    conflicts = [c.name for c in plan.collections if c.drift_policy == "merge" and c.conflicts]
    lines = ["Nothing was written."]
    if drifted:
        lines += _drift_advice(config, plan, drifted)
    if conflicts:
        lines.append(
            f"{_names(conflicts)}: documents changed on both {plan.source} and {plan.target}. "
            f"Look at them with `syncd diff`, then rerun with --drift overwrite to take "
            f"{plan.source}'s versions (after a backup), or make both sides agree and run again."
        )
    shown = list(dict.fromkeys(drifted + conflicts))
    if shown:
        lines.append(f"See what changed: {diff_command(plan.flow, shown)}")
    return lines


def diff_command(flow: str, collections: list[str]) -> str:
    return " ".join(["syncd diff", flow, *(f"-C {name}" for name in collections)])


def _drift_refused(plan: CollectionPlan) -> bool:
    return plan.drift_policy == "abort" and plan.drifted > 0


def _drift_advice(config: Config, plan: Plan, drifted: list[str]) -> list[str]:
    lines = []
    covered: set[str] = set()
    for reverse in reverse_flows(config, plan):
        names = [name for name in drifted if config.allows(reverse.name, name)]
        if not names:
            continue
        covered.update(names)
        sync = " ".join(["syncd sync", reverse.name, *(f"-C {name}" for name in names)])
        lines.append(
            f"To keep {plan.target}'s edits, bring them to {plan.source} first: `{sync}` "
            f"(add --drift merge if {plan.source} has edits of its own there), then run "
            f"`syncd sync {plan.flow}` again."
        )
        break
    left = [name for name in drifted if name not in covered]
    if left and covered:
        lines.append(f"No flow brings {_names(left)} from {plan.target} to {plan.source}.")
    elif left:
        lines.append(f"No flow goes from {plan.target} to {plan.source}.")
    lines.append(
        f"Or rerun with --drift merge to keep {plan.target}'s edits and apply the rest, or "
        f"--drift overwrite to replace them with {plan.source}'s (after a backup)."
    )
    return lines


def reverse_flows(config: Config, plan: Plan) -> list[Flow]:
    """Configured flows from the refused flow's target to its source, by name."""
    return [
        flow
        for name, flow in sorted(config.flows.items())
        if flow.source == plan.target and flow.target == plan.source
    ]


def _names(names: list[str]) -> str:
    return ", ".join(names)
