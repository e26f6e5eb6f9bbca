"""Metrics at start: series primed, and what the state directory already knows restored
(last successful run per flow, mismatched documents of its last verify, backups kept per
endpoint), so a restart does not look like a flow that never succeeded or was verified."""

from __future__ import annotations

import logging
import sqlite3

from syncd.compare import last_verify
from syncd.config.model import Config
from syncd.daemon.jobs import backup_inventory
from syncd.metrics import SyncdMetrics

log = logging.getLogger("syncd.daemon")


def restore_metrics(config: Config, metrics: SyncdMetrics) -> None:
    metrics.prime_from_config(config)
    for flow, finished in last_successes(config).items():
        if flow in config.flows:
            metrics.set_sync_last_success(flow, finished)
    for flow in config.flows:
        last = last_verify(config.state, flow)
        try:
            if last is not None:
                metrics.set_verify_mismatched(
                    flow,
                    {
                        c["name"]: c["missing"] + c["extra"] + c["different"]
                        for c in last["collections"]
                    },
                )
        except (KeyError, TypeError, ValueError) as exc:  # incl. a refused label value
            log.warning("last verify of %s not restored: %s", flow, exc)
    for endpoint in config.endpoints:
        try:
            kept, size, newest = backup_inventory(config, endpoint)
        except (OSError, ValueError) as exc:
            log.warning("backups of %s not counted: %s", endpoint, exc)
            continue
        metrics.set_backup_inventory(endpoint, kept, size, newest)


def last_successes(config: Config) -> dict[str, float]:
    """Per flow, the unix time its last successful run finished (from the sync memory)."""
    if not config.state.memory_path.exists():
        return {}
    try:
        with config.state.memory(readonly=True) as memory:
            return memory.last_success_by_flow()
    except sqlite3.Error as exc:
        log.warning("last sync times not restored: %s", exc)
        return {}
