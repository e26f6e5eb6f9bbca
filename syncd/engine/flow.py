"""A sync of a configured flow, top to bottom, in one place:

open both endpoints → refuse the same database → take the target's lease → select the
collections → plan (find the changes, classify) → refuse, or ask → back up → record
intents → write → verify → remember → record the run → hooks.

`--dry-run` and `status` stop after the plan and write nothing anywhere.
"""

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

from syncd.config.model import Config, DriftPolicy, Flow, own_collection
from syncd.endpoints import Connected, KeptOpen, opened, refuse_same_database
from syncd.engine.changes import Sides, stream_state
from syncd.engine.plan import CollectionPlan, Plan, plan_collections
from syncd.engine.policy import Policies
from syncd.engine.progress import Reporter, Silent
from syncd.engine.scratch import SRC, TGT, Workspace
from syncd.engine.write import (
    CollectionResult,
    SyncResult,
    record_intents,
    remember_plan,
    verify_plan,
    with_gridfs_partners,
    write_plan,
)
from syncd.errors import Refused, SyncdError, UsageError
from syncd.lease import write_lease
from syncd.mongo.source import MongoSource
from syncd.state.memory import Pair, SyncMemory

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
    full: bool = False  # read both sides whole instead of following change streams
    # a side without change streams is read whole; False (a continuous batch between the
    # target's whole reads): only what the source's stream names is read there, by _id
    scan_unfollowed: bool = True
    change_limit: int | None = None  # at most this many source changes (a continuous batch)
    hooks_when_written: bool = False  # run a hook only when the run wrote its collection
    reporter: Reporter = field(default_factory=Silent)
    connections: KeptOpen | None = None  # endpoints kept open: a continuous job's, a command's
    # dry run only: called with each collection's plan while its scratch files still exist
    on_plan: Callable[[CollectionPlan], None] | None = None


def get_flow(config: Config, name: str) -> Flow:
    try:
        return config.flows[name]
    except KeyError:
        known = ", ".join(sorted(config.flows))
        raise UsageError(f"unknown flow '{name}' (flows: {known})") from None


def sync_flow(config: Config, flow_name: str, options: SyncOptions) -> SyncResult:
    flow = get_flow(config, flow_name)
    source_ep, target_ep = config.endpoints[flow.source], config.endpoints[flow.target]
    with opened(source_ep, target_ep, kept=options.connections) as (source, target):
        refuse_same_database(source, target)
        if options.dry_run:
            return _plan_only(config, flow, source, target, options)
        with write_lease(config, target, job=options.job, flow=flow.name, wait=options.wait):
            return _sync(config, flow, source, target, options)


def _plan_only(
    config: Config, flow: Flow, source: Connected, target: Connected, options: SyncOptions
) -> SyncResult:
    """Writes nothing anywhere: scratch files in the system temp dir, memory only read."""
    workspace = Workspace(Path(tempfile.gettempdir()))
    try:
        with SyncMemory.of(config.state_dir, readonly=True) as memory:
            sides = _sides(config, source, target, memory, options)
            plan = _plan(config, flow, sides, options, workspace)
            if options.on_plan is not None:
                for collection in plan.collections:
                    options.on_plan(collection)
            return SyncResult(plan)
    finally:
        workspace.close()


def _sync(
    config: Config, flow: Flow, source: Connected, target: Connected, options: SyncOptions
) -> SyncResult:
    started = time.monotonic()
    workspace = Workspace(config.state_dir / "tmp", reap=True)
    try:
        with SyncMemory.of(config.state_dir) as memory:
            sides = _sides(config, source, target, memory, options)
            with _space_checked(config, flow):
                plan = _plan(
                    config,
                    flow,
                    sides,
                    options,
                    workspace,
                    spool_target=config.backups.before_sync == "full",
                    read_ahead=config.backups.before_sync == "changes",
                )
            if plan.refusals:
                _record(memory, plan, [], "refused")
                raise PlanRefused("; ".join(plan.refusals), plan)
            result = SyncResult(plan)
            if not plan.writes and (not flow.after or options.hooks_when_written):
                remember_plan(plan, sides)
                _record(memory, plan, [], "success")
                result.seconds = time.monotonic() - started
                return result
            _check_hooks(config, flow)
            _check_protected(config, flow, plan, options)
            if config.backups.before_sync == "changes" and plan.destructive:
                _plan_first_copies_fully(plan, sides, options)
            result.backup = _backup_before(config, plan, target)
            try:
                record_intents(plan, sides)
                result.collections = write_plan(plan, sides, options.reporter)
                verify_plan(plan, sides, result.collections, started)
                remember_plan(plan, sides)
            except Exception:
                _record(memory, plan, [], "failure")
                raise
            finally:
                options.reporter.clear()
            result.applied = True
            _record(memory, plan, result.collections, "success")
            written = {c.name for c in plan.collections if c.writes}
            result.hook_messages = _run_hooks(
                config, flow, target, plan, written if options.hooks_when_written else None
            )
            result.seconds = time.monotonic() - started
            return result
    finally:
        workspace.close()


def _sides(
    config: Config, source: Connected, target: Connected, memory: SyncMemory, options: SyncOptions
) -> Sides:
    """The run's two sides, built once; the pair is bound to the two databases. Each side
    is read through the collections' policies (filter; the source also masks)."""
    identities = {c.name: "/".join((*c.hosts, c.database)) for c in (source, target)}
    pair = Pair.of(source.name, target.name, identities)
    if (message := memory.bind(pair)) is not None:
        log.warning(message, extra={"pair": pair.names})
    policies = Policies(config)
    return Sides(
        MongoSource(source.db, source.label, views=policies.reads(SRC)),
        MongoSource(target.db, target.label, views=policies.reads(TGT)),
        source.name,
        target.name,
        pair,
        memory,
        policies=policies,
        limit=options.change_limit,
        scan_unfollowed=options.scan_unfollowed,
    )


def _plan(
    config: Config,
    flow: Flow,
    sides: Sides,
    options: SyncOptions,
    workspace: Workspace,
    *,
    spool_target: bool = False,
    read_ahead: bool = False,
) -> Plan:
    assert isinstance(sides.source, MongoSource)  # noqa: S101 - a flow reads an endpoint
    stream_state(sides)  # before the listing: see there
    available = set(sides.source.list_collections()) | set(sides.target.list_collections())
    names = skip_unsyncable(
        select_collections(config, flow, options.collections, available),
        sides.source,
        sides.target,
        requested=options.collections,
    )

    def drift_for(name: str) -> DriftPolicy:
        return options.drift or config.drift_for(name)

    return plan_collections(
        sides,
        names,
        flow=flow.name,
        drift_for=drift_for,
        workspace=workspace,
        reporter=options.reporter,
        full=options.full,
        spool_target=spool_target,
        read_ahead=read_ahead,
    )


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
    for name in sorted(n for n in reasons if not own_collection(n)):  # in every target: quiet
        log.info(
            f"skipping {name}: {reasons[name]}; it is never synced", extra={"collection": name}
        )
    return [name for name in names if name not in reasons]


def _plan_first_copies_fully(plan: Plan, sides: Sides, options: SyncOptions) -> None:
    """A `changes` backup must list the ids a first copy inserts before it writes them:
    plan those collections by a full read instead."""
    from syncd.engine.plan import plan_fully

    for c in plan.collections:
        if c.first_copy:
            plan_fully(c, sides, options.reporter)


def _record(
    memory: SyncMemory, plan: Plan, results: Sequence[CollectionResult], result: str
) -> None:
    by_name = {r.name: r for r in results}
    assert plan.pair is not None  # noqa: S101
    for c in plan.collections:
        r = by_name.get(c.name)
        memory.record_run(
            plan.pair,
            c.name,
            flow=plan.flow,
            source=plan.source,
            target=plan.target,
            result=result,
            verified=bool(r and r.verified),
            counts={
                "inserted": r.inserted if r else 0,
                "updated": r.replaced if r else 0,
                "deleted": r.deleted if r else 0,
                "kept": c.kept,
                "kept_deletes": c.kept_deletes,
                "drift": c.drifted,
                "mode": c.mode,
                "full_read_reason": c.reason,
            },
        )


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


def _run_hooks(
    config: Config, flow: Flow, target: Connected, plan: Plan, only_for: set[str] | None
) -> list[str]:
    if not flow.after:
        return []
    from syncd.hooks import run_hooks

    assert plan.pair is not None  # noqa: S101
    return run_hooks(config, flow, target, plan.pair, only_for)
