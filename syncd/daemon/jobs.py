"""What a scheduled job does: run a flow or back up an endpoint, and say how it went.

Every function here returns an `Outcome` and never raises: a job's failure is reported,
logged and counted by the runner, and the daemon goes on.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from syncd.advice import refusal_advice
from syncd.backup import BackupError, apply_retention, create_backup, list_backups
from syncd.compare import verify_flow
from syncd.config.model import Config, Schedule
from syncd.endpoints import Connections, open_endpoint
from syncd.engine.flow import ConfirmationNeeded, PlanRefused, SyncOptions, sync_flow
from syncd.engine.plan import CollectionPlan
from syncd.engine.progress import Reporter
from syncd.engine.write import SyncResult
from syncd.errors import Refused, SyncdError
from syncd.lease import LeaseBusy
from syncd.metrics import DOC_OPS, Result

log = logging.getLogger("syncd.daemon")


class Abandoned(SyncdError):
    """The daemon is stopping: the job stopped at a batch boundary."""


@dataclass
class Outcome:
    result: Result
    reason: str = ""  # why, when not a success; safe to log (no secrets)
    seconds: float = 0.0
    fields: dict[str, Any] = field(default_factory=dict)  # counts for the log line
    docs: dict[tuple[str, str], int] = field(default_factory=dict)  # (collection, op) -> n
    drift: dict[str, int] = field(default_factory=dict)  # collection -> drifted documents
    backups: tuple[int, int, float | None] | None = None  # kept, bytes, newest (unix time)
    presync: tuple[str, Result] | None = None  # a flow's backup before writing: endpoint, result
    abandoned: bool = False  # stopped by a shutdown (counted as a failure)
    modes: dict[str, int] = field(default_factory=dict)  # how changes were found -> collections
    refused: list[str] = field(default_factory=list)  # collections whose plan refused the run
    more: bool = False  # the source had more changes than the run's batch took
    wrote: bool = False  # the run wrote to the target
    unexpected: BaseException | None = None  # not a SyncdError: logged with its traceback
    verify: Literal["equal", "different"] | None = None  # a verify job that ran
    mismatched: dict[str, int] = field(default_factory=dict)  # verify: collection -> documents


class Flag(Protocol):
    def is_set(self) -> bool: ...


class StopCheck:
    """Raises Abandoned once the daemon is stopping; called between batches."""

    def __init__(self, stopping: Flag) -> None:
        self.stopping = stopping

    def __call__(self) -> None:
        if self.stopping.is_set():
            raise Abandoned(
                "syncd is stopping; stopped between two batches, the next run converges"
            )


class DaemonReporter(Reporter):
    """No terminal drawing; a planned collection is logged only when it has something to
    say. (A job stops through its run's stop check, `SyncOptions.stop`: context.py.)"""

    def __init__(self) -> None:
        super().__init__(sys.stderr, live=False)

    def planned(self, plan: CollectionPlan) -> None:
        if plan.writes or plan.drifted or plan.conflicts:  # quiet for collections in step
            super().planned(plan)


def run_sync(
    config: Config,
    schedule: Schedule,
    check: StopCheck,
    *,
    collections: Sequence[str] | None = None,
    change_limit: int | None = None,
    hooks_when_written: bool = False,
    connections: Connections | None = None,
    scan_unfollowed: bool = True,
) -> Outcome:
    """One run of a flow job; `collections` instead of the schedule's (a continuous job
    leaving out the ones its drift stopped), `change_limit` source changes at most, and
    hooks only for the collections written (`hooks_when_written`, a continuous batch);
    `connections` keeps the endpoints open from one run to the next (a continuous job);
    `scan_unfollowed` False: a target without change streams is checked by `_id` only."""
    assert schedule.flow is not None  # noqa: S101 - the caller checked the kind
    started = time.monotonic()
    options = SyncOptions(
        collections=collections if collections is not None else schedule.collections,
        allow_protected=schedule.unattended,
        confirm=None,
        wait=False,
        job=schedule.name,
        change_limit=change_limit,
        hooks_when_written=hooks_when_written,
        reporter=DaemonReporter(),
        stop=check,
        connections=connections,
        scan_unfollowed=scan_unfollowed,
    )
    try:
        check()
        result = sync_flow(config, schedule.flow, options)
    except LeaseBusy as exc:
        return Outcome("skipped", str(exc), time.monotonic() - started)
    except ConfirmationNeeded as exc:
        return Outcome("refused", _protected_hint(str(exc), schedule), time.monotonic() - started)
    except PlanRefused as exc:
        drift = {c.name: _blocking(c) for c in exc.plan.collections}
        reason = " ".join([f"{exc}.", *refusal_advice(config, exc.plan)])
        outcome = Outcome("refused", reason, time.monotonic() - started, drift=drift)
        outcome.fields = {"drift": sum(drift.values())}
        outcome.refused = [c.name for c in exc.plan.collections if c.refusal is not None]
        return outcome
    except Refused as exc:
        return Outcome("refused", _protected_hint(str(exc), schedule), time.monotonic() - started)
    except Abandoned as exc:
        return Outcome("failure", str(exc), time.monotonic() - started, abandoned=True)
    except BackupError as exc:  # only the backup before writing raises it: no sync
        outcome = Outcome("failure", str(exc), time.monotonic() - started)
        outcome.presync = (config.flows[schedule.flow].target, "failure")
        return outcome
    except SyncdError as exc:
        return Outcome("failure", str(exc), time.monotonic() - started)
    except Exception as exc:  # a job never kills the daemon; the traceback shows the cause
        return unexpected(exc, started)
    outcome = _sync_outcome(result, time.monotonic() - started)
    if result.backup:
        target = config.flows[schedule.flow].target
        outcome.presync = (target, "success")
        outcome.backups = _inventory(config, target)
    return outcome


def unexpected(exc: Exception, started: float) -> Outcome:
    """A failure that is not one of syncd's own errors: the runner logs its traceback."""
    reason = f"unexpected error: {type(exc).__name__}: {exc}"
    return Outcome("failure", reason, time.monotonic() - started, unexpected=exc)


def _blocking(plan: CollectionPlan) -> int:
    """Target documents that stopped the run: drift under abort, conflicts under merge."""
    if plan.drift_policy == "abort":
        return plan.drifted
    return plan.conflicts if plan.drift_policy == "merge" else 0


def _protected_hint(message: str, schedule: Schedule) -> str:
    if "protected" in message and not schedule.unattended:
        return (
            f"'{schedule.flow}' writes to a protected endpoint and nobody is there to confirm; "
            f"set `unattended: true` on schedule '{schedule.name}' to allow it"
        )
    return message


def _sync_outcome(result: SyncResult, seconds: float) -> Outcome:
    totals = result.plan.totals()
    # Every collection of the run, written or not: a success resets its drift gauge to 0.
    docs: dict[tuple[str, str], int] = {
        (c.name, op): 0 for c in result.plan.collections for op in DOC_OPS
    }
    docs.update(result.documents())
    fields: dict[str, Any] = {
        "collections": len(result.plan.collections),
        "inserted": sum(n for (_, op), n in docs.items() if op == "insert"),
        "updated": sum(n for (_, op), n in docs.items() if op == "update"),
        "deleted": sum(n for (_, op), n in docs.items() if op == "delete"),
    }
    if totals["drift"]:
        fields["drift"] = totals["drift"]
    if result.backup:
        fields["backup"] = result.backup
    if result.hook_messages:
        fields["hooks"] = len(result.hook_messages)
    outcome = Outcome("success", "", seconds, fields=fields, docs=docs, modes=result.modes())
    outcome.more, outcome.wrote = result.plan.more, result.applied
    return outcome


def run_verify(config: Config, schedule: Schedule, check: StopCheck) -> Outcome:
    """`syncd verify FLOW` on a schedule: a success that found differences still says so
    (`verify` "different"), and each compared collection's mismatched documents."""
    assert schedule.verify is not None  # noqa: S101
    started = time.monotonic()
    try:
        check()
        report = verify_flow(
            config, schedule.verify, schedule.collections, reporter=DaemonReporter(), stop=check
        )
    except Abandoned as exc:
        return Outcome("failure", str(exc), time.monotonic() - started, abandoned=True)
    except SyncdError as exc:
        return Outcome("failure", str(exc), time.monotonic() - started)
    except Exception as exc:
        return unexpected(exc, started)
    differ = [c for c in report.collections if not c.equal]
    outcome = Outcome("success", "", time.monotonic() - started, verify=report.result)
    outcome.mismatched = {c.name: c.mismatched for c in report.collections}
    outcome.fields = {
        "collections": len(report.collections),
        "mismatched": sum(c.mismatched for c in report.collections),
    }
    if differ:
        outcome.reason = "; ".join(
            f"{c.name}: {c.missing} missing, {c.extra} extra, {c.different} different"
            + (f", {'; '.join(c.specs)}" if c.specs else "")
            for c in differ
        )
    return outcome


def run_backup(config: Config, schedule: Schedule, check: StopCheck) -> Outcome:
    assert schedule.backup is not None  # noqa: S101
    started = time.monotonic()
    directory = config.state.backups
    endpoint = config.endpoints[schedule.backup]
    try:
        check()
        connected = open_endpoint(endpoint)
        try:
            info = create_backup(
                connected.db,
                endpoint.name,
                directory,
                compress=config.backups.compress,
                reason=f"schedule {schedule.name}",
                on_progress=lambda collection, done: check(),
            )
        finally:
            connected.close()
        removed = apply_retention(directory, endpoint.name, config.backups.keep_last)
    except Abandoned as exc:
        return Outcome("failure", str(exc), time.monotonic() - started, abandoned=True)
    except SyncdError as exc:
        return Outcome("failure", str(exc), time.monotonic() - started)
    except Exception as exc:
        return unexpected(exc, started)
    fields = {
        "backup": info.name,
        "collections": len(info.collections),
        "documents": info.documents,
        "bytes": info.size_bytes,
        "removed": len(removed),
    }
    outcome = Outcome("success", "", time.monotonic() - started, fields=fields)
    outcome.backups = _inventory(config, endpoint.name)
    return outcome


def _inventory(config: Config, endpoint: str) -> tuple[int, int, float | None] | None:
    """`backup_inventory` after a backup and its retention; None when it cannot be read."""
    try:
        return backup_inventory(config, endpoint)
    except (OSError, ValueError) as exc:
        log.warning("backups of %s not counted: %s", endpoint, exc)
        return None


def backup_inventory(config: Config, endpoint: str) -> tuple[int, int, float | None]:
    """Verified backups kept for `endpoint`: how many, their bytes, the newest one's time."""
    good = [b for b in list_backups(config.state.backups) if b.endpoint == endpoint and b.verified]
    newest = good[0].created.timestamp() if good else None
    return len(good), sum(b.size_bytes for b in good), newest
