"""Restore a backup into an endpoint: the guarded sequence (pipeline.py) with a backup for
its source.

A "full" backup makes the target's collections equal to the backup (documents, indexes,
options): it is read whole, like a source on a first sync. A "changes" backup undoes the
sync that made it: that is one more way of finding changes (`Undo`): its before-images
are the source's version of the documents the sync replaced or deleted, the ids it
inserted are gone from the source, and only those documents are read on the target, by
`_id`. Either way the plan is written and verified as a sync's is, and the target is
backed up first (its safety backup). A restore remembers nothing: its memory is thrown
away, and the next sync of the target sees what the restore changed as the target's.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from syncd.backup import (
    BackupError,
    BackupInfo,
    BackupSource,
    apply_retention,
    create_backup,
    restore_lock,
)
from syncd.config.model import Config
from syncd.endpoints import Connected, open_endpoint
from syncd.engine import changes
from syncd.engine.changes import ChangeFinder, Found, Sides
from syncd.engine.context import RunContext
from syncd.engine.pipeline import Guard, Steps, write_guarded
from syncd.engine.plan import CollectionPlan, Plan, plan_collections
from syncd.engine.policy import RestorePolicies
from syncd.engine.progress import Reporter, Silent
from syncd.engine.render import plan_header, plan_table
from syncd.engine.scan import Progress
from syncd.engine.scratch import SRC, TGT, CollectionScratch, Workspace
from syncd.engine.verify import VerificationFailed
from syncd.engine.write import CollectionResult
from syncd.errors import UsageError
from syncd.mongo.changestream import Drained
from syncd.mongo.rawbson import raw_id
from syncd.mongo.retry import failing_clearly, with_retries
from syncd.mongo.source import MongoSource, read_by_id
from syncd.mongo.specs import SpecChanges
from syncd.state.memory import Pair, SyncMemory

log = logging.getLogger("syncd.restore")


@dataclass
class RestoreResult:
    backup: str
    target: str
    safety_backup: str | None = None
    collections: list[CollectionResult] = field(default_factory=list)
    plan: Plan | None = None
    seconds: float = 0.0


def restore_backup(
    config: Config,
    info: BackupInfo,
    *,
    to: str | None = None,
    collections: Sequence[str] | None = None,
    allow_protected: bool = False,
    confirm: Callable[[str], bool] | None = None,
    wait: bool = True,
    reporter: Reporter | None = None,
) -> RestoreResult:
    """Plan, ask (protected endpoint), back the target up, then write: in that order."""
    target_name = to or info.endpoint
    if target_name not in config.endpoints:
        raise UsageError(
            f"unknown endpoint '{target_name}' (endpoints: {', '.join(sorted(config.endpoints))})"
        )
    names = _selected(info, collections)
    endpoint = config.endpoints[target_name]

    def ask(plan: Plan) -> bool:
        assert confirm is not None  # noqa: S101 - only given to the guard with one
        return confirm(
            f"{plan_header(plan)}\n{plan_table(plan)}\nRestore {info.name} ({info.kind} "
            f"backup) into protected endpoint '{target_name}'? Its current data is backed "
            "up first."
        )

    started = time.monotonic()
    target = open_endpoint(endpoint)
    try:
        guard = Guard(
            config,
            target,
            job=f"restore {info.name}",
            wait=wait,
            protected=endpoint.protected and not allow_protected,
            confirm=ask if confirm is not None else None,
            unconfirmable=(
                f"'{target_name}' is protected; confirm on a terminal, or pass --yes "
                "(or FORCE=true) to restore into it"
            ),
        )
        guard.refuse_unconfirmable()  # a restore always writes: refused before reading
        steps = _RestoreSteps(config, info, target, names)
        try:
            synced = write_guarded(guard, steps, RunContext(reporter or Silent()))
        except VerificationFailed as exc:
            if not exc.mismatches:
                raise
            raise VerificationFailed(
                f"{exc.collection} on {exc.endpoint}: after restoring {info.name}, "
                f"{exc.mismatches} document(s) do not read back as the backup holds them "
                "(was it written to during the restore?); run the restore again"
            ) from None
    finally:
        target.close()
    result = RestoreResult(info.name, target_name, steps.safety, synced.collections, synced.plan)
    result.seconds = time.monotonic() - started
    for c in result.collections:
        log.info(
            "restored",
            extra={"collection": c.name, "restored": c.replaced + c.inserted, "deleted": c.deleted},
        )
    return result


@dataclass
class _RestoreSteps(Steps):
    """A restore in the guarded sequence: the backup is the source, read under its restore
    lock (retention leaves it alone meanwhile); a throw-away memory; a safety backup of the
    target's collections first."""

    config: Config
    info: BackupInfo
    target: Connected
    names: list[str]
    safety: str | None = None
    workspace: Workspace = field(init=False)

    @contextmanager
    def opened(self, run: RunContext) -> Iterator[Sides]:
        source_name = f"backup:{self.info.name}"
        with (
            restore_lock(self.info),
            tempfile.TemporaryDirectory(prefix="syncd-restore-") as scratch,
            closing(SyncMemory(Path(scratch) / "memory.sqlite")) as memory,
        ):
            self.workspace = Workspace(self.config.state.workspace, reap=True)
            try:
                yield Sides(
                    BackupSource(self.info),
                    MongoSource(self.target.db, self.target.label),
                    source_name,
                    self.target.name,
                    Pair.of(source_name, self.target.name),
                    memory,
                    policies=RestorePolicies(self.config),
                )
            finally:
                self.workspace.close()

    def plan(self, sides: Sides, run: RunContext) -> Plan:
        assert isinstance(sides.source, BackupSource)  # noqa: S101 - `opened` made it
        backup = sides.source
        undo = self.info.kind == "changes"
        return plan_collections(
            sides,
            self.names,
            flow=f"restore {self.info.name}",
            drift_for=lambda _name: "overwrite",
            workspace=self.workspace,
            reporter=run.reporter,
            stop=run.stop,
            choose=(lambda _name: Undo(backup, self.info.name)) if undo else None,
        )

    def backup(self, plan: Plan, sides: Sides, run: RunContext) -> str | None:
        """The target's collections as they are, whatever the restore writes (a full
        backup, kept by retention while the backup restored from is in use)."""
        backups = self.config.state.backups
        safety = create_backup(
            self.target.db,
            self.target.name,
            backups,
            compress=self.config.backups.compress,
            collections=self.names,
            reason=f"before restore of {self.info.name}",
        )
        apply_retention(
            backups, self.target.name, self.config.backups.keep_last, in_use={self.info.name}
        )
        self.safety = safety.name
        return safety.name

    def remembers(self) -> bool:
        return False  # the memory is thrown away


@dataclass
class Undo:
    """How a collection's changes are found when a `changes` backup is restored: the
    backup's before-images are the source's documents, the ids the sync inserted are gone
    from it, the target's version of each is read by `_id`; no other document is looked at,
    and indexes and options are left as the target has them."""

    backup: BackupSource
    name: str
    count: int = 0  # the target's documents before the restore

    def following(self, which: str) -> bytes | None:
        return None

    def followed(self, which: str, drained: Drained) -> None:
        return None

    def lost(self, which: str, reason: str) -> ChangeFinder:
        return self

    def checked(self, sides: Sides, uuids: dict[str, bytes | None]) -> ChangeFinder:
        return self

    def early(self, scratch: CollectionScratch, sides: Sides) -> None:
        return None

    def fill(self, scratch: CollectionScratch, sides: Sides, progress: Progress) -> None:
        name, target = scratch.name, sides.target
        scratch.start_changes()
        with failing_clearly("reading", name, self.backup.label), scratch.changes(SRC) as log_:
            for done, raw in enumerate(self.backup.iter_raw(name), 1):
                log_.put(raw)
                if done % 1000 == 0:
                    progress(done)
            for doc in self.backup.inserted_ids(name):
                log_.gone(raw_id(doc))
        self._consistent(scratch)
        scratch.want_all(TGT)
        with failing_clearly("reading", name, target.label), scratch.changes(TGT) as log_:
            count = partial(target.count, name)  # exact, before any write
            self.count = with_retries(count, what=f"count {name} ({target.label})")
            for keys, found in read_by_id(target, name, scratch.to_fetch(TGT)):
                log_.fetched(keys, found)

    def _consistent(self, scratch: CollectionScratch) -> None:
        """A sync inserts only documents the target did not hold: an `_id` that is both a
        before-image and inserted (or two before-images of one `_id`) is a backup that
        does not record one sync, and undoing it would guess."""
        images = self.backup.count(scratch.name)
        if (kept := scratch.count(SRC)) < images:
            raise BackupError(
                f"backup {self.name}: {scratch.name}: {images - kept} document(s) are listed "
                "both as before-images and as inserted by the sync it recorded (or twice), so "
                "it cannot be undone exactly; nothing was written. Restore a full backup "
                "instead (`syncd backup list`)"
            )

    def found(self, sides: Sides) -> dict[str, Found]:
        return {
            sides.source_name: Found(changes.WHOLE_WAY, f"the sync recorded in {self.name}"),
            sides.target_name: Found(changes.BY_ID_WAY, f"the documents {self.name} names"),
        }

    def describe(self, plan: CollectionPlan, sides: Sides) -> None:
        plan.mode, plan.found = changes.FULL, self.found(sides)
        plan.reason = f"undoing the sync recorded in {self.name}"
        plan.specs, plan.keep_specs = SpecChanges(), True
        plan.target_count = self.count
        plan.source_count = self.count + plan.inserts - plan.deletes


def _selected(info: BackupInfo, collections: Sequence[str] | None) -> list[str]:
    available = list(info.collections)
    if not collections:
        return available
    missing = [name for name in collections if name not in info.collections]
    if missing:
        raise UsageError(
            f"backup {info.name} has no collection {', '.join(missing)} "
            f"(it has: {', '.join(available)})"
        )
    return list(collections)


_UNDO_FINDS_CHANGES: type[ChangeFinder] = Undo  # checked by mypy: a ChangeFinder
