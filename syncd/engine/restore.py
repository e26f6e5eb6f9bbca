"""Restore a backup into an endpoint through the sync engine (a backup is a DocumentSource).

A "full" backup makes the target's collections equal to the backup (documents, indexes,
options). A "changes" backup undoes the sync that made it: before-images go back, the
documents that sync inserted are deleted. Either way the target is backed up first.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from bson.raw_bson import RawBSONDocument
from pymongo import DeleteOne, ReplaceOne
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError

from syncd.backup import BackupInfo, BackupSource, apply_retention, create_backup, restore_lock
from syncd.config.model import Config
from syncd.endpoints import Connected, open_endpoint
from syncd.engine.changes import Sides
from syncd.engine.plan import Plan, plan_collections
from syncd.engine.policy import Policy, RestorePolicies
from syncd.engine.progress import Reporter, Silent
from syncd.engine.render import plan_header, plan_table
from syncd.engine.scratch import Workspace
from syncd.engine.verify import VerificationFailed
from syncd.engine.write import CollectionResult, verify_plan, write_plan
from syncd.errors import Refused, UsageError
from syncd.lease import write_lease
from syncd.lease.guard import check_writes
from syncd.mongo.fetch import batched, fetch_batches, fetch_raw
from syncd.mongo.privileges import check_validation
from syncd.mongo.rawbson import id_key, id_value, raw_id
from syncd.mongo.retry import failing_clearly, with_retries
from syncd.mongo.source import MongoSource
from syncd.state.memory import Pair, SyncMemory

log = logging.getLogger("syncd.restore")
BATCH = 1000


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
    needs_confirmation = endpoint.protected and not allow_protected
    if needs_confirmation and confirm is None:
        raise Refused(
            f"'{target_name}' is protected; confirm on a terminal, or pass --yes "
            "(or FORCE=true) to restore into it"
        )
    started = time.monotonic()
    target = open_endpoint(endpoint)
    try:
        with write_lease(config, target, job=f"restore {info.name}", wait=wait):
            with restore_lock(info), _Restore(config, info, target, names, reporter) as restore:
                summary = restore.prepare()
                question = (
                    f"{summary}\nRestore {info.name} ({info.kind} backup) into protected "
                    f"endpoint '{target_name}'? Its current data is backed up first."
                )
                if needs_confirmation and confirm is not None and not confirm(question):
                    raise Refused(f"not confirmed; nothing was written to '{target_name}'")
                result = RestoreResult(info.name, target_name, plan=restore.plan)
                result.safety_backup = _safety_backup(config, target, names, info)
                result.collections = restore.apply()
    finally:
        target.close()
    result.seconds = time.monotonic() - started
    return result


class _Restore:
    """The two kinds of restore behind one prepare/apply pair."""

    def __init__(
        self,
        config: Config,
        info: BackupInfo,
        target: Connected,
        names: list[str],
        reporter: Reporter | None,
    ) -> None:
        self.config, self.info, self.target, self.names = config, info, target, names
        self.reporter = reporter or Silent()
        self.plan: Plan | None = None
        self.workspace: Workspace | None = None
        self.scratch = tempfile.TemporaryDirectory(prefix="syncd-restore-")
        self.memory = SyncMemory(Path(self.scratch.name) / "memory.sqlite")
        source_name = f"backup:{info.name}"
        self.sides = Sides(
            BackupSource(info),
            MongoSource(target.db, target.label),
            source_name,
            target.name,
            Pair.of(source_name, target.name),
            self.memory,
            policies=RestorePolicies(config),
        )

    def __enter__(self) -> _Restore:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.workspace is not None:
            self.workspace.close()
        self.memory.close()
        self.scratch.cleanup()

    def prepare(self) -> str:
        """What the restore will do, in words a person can confirm."""
        if self.info.kind == "changes":
            lines = [
                f"  {name}: put back {self.info.collections[name].count} document(s), "
                f"delete {self.info.collections[name].inserted_ids} inserted by the sync"
                for name in self.names
            ]
            return "\n".join([f"undo the sync recorded in {self.info.name}:", *lines])
        self.workspace = Workspace(self.config.state_dir / "tmp", reap=True)
        self.plan = plan_collections(
            self.sides,
            self.names,
            flow=f"restore {self.info.name}",
            drift_for=lambda _name: "overwrite",
            workspace=self.workspace,
            reporter=self.reporter,
        )
        return f"{plan_header(self.plan)}\n{plan_table(self.plan)}"

    def apply(self) -> list[CollectionResult]:
        if self.plan is None:
            return _undo_changes(self.info, self.target, self.names, self.sides.policy)
        started = time.monotonic()
        results = write_plan(self.plan, self.sides, self.reporter, announce=False)
        verify_plan(self.plan, self.sides, results, started)
        return results


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


def _safety_backup(config: Config, target: Connected, names: list[str], info: BackupInfo) -> str:
    backups = config.state_dir / "backups"
    safety = create_backup(
        target.db,
        target.name,
        backups,
        compress=config.backups.compress,
        collections=names,
        reason=f"before restore of {info.name}",
    )
    apply_retention(backups, target.name, config.backups.keep_last, in_use={info.name})
    return safety.name


def _undo_changes(
    info: BackupInfo, target: Connected, names: list[str], policy: Callable[[str], Policy]
) -> list[CollectionResult]:
    source = BackupSource(info)
    results = []
    for name in names:
        result = CollectionResult(name)
        coll = target.db[name]
        flush = partial(_flush, coll, bypass=policy(name).bypass_validation)
        ops: list[Any] = []
        with failing_clearly("restoring", name, target.label):
            for raw in source.iter_raw(name):
                ops.append(
                    ReplaceOne({"_id": id_value(raw_id(raw))}, RawBSONDocument(raw), upsert=True)
                )
                result.replaced += 1
                ops = flush(ops)
            for raw in source.inserted_ids(name):
                ops.append(DeleteOne({"_id": id_value(raw_id(raw))}))
                result.deleted += 1
                ops = flush(ops)
            flush(ops, force=True)
            mismatches = _undo_mismatches(source, coll)
        if mismatches:
            raise VerificationFailed(
                f"{name} on {target.label}: after restoring {info.name}, {mismatches} "
                "document(s) do not read back as the backup holds them (was it written to "
                "during the restore?); run the restore again"
            )
        result.verified = True
        results.append(result)
        log.info(
            "undone",
            extra={"collection": name, "restored": result.replaced, "deleted": result.deleted},
        )
    return results


def _undo_mismatches(source: BackupSource, coll: Collection[Any]) -> int:
    """Read back what an undo wrote: each before-image by `_id`, byte for byte, and each
    document the sync had inserted must be gone. How many are not so."""
    what = f"verify {coll.name}"
    mismatches = 0
    for batch in batched(source.iter_raw(coll.name)):
        found = fetch_raw(coll, [raw_id(raw) for raw in batch], what=what)
        for raw in batch:
            if found.get(id_key(raw_id(raw))) != raw:
                mismatches += 1
    for rids, found in fetch_batches(
        coll, (raw_id(doc) for doc in source.inserted_ids(coll.name)), what=what
    ):
        mismatches += sum(1 for rid in rids if id_key(rid) in found)
    return mismatches


def _flush(coll: Any, ops: list[Any], *, bypass: bool, force: bool = False) -> list[Any]:
    if ops and (force or len(ops) >= BATCH):
        batch = list(ops)  # replaces and deletes by _id: a retried batch does the same
        check_writes(coll.database)
        try:
            with_retries(
                lambda: coll.bulk_write(batch, ordered=False, bypass_document_validation=bypass),
                what=f"restore {coll.name}",
            )
        except BulkWriteError as exc:
            check_validation(coll.name, exc.details)
            raise
        return []
    return ops
