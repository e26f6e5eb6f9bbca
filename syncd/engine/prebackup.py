"""Back up the target before a sync replaces or deletes anything (SPEC §4, §5)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

from syncd.backup import BackupWriter, apply_retention, create_backup
from syncd.config.model import Config
from syncd.endpoints import Connected
from syncd.engine.plan import CollectionPlan, Plan
from syncd.engine.scratch import CollectionScratch
from syncd.mongo.rawbson import id_document, id_value
from syncd.mongo.source import CollectionSpec, MongoSource, read_by_id

log = logging.getLogger("syncd.backup")


def backup_before_sync(config: Config, plan: Plan, target: Connected) -> str:
    """Name of the backup taken; raises (and so stops the sync) when it cannot be made."""
    changed = [c for c in plan.collections if c.writes]
    reason = f"before {plan.flow}"
    if config.backups.before_sync == "full":
        hooked = [config.hooks[name].collection for name in config.flows[plan.flow].after]
        info = create_backup(
            target.db,
            target.name,
            config.state.backups,
            compress=config.backups.compress,
            collections=list(dict.fromkeys([c.name for c in changed] + hooked)),
            reason=reason,
            scanned=_scanned(plan),
        )
    else:
        info = _changes_backup(config, changed, target, reason)
    apply_retention(config.state.backups, target.name, config.backups.keep_last)
    log.info("backup before sync", extra={"backup": info.name, "endpoint": target.name})
    return info.name


def _scanned(plan: Plan) -> dict[str, Path]:
    """The target's documents as the plan read them, where the read kept them: the backup
    then holds exactly the state the plan was made from, without reading it again."""
    spools = {}
    for c in plan.collections:
        if c.scratch is not None and (spool := c.scratch.target_spool) is not None:
            spools[c.name] = spool
    return spools


def _changes_backup(
    config: Config, changed: list[CollectionPlan], target: Connected, reason: str
) -> Any:
    """Before-images of the documents the sync replaces or deletes, and the ids it inserts."""
    source = MongoSource(target.db, target.name)
    with BackupWriter(
        config.state.backups,
        target.name,
        target.database,
        kind="changes",
        compress=config.backups.compress,
        reason=reason,
    ) as writer:
        for plan in changed:
            assert plan.scratch is not None  # noqa: S101
            # as the plan read it, under the lease (read now where the plan has none)
            spec = (
                plan.target_spec or source.collection_spec(plan.name) or CollectionSpec(plan.name)
            )
            writer.write_collection(spec, _before_images(source, plan.name, plan.scratch))
            with closing(plan.scratch.insert_ids()) as rids:
                writer.write_inserted_ids(plan.name, (id_document(rid) for rid in rids))
        return writer.commit()


def _before_images(source: MongoSource, name: str, scratch: CollectionScratch) -> Iterator[bytes]:
    """The target's version of each document the sync replaces or deletes: as read ahead
    while the plan was made (prefetch.py) when that is the version the plan holds, else
    read by `_id` now."""
    wanted: list[tuple[bytes, object]] = []
    ahead = scratch.read_ahead()
    try:
        with closing(scratch.before_images()) as rows:
            for rid, digest in rows:
                raw = ahead.get(rid, digest)
                if raw is not None:
                    yield raw
                else:
                    wanted.append((rid, id_value(rid)))
    finally:
        ahead.close()
    for _, found in read_by_id(source, name, wanted):
        yield from found
