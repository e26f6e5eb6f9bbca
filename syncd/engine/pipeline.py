"""The guarded sequence: how anything is written to a target, a sync's writes or a restore's.

    refuse → confirm → lease → plan → backup → intents → write → verify → remember

in that order, in `write_guarded`, for both (flow.py, restore.py). What differs between
them is a `Steps` each: where the documents come from (a live source, a backup) and what
is planned from them, the backup taken first (the flow's `before_sync`; a restore's safety
backup), whether the sync memory learns anything (a restore's is thrown away), and what
runs after (a flow's hooks). The order, the refusals, the confirmation, the lease and the
write, verification and memory of the plan are this module's, once.

A `Guard` says who is written and how a person agrees to it: a protected endpoint needs a
confirmation (a terminal's, or --yes / FORCE=true), asked after the plan is made (a
person confirms what will be written) and before anything is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from syncd.config.model import Config
from syncd.endpoints import Connected
from syncd.engine.changes import Sides
from syncd.engine.context import RunContext
from syncd.engine.plan import Plan
from syncd.engine.write import (
    CollectionResult,
    SyncResult,
    record_intents,
    remember_plan,
    verify_plan,
    write_plan,
)
from syncd.errors import Refused
from syncd.lease import write_lease

Confirm = Callable[[Plan], bool]


class PlanRefused(Refused):
    """Refused after planning (drift, conflicts, options); nothing was written."""

    def __init__(self, message: str, plan: Plan) -> None:
        super().__init__(message)
        self.plan = plan


class ConfirmationNeeded(PlanRefused):
    """A protected target, no terminal to ask on, and no --yes / FORCE=true."""


@dataclass
class Guard:
    """Who is written (`target`, under the lease `job` takes), and how a person agrees."""

    config: Config
    target: Connected
    job: str
    flow: str | None = None
    wait: bool = True  # for the lease; False: LeaseBusy at once
    protected: bool = False  # a protected endpoint, and no --yes / FORCE=true
    confirm: Confirm | None = None  # asks on a terminal; None: nobody to ask
    unconfirmable: str = ""  # the refusal when nobody can confirm

    def refuse_unconfirmable(self, plan: Plan | None = None) -> None:
        """Refuse a protected target nobody can confirm (before a plan: a restore, which
        always writes, refuses before it reads anything)."""
        if self.protected and self.confirm is None:
            if plan is None:
                raise Refused(self.unconfirmable)
            raise ConfirmationNeeded(self.unconfirmable, plan)

    def confirmed(self, plan: Plan) -> None:
        self.refuse_unconfirmable(plan)
        if self.protected and self.confirm is not None and not self.confirm(plan):
            raise Refused(f"not confirmed; nothing was written to '{self.target.name}'")


class Steps:
    """What one kind of write does at the steps of the sequence; by default nothing."""

    def opened(self, run: RunContext) -> AbstractContextManager[Sides]:
        """The run's two sides (and its memory, workspace, locks) while it runs."""
        raise NotImplementedError

    def plan(self, sides: Sides, run: RunContext) -> Plan:
        raise NotImplementedError

    def settled(self, plan: Plan) -> bool:
        """Nothing to write and nothing to run after: remembered, recorded, done."""
        return False

    def ready(self, plan: Plan, sides: Sides, run: RunContext) -> None:
        """Last checks before the backup (a hook's secrets)."""

    def backup(self, plan: Plan, sides: Sides, run: RunContext) -> str | None:
        """The backup taken before anything is written; its failure stops the run."""
        return None

    def remembers(self) -> bool:
        """Whether the sync memory learns the plan (intents before, digests after)."""
        return True

    def record(self, plan: Plan, results: Sequence[CollectionResult], outcome: str) -> None:
        """The run's outcome, per collection ("success", "failure", "refused")."""

    def after(self, plan: Plan, sides: Sides, run: RunContext) -> list[str]:
        """What runs once the plan is written and verified (hooks); their messages."""
        return []


def write_guarded(guard: Guard, steps: Steps, run: RunContext) -> SyncResult:
    """Plan under the target's lease, refuse or ask, back up, then write, verify and
    remember: in that order, or nothing is written."""
    config, target = guard.config, guard.target
    with write_lease(config, target, job=guard.job, flow=guard.flow, wait=guard.wait) as lease:
        run.lease = lease.check
        started = time.monotonic()
        with steps.opened(run) as sides:
            run.memory = sides.memory
            plan = steps.plan(sides, run)
            if plan.refusals:
                steps.record(plan, [], "refused")
                raise PlanRefused("; ".join(plan.refusals), plan)
            result = SyncResult(plan)
            if steps.settled(plan):
                remember_plan(plan, sides)
                steps.record(plan, [], "success")
                result.seconds = time.monotonic() - started
                return result
            steps.ready(plan, sides, run)
            guard.confirmed(plan)
            result.backup = steps.backup(plan, sides, run)
            try:
                _write(plan, sides, run, result, started, remember=steps.remembers())
            except Exception:
                steps.record(plan, [], "failure")
                raise
            finally:
                run.reporter.clear()
            result.applied = True
            steps.record(plan, result.collections, "success")
            result.hook_messages = steps.after(plan, sides, run)
            result.seconds = time.monotonic() - started
            return result


def _write(
    plan: Plan,
    sides: Sides,
    run: RunContext,
    result: SyncResult,
    started: float,
    *,
    remember: bool,
) -> None:
    if remember:
        record_intents(plan, sides)
    result.collections = write_plan(plan, sides, run, announce=remember)
    verify_plan(plan, sides, result.collections, started)
    if remember:
        remember_plan(plan, sides)
