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
from pathlib import Path
from typing import Any

from bson.raw_bson import RawBSONDocument
from pymongo import DeleteOne, ReplaceOne

from syncd.backup import BackupInfo, BackupSource, apply_retention, create_backup, restore_lock
from syncd.config.model import Config
from syncd.endpoints import Connected, open_endpoint
from syncd.engine.plan import Plan
from syncd.engine.progress import Reporter, Silent
from syncd.engine.rawbson import id_value, raw_id
from syncd.engine.run import CollectionResult, Workspace, apply_plan, plan_collections
from syncd.engine.source import MongoSource
from syncd.errors import Refused, UsageError
from syncd.lease import target_lease

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
    target_name = to or info.endpoint
    if target_name not in config.endpoints:
        raise UsageError(
            f"unknown endpoint '{target_name}' (endpoints: {', '.join(sorted(config.endpoints))})"
        )
    names = _selected(info, collections)
    endpoint = config.endpoints[target_name]
    if endpoint.protected and not allow_protected:
        question = (
            f"Restore {info.name} ({len(names)} collections, {info.kind}) into protected "
            f"endpoint '{target_name}'? Its current data is backed up first."
        )
        if confirm is None:
            raise Refused(
                f"'{target_name}' is protected; confirm on a terminal, or pass --yes "
                "(or FORCE=true) to restore into it"
            )
        if not confirm(question):
            raise Refused(f"not confirmed; nothing was written to '{target_name}'")
    started = time.monotonic()
    target = open_endpoint(endpoint)
    try:
        with target_lease(config.state_dir, target_name, job=f"restore {info.name}", wait=wait):
            with restore_lock(info):
                result = RestoreResult(info.name, target_name)
                result.safety_backup = _safety_backup(config, target, names, info)
                if info.kind == "changes":
                    result.collections = _undo_changes(info, target, names)
                else:
                    result.plan, result.collections = _restore_full(
                        config, info, target, names, reporter or Silent()
                    )
    finally:
        target.close()
    result.seconds = time.monotonic() - started
    return result


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


def _restore_full(
    config: Config, info: BackupInfo, target: Connected, names: list[str], reporter: Reporter
) -> tuple[Plan, list[CollectionResult]]:
    source = BackupSource(info)
    target_source = MongoSource(target.db, target.name)
    workspace = Workspace(config.state_dir / "tmp")
    with tempfile.TemporaryDirectory(prefix="syncd-restore-") as scratch:
        memory = Path(scratch) / "memory.sqlite"
        from syncd.engine.memory import connect

        connect(memory).close()
        try:
            plan = plan_collections(
                source,
                target_source,
                names,
                flow=f"restore {info.name}",
                source_name=f"backup:{info.name}",
                target_name=target.name,
                drift_for=lambda _name: "overwrite",
                memory=memory,
                workspace=workspace,
                reporter=reporter,
            )
            results = apply_plan(
                plan, source, target_source, memory=memory, reporter=reporter, remember=False
            )
        finally:
            workspace.close()
    return plan, results


def _undo_changes(info: BackupInfo, target: Connected, names: list[str]) -> list[CollectionResult]:
    source = BackupSource(info)
    results = []
    for name in names:
        result = CollectionResult(name)
        coll = target.db[name]
        ops: list[Any] = []
        for raw in source.iter_raw(name):
            ops.append(
                ReplaceOne({"_id": id_value(raw_id(raw))}, RawBSONDocument(raw), upsert=True)
            )
            result.replaced += 1
            ops = _flush(coll, ops)
        for raw in source.inserted_ids(name):
            ops.append(DeleteOne({"_id": id_value(raw_id(raw))}))
            result.deleted += 1
            ops = _flush(coll, ops)
        _flush(coll, ops, force=True)
        result.verified = True
        results.append(result)
        log.info(
            "undone",
            extra={"collection": name, "restored": result.replaced, "deleted": result.deleted},
        )
    return results


def _flush(coll: Any, ops: list[Any], *, force: bool = False) -> list[Any]:
    if ops and (force or len(ops) >= BATCH):
        coll.bulk_write(ops, ordered=False, bypass_document_validation=True)
        return []
    return ops
