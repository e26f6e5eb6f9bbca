"""Run a configured flow: the policy decisions around the plan/apply machinery."""

from __future__ import annotations

import errno
import logging
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from syncd.config.model import Config, DriftPolicy, Flow
from syncd.endpoints import Connected, opened, refuse_same_database
from syncd.engine.memory import connect, memory_path
from syncd.engine.plan import CollectionPlan, Plan
from syncd.engine.progress import Reporter, Silent
from syncd.engine.run import (
    SyncResult,
    Workspace,
    apply_plan,
    plan_collections,
    record_results,
    remember_unchanged,
    scan_first_copies,
    with_gridfs_partners,
)
from syncd.engine.source import MongoSource
from syncd.errors import Refused, SyncdError, UsageError
from syncd.lease import target_lease

log = logging.getLogger("syncd.engine")

Confirm = Callable[[Plan], bool]


class PlanRefused(Refused):
    """Refused after planning (drift, conflicts, options); nothing was written."""

    def __init__(self, message: str, plan: Plan) -> None:
        super().__init__(message)
        self.plan = plan


class ConfirmationNeeded(PlanRefused):
    """A protected target, no terminal to ask on, and no --yes / FORCE=true."""


@dataclass
class SyncOptions:
    collections: Sequence[str] | None = None
    dry_run: bool = False
    drift: DriftPolicy | None = None
    allow_protected: bool = False
    confirm: Confirm | None = None
    wait: bool = True
    job: str = "manual"
    reporter: Reporter = field(default_factory=Silent)
    # dry run only: called with each collection's plan while its scratch files still exist
    on_plan: Callable[[CollectionPlan], None] | None = None


def get_flow(config: Config, name: str) -> Flow:
    try:
        return config.flows[name]
    except KeyError:
        known = ", ".join(sorted(config.flows))
        raise UsageError(f"unknown flow '{name}' (flows: {known})") from None


def select_collections(
    config: Config, flow: Flow, requested: Sequence[str] | None, available: set[str]
) -> list[str]:
    """Requested names must be allowed on the flow; by default every allowed collection."""
    if requested:
        refused = [name for name in requested if not config.allows(flow.name, name)]
        if refused:
            raise Refused(
                f"{', '.join(refused)}: not allowed on flow '{flow.name}' by the collections "
                "policy; check `collections:` in the config"
            )
        return with_gridfs_partners(requested)
    return with_gridfs_partners(sorted(n for n in available if config.allows(flow.name, n)))


def skip_unsyncable(
    names: list[str], *sides: MongoSource, requested: Sequence[str] | None = None
) -> list[str]:
    """Views and system collections never travel (on either side); say so, once each.

    Named with -C they refuse the run: the operator asked for exactly them."""
    reasons: dict[str, str] = {}
    for side in sides:
        reasons.update(side.skipped_collections())
    named = [name for name in requested or () if name in reasons]
    if named:
        raise Refused(
            "; ".join(f"{name}: {reasons[name]}" for name in named)
            + "; views and system collections are never synced (a view's source collection"
            " is); leave them out of -C"
        )
    for name in sorted(reasons):
        log.info(
            f"skipping {name}: {reasons[name]}; it is never synced", extra={"collection": name}
        )
    return [name for name in names if name not in reasons]


def sync_flow(config: Config, flow_name: str, options: SyncOptions) -> SyncResult:
    flow = get_flow(config, flow_name)
    source_ep, target_ep = config.endpoints[flow.source], config.endpoints[flow.target]
    with opened(source_ep, target_ep) as (source, target):
        refuse_same_database(source, target)
        if options.dry_run:
            return _plan_only(config, flow, source, target, options)
        with target_lease(config.state_dir, flow.target, job=options.job, wait=options.wait):
            return _sync(config, flow, source, target, options)


def make_plan(
    config: Config,
    flow: Flow,
    source: Connected,
    target: Connected,
    options: SyncOptions,
    workspace: Workspace,
    memory: Path,
    *,
    spool_target: bool = False,
) -> Plan:
    source_db = MongoSource(source.db, source.label)
    target_db = MongoSource(target.db, target.label)
    available = set(source_db.list_collections()) | set(target_db.list_collections())
    names = skip_unsyncable(
        select_collections(config, flow, options.collections, available),
        source_db,
        target_db,
        requested=options.collections,
    )
    connect(memory).close()

    def drift_for(name: str) -> DriftPolicy:
        return options.drift or config.drift_for(name)

    return plan_collections(
        source_db,
        target_db,
        names,
        flow=flow.name,
        source_name=source.name,
        target_name=target.name,
        drift_for=drift_for,
        memory=memory,
        workspace=workspace,
        reporter=options.reporter,
        spool_target=spool_target,
    )


def _plan_only(
    config: Config, flow: Flow, source: Connected, target: Connected, options: SyncOptions
) -> SyncResult:
    """Writes nothing anywhere: scratch files in the system temp dir, memory only read."""
    workspace = Workspace(Path(tempfile.gettempdir()))
    memory = memory_path(config.state_dir)
    if not memory.exists():
        memory = workspace.path / "memory.sqlite"
    try:
        plan = make_plan(config, flow, source, target, options, workspace, memory)
        if options.on_plan is not None:
            for collection in plan.collections:
                options.on_plan(collection)
    finally:
        workspace.close()
    return SyncResult(plan)


def _sync(
    config: Config, flow: Flow, source: Connected, target: Connected, options: SyncOptions
) -> SyncResult:
    started = time.monotonic()
    workspace = Workspace(config.state_dir / "tmp", reap=True)
    try:
        with _space_checked(config, flow):
            plan = make_plan(
                config,
                flow,
                source,
                target,
                options,
                workspace,
                memory_path(config.state_dir),
                spool_target=config.backups.before_sync == "full",
            )
        refusals = plan.refusals
        if refusals:
            record_results(config, plan, [], "refused")
            raise PlanRefused("; ".join(refusals), plan)
        result = SyncResult(plan)
        if not plan.writes and not flow.after:
            remember_unchanged(plan, memory_path(config.state_dir))
            record_results(config, plan, [], "success")
            result.seconds = time.monotonic() - started
            return result
        _check_hooks(config, flow)
        _check_protected(config, flow, plan, options)
        source_db = MongoSource(source.db, source.label)
        target_db = MongoSource(target.db, target.label)
        if config.backups.before_sync == "changes" and plan.destructive:
            scan_first_copies(plan, source_db, target_db, memory_path(config.state_dir))
        result.backup = _backup_before(config, plan, target)
        try:
            result.collections = apply_plan(
                plan,
                source_db,
                target_db,
                memory=memory_path(config.state_dir),
                reporter=options.reporter,
            )
        except Exception:
            record_results(config, plan, [], "failure")
            raise
        finally:
            options.reporter.clear()
        result.applied = True
        record_results(config, plan, result.collections, "success")
        result.hook_messages = _run_hooks(config, flow, target)
        result.seconds = time.monotonic() - started
        return result
    finally:
        workspace.close()


def _check_protected(config: Config, flow: Flow, plan: Plan, options: SyncOptions) -> None:
    if not config.endpoints[flow.target].protected or options.allow_protected:
        return
    if options.confirm is None:
        raise ConfirmationNeeded(
            f"'{flow.target}' is protected and this sync would write to it; confirm on a "
            "terminal, or pass --yes (or FORCE=true) to proceed",
            plan,
        )
    if not options.confirm(plan):
        raise Refused(f"not confirmed; nothing was written to '{flow.target}'")


def _backup_before(config: Config, plan: Plan, target: Connected) -> str | None:
    """A failed backup means no sync: its error propagates before any write."""
    if config.backups.before_sync == "none" or not plan.destructive:
        return None
    from syncd.backup import BackupError
    from syncd.engine.prebackup import backup_before_sync

    try:
        return backup_before_sync(config, plan, target)
    except BackupError as exc:
        raise BackupError(
            f"backup before sync failed, so nothing was written to '{plan.target}': {exc}"
        ) from None


@contextmanager
def _space_checked(config: Config, flow: Flow) -> Iterator[None]:
    """A full disk while planning (scans and spools in the state directory): nothing was
    written yet; say so, and where space is missing, instead of a traceback."""
    try:
        yield
    except (OSError, sqlite3.OperationalError) as exc:
        full = getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
        if not (full or getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL):
            raise
        raise SyncdError(
            f"no space left in {config.state_dir} for the sync's scratch files (they take "
            f"about the size of the collections read); nothing was written to '{flow.target}'. "
            "Free some space there and run it again"
        ) from None


def _check_hooks(config: Config, flow: Flow) -> None:
    if flow.after:
        from syncd.hooks import check_hooks

        check_hooks(config, flow)


def _run_hooks(config: Config, flow: Flow, target: Connected) -> list[str]:
    if not flow.after:
        return []
    from syncd.hooks import run_hooks

    return run_hooks(config, flow, target)
