"""A sync of a configured flow: open both endpoints, refuse the same database, then the
guarded sequence (pipeline.py) with a sync's steps: under the target's lease, select the
collections and plan them (find the changes, classify); refuse, or ask; back up
(`before_sync`); record intents, write, verify, remember; record the run; hooks.

`--dry-run` and `status` stop after the plan and write nothing anywhere.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from syncd.config.model import Config, DriftPolicy, Flow, own_collection
from syncd.endpoints import Connected, KeptOpen, opened, refuse_same_database
from syncd.engine.changes import Sides, stream_state
from syncd.engine.context import Check, RunContext, go_on
from syncd.engine.pipeline import (
    Confirm,
    ConfirmationNeeded,
    Guard,
    PlanRefused,
    Steps,
    write_guarded,
)
from syncd.engine.plan import CollectionPlan, Plan, plan_collections
from syncd.engine.policy import Policies
from syncd.engine.progress import Reporter, Silent
from syncd.engine.scratch import SRC, TGT, Workspace
from syncd.engine.write import CollectionResult, SyncResult, with_gridfs_partners
from syncd.errors import Refused, SyncdError, UsageError
from syncd.mongo.source import MongoSource
from syncd.state.memory import Pair, SyncMemory

__all__ = ["ConfirmationNeeded", "PlanRefused", "SyncOptions", "sync_flow"]

log = logging.getLogger("syncd.engine")


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
    stop: Check = go_on  # raises once the run must stop (the daemon's: between batches)
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
        run = RunContext(options.reporter, stop=options.stop)
        if options.dry_run:
            return _plan_only(config, flow, source, target, options, run)
        guard = Guard(
            config,
            target,
            job=options.job,
            flow=flow.name,
            wait=options.wait,
            protected=target_ep.protected and not options.allow_protected,
            confirm=options.confirm,
            unconfirmable=(
                f"'{flow.target}' is protected and this sync would write to it; confirm on a "
                "terminal, or pass --yes (or FORCE=true) to proceed"
            ),
        )
        return write_guarded(guard, _SyncSteps(config, flow, source, target, options), run)


def _plan_only(
    config: Config,
    flow: Flow,
    source: Connected,
    target: Connected,
    options: SyncOptions,
    run: RunContext,
) -> SyncResult:
    """Writes nothing anywhere: scratch files in the system temp dir, memory only read."""
    workspace = Workspace(Path(tempfile.gettempdir()))
    try:
        with config.state.memory(readonly=True) as memory:
            sides = _sides(config, source, target, memory, options)
            plan = _plan(config, flow, sides, options, run, workspace)
            if options.on_plan is not None:
                for collection in plan.collections:
                    options.on_plan(collection)
            return SyncResult(plan)
    finally:
        workspace.close()


@dataclass
class _SyncSteps(Steps):
    """A flow's sync in the guarded sequence: the source is a live endpoint, the memory
    the state directory's; the flow's `before_sync` backup, then its hooks."""

    config: Config
    flow: Flow
    source: Connected
    target: Connected
    options: SyncOptions
    workspace: Workspace = field(init=False)
    memory: SyncMemory = field(init=False)

    @contextmanager
    def opened(self, run: RunContext) -> Iterator[Sides]:
        self.workspace = Workspace(self.config.state.workspace, reap=True)
        try:
            with self.config.state.memory() as self.memory:
                yield _sides(self.config, self.source, self.target, self.memory, self.options)
        finally:
            self.workspace.close()

    def plan(self, sides: Sides, run: RunContext) -> Plan:
        before = self.config.backups.before_sync
        with _space_checked(self.config, self.flow):
            plan = _plan(
                self.config,
                self.flow,
                sides,
                self.options,
                run,
                self.workspace,
                spool_target=before == "full",
                read_ahead=before == "changes",
            )
        return plan

    def settled(self, plan: Plan) -> bool:
        return not plan.writes and (not self.flow.after or self.options.hooks_when_written)

    def ready(self, plan: Plan, sides: Sides, run: RunContext) -> None:
        if self.flow.after:
            from syncd.hooks import check_hooks

            check_hooks(self.config, self.flow)

    def backup(self, plan: Plan, sides: Sides, run: RunContext) -> str | None:
        """A failed backup means no sync: its error propagates before any write."""
        if self.config.backups.before_sync == "none" or not plan.destructive:
            return None
        if self.config.backups.before_sync == "changes":
            for c in plan.collections:  # it lists the ids the sync inserts: known first
                c.writing.listed(c, sides, run.reporter)
        from syncd.backup import BackupError
        from syncd.engine.prebackup import backup_before_sync

        try:
            return backup_before_sync(self.config, plan, self.target)
        except BackupError as exc:
            raise BackupError(
                f"backup before sync failed, so nothing was written to '{plan.target}': {exc}"
            ) from None

    def record(self, plan: Plan, results: Sequence[CollectionResult], outcome: str) -> None:
        _record(self.memory, plan, results, outcome)

    def after(self, plan: Plan, sides: Sides, run: RunContext) -> list[str]:
        if not self.flow.after:
            return []
        from syncd.hooks import run_hooks

        written = {c.name for c in plan.collections if c.writes}
        only_for = written if self.options.hooks_when_written else None
        assert run.memory is not None  # noqa: S101 - write_guarded gave it the run's
        return run_hooks(
            self.config, self.flow, self.target, run.memory, sides.pair, run.lease, only_for
        )


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
        MongoSource(source.db, source.label, views=policies.reads(SRC), shared=source.shared),
        MongoSource(target.db, target.label, views=policies.reads(TGT), shared=target.shared),
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
    run: RunContext,
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
        reporter=run.reporter,
        stop=run.stop,
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
