"""Prometheus metrics of syncd (SPEC §7): one registry per `SyncdMetrics`, every metric here.

The metric names are part of the product contract; alert rules
(`config/alerts/syncd-rules.yml`) and the dashboard (`config/grafana/`) depend on them.
Label values are validated: only flow, endpoint and collection *names* may become labels,
never URIs, hosts or user names (anything with `:`, `/`, `@`, spaces ... is refused).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Literal

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from syncd import __version__
from syncd.config.cron import crontab_trigger
from syncd.config.model import GRIDFS_PAIRS, Config, Schedule

Result = Literal["success", "failure", "refused", "skipped"]
DocOp = Literal["insert", "update", "delete"]
RESULTS: tuple[Result, ...] = ("success", "failure", "refused", "skipped")
VerifyResult = Literal["equal", "different", "failure"]
VERIFY_RESULTS: tuple[VerifyResult, ...] = ("equal", "different", "failure")
DOC_OPS: tuple[DocOp, ...] = ("insert", "update", "delete")
# How a collection's changes were found (syncd.engine.changes.FIND_MODES): both sides by
# change streams, both read whole, or one side by its stream and the other read whole.
FIND_MODES = ("changes", "full", "source-changes", "target-changes")

# 0.1 s (an empty incremental pull) .. 2 h (a full copy of a large database).
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)

# Same pattern as config/schema.json's `$defs/name` (flows, endpoints, schedules).
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")
# A collection name as a label: MongoDB names minus anything a URI, host:port or e-mail needs.
COLLECTION_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,119}$")
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")

# Created-series (`*_created`) double every counter and histogram for no alerting use.
disable_created_metrics()  # type: ignore[no-untyped-call]


class UnsafeLabelValue(ValueError):
    """A label value that is not a plain name. The value itself is never put in the message."""


def _check(kind: str, value: str, pattern: re.Pattern[str]) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise UnsafeLabelValue(
            f"refused {kind} label value (length {len(str(value))}): "
            f"it must match {pattern.pattern}"
        )
    return value


def _name(kind: str, value: str) -> str:
    return _check(kind, value, NAME_PATTERN)


def _collection(value: str) -> str:
    return _check("collection", value, COLLECTION_PATTERN)


def _result(value: str) -> Result:
    if value not in RESULTS:
        raise UnsafeLabelValue(f"result must be one of {', '.join(RESULTS)}")
    return value


def _op(value: str) -> DocOp:
    if value not in DOC_OPS:
        raise UnsafeLabelValue(f"op must be one of {', '.join(DOC_OPS)}")
    return value


class SyncdMetrics:
    """Every syncd metric, on a registry of its own (never the process-global default)."""

    def __init__(self, version: str = __version__) -> None:
        reg = self.registry = CollectorRegistry(auto_describe=True)
        # process_start_time_seconds is used by the stale alerts for never-succeeded flows.
        ProcessCollector(registry=reg)
        PlatformCollector(registry=reg)
        GCCollector(registry=reg)

        self.sync_runs = Counter(
            "syncd_sync_runs", "Runs of a flow, by result.", ["flow", "result"], registry=reg
        )
        self.sync_duration = Histogram(
            "syncd_sync_duration_seconds",
            "Wall time of a flow run (skipped runs are not observed).",
            ["flow"],
            buckets=DURATION_BUCKETS,
            registry=reg,
        )
        self.sync_last_success = Gauge(
            "syncd_sync_last_success_timestamp_seconds",
            "Unix time of the flow's last successful run; 0 = none yet.",
            ["flow"],
            registry=reg,
        )
        self.sync_documents = Counter(
            "syncd_sync_documents",
            "Documents written to the target, by operation.",
            ["flow", "collection", "op"],
            registry=reg,
        )
        self.sync_collections = Counter(
            "syncd_sync_collections",
            "Collections of finished runs, by how their changes were found: `changes` "
            "(change streams) or `full` (both sides read whole).",
            ["flow", "mode"],
            registry=reg,
        )
        self.sync_lag = Gauge(
            "syncd_sync_lag_seconds",
            "Age of the oldest source change a continuous job has not applied yet; 0 when "
            "caught up (and for flows without a continuous job).",
            ["flow"],
            registry=reg,
        )
        self.drift_documents = Gauge(
            "syncd_drift_documents",
            "Target documents changed outside syncd that blocked the flow's last run "
            "over the collection (0 once a run went through).",
            ["flow", "collection"],
            registry=reg,
        )
        self.sync_schedule_interval = Gauge(
            "syncd_sync_schedule_interval_seconds",
            "Longest time the flow's schedules leave between two runs; 0 = not scheduled.",
            ["flow"],
            registry=reg,
        )
        self.verify_runs = Counter(
            "syncd_verify_runs",
            "Scheduled verifications of a flow's two sides, by result (equal, different, "
            "failure: could not compare).",
            ["flow", "result"],
            registry=reg,
        )
        self.verify_mismatched = Gauge(
            "syncd_verify_mismatched_documents",
            "Documents missing, extra or different on the target at the flow's last "
            "verification of the collection.",
            ["flow", "collection"],
            registry=reg,
        )
        self.backup_runs = Counter(
            "syncd_backup_runs",
            "Backups of an endpoint, by result.",
            ["endpoint", "result"],
            registry=reg,
        )
        self.backup_last_success = Gauge(
            "syncd_backup_last_success_timestamp_seconds",
            "Unix time of the endpoint's newest good backup; 0 = none.",
            ["endpoint"],
            registry=reg,
        )
        self.backups = Gauge(
            "syncd_backups", "Verified backups kept for the endpoint.", ["endpoint"], registry=reg
        )
        self.backup_bytes = Gauge(
            "syncd_backup_bytes",
            "Bytes of the backups kept for the endpoint.",
            ["endpoint"],
            registry=reg,
        )
        self.backup_schedule_interval = Gauge(
            "syncd_backup_schedule_interval_seconds",
            "Longest time the endpoint's backup schedules leave between two runs; "
            "0 = not scheduled.",
            ["endpoint"],
            registry=reg,
        )
        self.endpoint_up = Gauge(
            "syncd_endpoint_up",
            "1 when the endpoint answered the last ping.",
            ["endpoint"],
            registry=reg,
        )
        self.reload_successful = Gauge(
            "syncd_config_last_reload_successful",
            "1 when the last config (re)load succeeded; 0 = syncd runs on an older config.",
            registry=reg,
        )
        self.reload_success_time = Gauge(
            "syncd_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful config (re)load.",
            registry=reg,
        )
        self.build = Gauge(
            "syncd_build_info", "Always 1; the version is the label.", ["version"], registry=reg
        )
        self.build.labels(_check("version", version, VERSION_PATTERN)).set(1)

    # -- start-up and reload ------------------------------------------------------------

    def prime(
        self,
        flows: Iterable[str],
        endpoints: Iterable[str],
        collections_by_flow: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        """Create every label series at 0 so alerts and `increase()` see zeros, not absence.

        Existing values are kept: priming again after a reload changes nothing already counted.
        """
        flows, endpoints = (
            [_name("flow", f) for f in flows],
            [_name("endpoint", e) for e in endpoints],
        )
        pairs = [
            (_name("flow", flow), _collection(coll))
            for flow, colls in (collections_by_flow or {}).items()
            for coll in colls
        ]
        for flow in flows:
            for result in RESULTS:
                self.sync_runs.labels(flow, result)
            for outcome in VERIFY_RESULTS:
                self.verify_runs.labels(flow, outcome)
            self.sync_duration.labels(flow)
            for mode in FIND_MODES:
                self.sync_collections.labels(flow, mode)
            self.sync_lag.labels(flow)
            self.sync_last_success.labels(flow)
            self.sync_schedule_interval.labels(flow)
        for endpoint in endpoints:
            for result in RESULTS:
                self.backup_runs.labels(endpoint, result)
            for gauge in (
                self.backup_last_success,
                self.backups,
                self.backup_bytes,
                self.backup_schedule_interval,
                self.endpoint_up,
            ):
                gauge.labels(endpoint)
        for flow, coll in pairs:
            for op in DOC_OPS:
                self.sync_documents.labels(flow, coll, op)
            self.drift_documents.labels(flow, coll)
            self.verify_mismatched.labels(flow, coll)

    def prime_from_config(self, config: Config) -> None:
        """`prime` with the config's names, then the schedule intervals the stale alerts use."""
        self.prime(config.flows, config.endpoints, collections_by_flow(config))
        flow_intervals, backup_intervals = schedule_intervals(config.schedules)
        self.set_schedule_intervals(
            {flow: flow_intervals.get(flow, 0.0) for flow in config.flows},
            {endpoint: backup_intervals.get(endpoint, 0.0) for endpoint in config.endpoints},
        )

    def set_schedule_intervals(
        self, flows: Mapping[str, float], endpoints: Mapping[str, float]
    ) -> None:
        """Seconds between scheduled runs per flow / backed-up endpoint; 0 = unscheduled.

        Flows and endpoints already known but absent here are set to 0 (no longer scheduled),
        so SyncStale/BackupStale stop watching them.
        """
        for gauge, values, kind in (
            (self.sync_schedule_interval, flows, "flow"),
            (self.backup_schedule_interval, endpoints, "endpoint"),
        ):
            checked = {_name(kind, k): float(v) for k, v in values.items()}
            for known in _label_values(gauge):
                checked.setdefault(known, 0.0)
            for key, seconds in checked.items():
                gauge.labels(key).set(seconds)

    def record_reload(self, ok: bool, *, now: float | None = None) -> None:
        """Call with True once the initial config is loaded, then after every SIGHUP."""
        self.reload_successful.set(1 if ok else 0)
        if ok:
            self.reload_success_time.set(time.time() if now is None else now)

    # -- runs -----------------------------------------------------------------------------

    def record_sync(
        self,
        flow: str,
        result: Result,
        duration_s: float,
        docs: Mapping[tuple[str, DocOp], int] | None = None,
        drift: Mapping[str, int] | None = None,
        *,
        modes: Mapping[str, int] | None = None,
        now: float | None = None,
    ) -> None:
        """One finished run of `flow`.

        modes: collections of the run per way their changes were found (FIND_MODES).
        docs: documents written, per (collection, op). drift: per collection, drifted target
        documents that blocked the run (a refused run passes them; a collection the run went
        through is reset to 0 when not given). Nothing is recorded when a label is refused.
        """
        flow, result = _name("flow", flow), _result(result)
        writes = {(_collection(c), _op(op)): int(n) for (c, op), n in (docs or {}).items()}
        blocked = {_collection(c): int(n) for c, n in (drift or {}).items()}
        if any(n < 0 for n in (*writes.values(), *blocked.values())):
            raise ValueError("document counts must not be negative")
        self.sync_runs.labels(flow, result).inc()
        if result != "skipped":
            self.sync_duration.labels(flow).observe(max(0.0, duration_s))
        if result == "success":
            self.sync_last_success.labels(flow).set(time.time() if now is None else now)
            for coll, _ in writes:
                blocked.setdefault(coll, 0)
        for (coll, op), count in writes.items():
            self.sync_documents.labels(flow, coll, op).inc(count)
        for mode, count in (modes or {}).items():
            if mode in FIND_MODES:
                self.sync_collections.labels(flow, mode).inc(count)
        for coll, count in blocked.items():
            self.drift_documents.labels(flow, coll).set(count)

    def set_lag(self, flow: str, seconds: float) -> None:
        self.sync_lag.labels(_name("flow", flow)).set(max(0.0, seconds))

    def record_verify(
        self, flow: str, result: VerifyResult, mismatched: Mapping[str, int] | None = None
    ) -> None:
        """One finished verification; `mismatched`: documents per compared collection."""
        if result not in VERIFY_RESULTS:
            raise UnsafeLabelValue(f"result must be one of {', '.join(VERIFY_RESULTS)}")
        self.set_verify_mismatched(flow, mismatched or {})
        self.verify_runs.labels(_name("flow", flow), result).inc()

    def set_verify_mismatched(self, flow: str, mismatched: Mapping[str, int]) -> None:
        """Mismatched documents per collection (also at start, from the last recorded run)."""
        flow = _name("flow", flow)
        counts = {_collection(c): int(n) for c, n in mismatched.items()}
        if any(n < 0 for n in counts.values()):
            raise ValueError("document counts must not be negative")
        for coll, count in counts.items():
            self.verify_mismatched.labels(flow, coll).set(count)

    def set_sync_last_success(self, flow: str, timestamp: float) -> None:
        """At start: restore the last success the engine's state remembers (0 = never)."""
        self.sync_last_success.labels(_name("flow", flow)).set(timestamp)

    def record_backup(
        self,
        endpoint: str,
        result: Result,
        backups_count: int | None = None,
        bytes_total: int | None = None,
        *,
        now: float | None = None,
    ) -> None:
        """One finished backup; the counts describe the backups kept after retention."""
        endpoint, result = _name("endpoint", endpoint), _result(result)
        self.backup_runs.labels(endpoint, result).inc()
        last = (time.time() if now is None else now) if result == "success" else None
        self.set_backup_inventory(endpoint, backups_count, bytes_total, last)

    def set_backup_inventory(
        self,
        endpoint: str,
        backups_count: int | None,
        bytes_total: int | None,
        last_success: float | None = None,
    ) -> None:
        """Backups kept now (at start, after retention or a restore); None leaves a value."""
        endpoint = _name("endpoint", endpoint)
        if backups_count is not None:
            self.backups.labels(endpoint).set(backups_count)
        if bytes_total is not None:
            self.backup_bytes.labels(endpoint).set(bytes_total)
        if last_success is not None:
            self.backup_last_success.labels(endpoint).set(last_success)

    def set_endpoint_up(self, endpoint: str, up: bool) -> None:
        self.endpoint_up.labels(_name("endpoint", endpoint)).set(1 if up else 0)

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format."""
        return generate_latest(self.registry)


def _label_values(gauge: Gauge) -> set[str]:
    """The values of a one-label gauge's only label, for every series it has."""
    return {
        value for family in gauge.collect() for s in family.samples for value in s.labels.values()
    }


def collections_by_flow(config: Config) -> dict[str, list[str]]:
    """Per flow, the collections named (not patterns) by the policy, GridFS partners added."""
    result: dict[str, list[str]] = {}
    for flow in config.flows:
        names: list[str] = []
        for policy in config.collections:
            if policy.is_pattern or not config.allows(flow, policy.name):
                continue
            for name in (policy.name, GRIDFS_PAIRS.get(policy.name)):
                if name is not None and name not in names and COLLECTION_PATTERN.fullmatch(name):
                    names.append(name)
        result[flow] = names
    return result


def schedule_intervals(
    schedules: Iterable[Schedule], *, start: datetime | None = None
) -> tuple[dict[str, float], dict[str, float]]:
    """Longest gap between runs per flow and per backed-up endpoint (the shortest schedule wins).

    A cron's gap is the longest one among its next 64 fire times (so `0 3 * * 1-5` gives the
    weekend's 72 h). on_signal-only schedules have no interval and are left out.
    """
    flows: dict[str, float] = {}
    endpoints: dict[str, float] = {}
    for schedule in schedules:
        seconds = _schedule_gap(schedule, start or datetime.now(UTC))
        target = flows if schedule.flow is not None else endpoints
        key = schedule.flow if schedule.flow is not None else schedule.backup
        if seconds is None or key is None:
            continue
        target[key] = min(seconds, target.get(key, seconds))
    return flows, endpoints


def _schedule_gap(schedule: Schedule, start: datetime) -> float | None:
    if schedule.interval_seconds is not None:
        return float(schedule.interval_seconds)
    if schedule.cron is None:
        return None
    trigger = crontab_trigger(schedule.cron, UTC)
    fires: list[datetime] = []
    previous = None
    now = start
    for _ in range(64):
        fire = trigger.get_next_fire_time(previous, now)
        if fire is None:
            break
        fires.append(fire)
        previous, now = fire, fire + timedelta(microseconds=1)
    gaps = [(b - a).total_seconds() for a, b in zip(fires, fires[1:], strict=False)]
    return max(gaps) if gaps else None
