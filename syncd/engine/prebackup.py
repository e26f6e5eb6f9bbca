"""Back up the target before a sync replaces or deletes anything (SPEC §4, §5)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

from pymongo.collection import Collection

from syncd.backup import BackupWriter, apply_retention, create_backup
from syncd.config.model import Config
from syncd.endpoints import Connected
from syncd.engine.fetch import fetch_batches
from syncd.engine.plan import CollectionPlan, Plan
from syncd.engine.rawbson import id_document
from syncd.engine.retry import with_retries
from syncd.engine.scan import TARGET_SPOOL, open_scratch
from syncd.engine.source import CollectionSpec, MongoSource

log = logging.getLogger("syncd.backup")


def backups_dir(config: Config) -> Path:
    return config.state_dir / "backups"


def backup_before_sync(config: Config, plan: Plan, target: Connected) -> str:
    """Name of the backup taken; raises (and so stops the sync) when it cannot be made."""
    changed = [c for c in plan.collections if c.writes]
    reason = f"before {plan.flow}"
    if config.backups.before_sync == "full":
        hooked = [config.hooks[name].collection for name in config.flows[plan.flow].after]
        info = create_backup(
            target.db,
            target.name,
            backups_dir(config),
            compress=config.backups.compress,
            collections=list(dict.fromkeys([c.name for c in changed] + hooked)),
            reason=reason,
            scanned=_scanned(plan),
        )
    else:
        info = _changes_backup(config, changed, target, reason)
    apply_retention(backups_dir(config), target.name, config.backups.keep_last)
    log.info("backup before sync", extra={"backup": info.name, "endpoint": target.name})
    return info.name


def _scanned(plan: Plan) -> dict[str, Path]:
    """The target's documents as the plan read them, where the scan kept them: the backup
    then holds exactly the state the plan was made from, without reading it again."""
    spools = {}
    for c in plan.collections:
        if c.work_dir is not None and (c.work_dir / TARGET_SPOOL).exists():
            spools[c.name] = c.work_dir / TARGET_SPOOL
    return spools


def _changes_backup(
    config: Config, changed: list[CollectionPlan], target: Connected, reason: str
) -> Any:
    """Before-images of the documents the sync replaces or deletes, and the ids it inserts."""
    source = MongoSource(target.db, target.name)
    with BackupWriter(
        backups_dir(config),
        target.name,
        target.database,
        kind="changes",
        compress=config.backups.compress,
        reason=reason,
    ) as writer:
        for plan in changed:
            assert plan.work_dir is not None  # noqa: S101
            spec = with_retries(
                partial(source.collection_spec, plan.name), what=f"back up {plan.name}"
            ) or CollectionSpec(plan.name)
            conn = open_scratch(plan.work_dir / "tgt.sqlite")
            try:
                rids = _rids(conn, "op IN ('replace', 'delete')")
                writer.write_collection(spec, _before_images(target.db[plan.name], rids))
                inserted = (id_document(rid) for rid in _rids(conn, "op = 'insert'"))
                writer.write_inserted_ids(plan.name, inserted)
            finally:
                conn.close()
        return writer.commit()


def _rids(conn: Any, where: str) -> Iterator[bytes]:
    for (rid,) in conn.execute(
        f"SELECT rid FROM diff WHERE action = 'apply' AND {where}"  # noqa: S608
    ):
        yield rid


def _before_images(coll: Collection[Any], rids: Iterator[bytes]) -> Iterator[bytes]:
    """The target's documents with those `_id`s, read in retried `$in` batches."""
    for _batch, found in fetch_batches(coll, rids, what=f"back up {coll.name} before-images"):
        yield from found.values()
