"""Metrics and /healthz as Prometheus and a container probe see them: over real HTTP."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from syncd import __version__
from syncd.config import load_config
from syncd.config.model import Schedule
from syncd.health import HealthState, JobHealth, ListenAddressError, Listener, start_listener
from syncd.metrics import (
    DOC_OPS,
    DURATION_BUCKETS,
    RESULTS,
    SyncdMetrics,
    UnsafeLabelValue,
    schedule_intervals,
)

EXAMPLE_CONFIG = Path(__file__).resolve().parent.parent / "config" / "syncd.example.yaml"

# SPEC §7, name -> type as exposed (the contract).
SPEC_METRICS = {
    "syncd_sync_runs_total": "counter",
    "syncd_sync_duration_seconds": "histogram",
    "syncd_sync_last_success_timestamp_seconds": "gauge",
    "syncd_sync_documents_total": "counter",
    "syncd_drift_documents": "gauge",
    "syncd_backup_runs_total": "counter",
    "syncd_backup_last_success_timestamp_seconds": "gauge",
    "syncd_backups": "gauge",
    "syncd_backup_bytes": "gauge",
    "syncd_endpoint_up": "gauge",
    "syncd_config_last_reload_successful": "gauge",
    "syncd_config_last_reload_success_timestamp_seconds": "gauge",
    "syncd_build_info": "gauge",
    "syncd_verify_runs_total": "counter",
    "syncd_verify_mismatched_documents": "gauge",
}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def http_get(url: str) -> tuple[int, str, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers["Content-Type"], exc.read()


def scrape(listener: Listener) -> tuple[dict[str, str], Samples]:
    """(metric name as exposed -> type, samples) from a real GET /metrics."""
    status, content_type, body = http_get(f"{listener.url}/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    text = body.decode()
    types = {
        line.split()[2]: line.split()[3] for line in text.splitlines() if line.startswith("# TYPE")
    }
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return types, samples


def syncd_lines(exposition: bytes) -> list[bytes]:
    return [line for line in exposition.splitlines() if line.startswith(b"syncd_")]


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


class Health:
    """What the daemon would hand to start_listener: a callable the test can change."""

    def __init__(self) -> None:
        self.state = HealthState(config_loaded=True, scheduler_running=True)

    def __call__(self) -> HealthState:
        return self.state


@pytest.fixture
def metrics() -> SyncdMetrics:
    m = SyncdMetrics()
    m.prime_from_config(load_config(EXAMPLE_CONFIG))
    m.record_reload(True)
    return m


@pytest.fixture
def health() -> Health:
    return Health()


@pytest.fixture
def listener(metrics: SyncdMetrics, health: Health) -> Iterator[Listener]:
    with start_listener("127.0.0.1:0", metrics, health) as running:
        yield running


def test_every_spec_metric_is_served_over_http_with_its_type(listener: Listener) -> None:
    types, _ = scrape(listener)
    missing = {name for name in SPEC_METRICS if name not in types}
    assert not missing, f"not exposed: {sorted(missing)}"
    assert {name: types[name] for name in SPEC_METRICS} == SPEC_METRICS
    gauges_named_total = [n for n, t in types.items() if n.endswith("_total") and t != "counter"]
    assert gauges_named_total == []


def test_configured_flows_and_endpoints_start_at_zero(listener: Listener) -> None:
    _, samples = scrape(listener)
    for flow in ("to_production", "from_production"):
        for result in RESULTS:
            assert value(samples, "syncd_sync_runs_total", flow=flow, result=result) == 0
        assert value(samples, "syncd_sync_duration_seconds_count", flow=flow) == 0
        assert value(samples, "syncd_sync_last_success_timestamp_seconds", flow=flow) == 0
    for endpoint in ("local", "production"):
        for result in RESULTS:
            assert value(samples, "syncd_backup_runs_total", endpoint=endpoint, result=result) == 0
        for gauge in ("syncd_backups", "syncd_backup_bytes", "syncd_endpoint_up"):
            assert value(samples, gauge, endpoint=endpoint) == 0
    # collections named by the policy, GridFS pairs included; audit_events is pull-only.
    for flow, collection in [
        ("to_production", "users"),
        ("to_production", "fs.chunks"),
        ("from_production", "audit_events"),
    ]:
        for op in DOC_OPS:
            labels = {"flow": flow, "collection": collection, "op": op}
            assert value(samples, "syncd_sync_documents_total", **labels) == 0
        assert value(samples, "syncd_drift_documents", flow=flow, collection=collection) == 0
        labels = {"flow": flow, "collection": collection}
        assert value(samples, "syncd_verify_mismatched_documents", **labels) == 0
    for flow in ("to_production", "from_production"):
        for outcome in ("equal", "different", "failure"):
            assert value(samples, "syncd_verify_runs_total", flow=flow, result=outcome) == 0
    pull_only = {"flow": "to_production", "collection": "audit_events"}
    assert ("syncd_drift_documents", frozenset(pull_only.items())) not in samples
    assert value(samples, "syncd_build_info", version=__version__) == 1
    assert value(samples, "syncd_config_last_reload_successful") == 1


def test_schedules_of_the_example_become_stale_thresholds(listener: Listener) -> None:
    _, samples = scrape(listener)
    # nightly cron: 24 h; deploy-push runs on a signal only: not scheduled; hourly backup.
    assert value(samples, "syncd_sync_schedule_interval_seconds", flow="from_production") == 86400
    assert value(samples, "syncd_sync_schedule_interval_seconds", flow="to_production") == 0
    assert value(samples, "syncd_backup_schedule_interval_seconds", endpoint="production") == 3600
    assert value(samples, "syncd_backup_schedule_interval_seconds", endpoint="local") == 0


def test_a_verify_shows_up_in_the_next_scrape(metrics: SyncdMetrics, listener: Listener) -> None:
    metrics.record_verify("to_production", "different", {"users": 3, "fs.files": 0})
    metrics.record_verify("to_production", "failure")

    _, samples = scrape(listener)

    runs = "syncd_verify_runs_total"
    assert value(samples, runs, flow="to_production", result="different") == 1
    assert value(samples, runs, flow="to_production", result="failure") == 1
    assert value(samples, runs, flow="to_production", result="equal") == 0
    mismatched = "syncd_verify_mismatched_documents"
    assert value(samples, mismatched, flow="to_production", collection="users") == 3
    assert value(samples, mismatched, flow="to_production", collection="fs.files") == 0


def test_a_run_shows_up_in_the_next_scrape(metrics: SyncdMetrics, listener: Listener) -> None:
    metrics.record_sync(
        "to_production",
        "refused",
        2.0,
        drift={"users": 3},
    )
    metrics.record_sync(
        "to_production",
        "success",
        42.0,
        docs={("users", "update"): 3, ("fs.files", "insert"): 2, ("fs.chunks", "insert"): 9},
        now=1_700_000_000,
    )
    metrics.record_sync("to_production", "skipped", 0.0)
    metrics.record_backup(
        "production", "success", backups_count=4, bytes_total=12345, now=1_700_000_100
    )
    metrics.set_endpoint_up("production", True)
    _, samples = scrape(listener)
    flow = {"flow": "to_production"}
    assert value(samples, "syncd_sync_runs_total", **flow, result="success") == 1
    assert value(samples, "syncd_sync_runs_total", **flow, result="refused") == 1
    assert value(samples, "syncd_sync_runs_total", **flow, result="skipped") == 1
    assert value(samples, "syncd_sync_duration_seconds_count", **flow) == 2  # skipped: not timed
    assert value(samples, "syncd_sync_duration_seconds_bucket", **flow, le="60.0") == 2
    assert value(samples, "syncd_sync_last_success_timestamp_seconds", **flow) == 1_700_000_000
    assert (
        value(samples, "syncd_sync_documents_total", **flow, collection="users", op="update") == 3
    )
    assert (
        value(samples, "syncd_sync_documents_total", **flow, collection="fs.chunks", op="insert")
        == 9
    )
    # the refused run's drift is cleared by the run that went through the collection
    assert value(samples, "syncd_drift_documents", **flow, collection="users") == 0
    assert value(samples, "syncd_backups", endpoint="production") == 4
    assert value(samples, "syncd_backup_bytes", endpoint="production") == 12345
    assert (
        value(samples, "syncd_backup_last_success_timestamp_seconds", endpoint="production")
        == 1_700_000_100
    )
    assert value(samples, "syncd_endpoint_up", endpoint="production") == 1


def test_refused_run_leaves_its_drift_visible(metrics: SyncdMetrics, listener: Listener) -> None:
    metrics.record_sync("to_production", "refused", 1.5, drift={"users": 3})
    _, samples = scrape(listener)
    assert value(samples, "syncd_drift_documents", flow="to_production", collection="users") == 3
    assert value(samples, "syncd_sync_last_success_timestamp_seconds", flow="to_production") == 0


def test_failed_reload_is_reported_and_keeps_the_last_good_time(metrics: SyncdMetrics) -> None:
    metrics.record_reload(True, now=1_700_000_000)
    metrics.record_reload(False, now=1_700_000_500)
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
    }
    assert value(samples, "syncd_config_last_reload_successful") == 0
    assert value(samples, "syncd_config_last_reload_success_timestamp_seconds") == 1_700_000_000


@pytest.mark.parametrize(
    "unsafe",
    [
        "mongodb+srv://admin:s3cret@cluster0.example.net/valkyria",
        "db.example.net:27017",
        "admin@valkyria.com",
        "has space",
        "",
        "x" * 200,
    ],
)
def test_label_values_that_are_not_plain_names_are_refused(
    metrics: SyncdMetrics, listener: Listener, unsafe: str
) -> None:
    before = syncd_lines(metrics.render())
    calls = [
        lambda: metrics.record_sync(unsafe, "success", 1.0),
        lambda: metrics.record_sync("to_production", "success", 1.0, docs={(unsafe, "insert"): 1}),
        lambda: metrics.record_sync("to_production", "refused", 1.0, drift={unsafe: 1}),
        lambda: metrics.record_backup(unsafe, "failure"),
        lambda: metrics.set_endpoint_up(unsafe, False),
        lambda: metrics.set_sync_last_success(unsafe, 1.0),
        lambda: metrics.prime([unsafe], []),
        lambda: metrics.prime([], [unsafe]),
    ]
    for call in calls:
        with pytest.raises(UnsafeLabelValue) as refused:
            call()
        if unsafe:
            assert unsafe not in str(refused.value)  # the refusal never echoes a secret
    assert syncd_lines(metrics.render()) == before  # nothing half-recorded
    _, samples = scrape(listener)
    assert unsafe not in {v for _, labels in samples for _, v in labels}


def test_result_and_op_outside_the_contract_are_refused(metrics: SyncdMetrics) -> None:
    with pytest.raises(UnsafeLabelValue):
        metrics.record_sync("to_production", "ok", 1.0)  # type: ignore[arg-type]
    with pytest.raises(UnsafeLabelValue):
        metrics.record_sync("to_production", "success", 1.0, docs={("users", "upsert"): 1})  # type: ignore[dict-item]
    with pytest.raises(UnsafeLabelValue):
        metrics.record_backup("production", "done")  # type: ignore[arg-type]


def test_each_instance_has_its_own_registry() -> None:
    first, second = SyncdMetrics(), SyncdMetrics()  # a second one would clash on a shared one
    first.prime(["pull"], ["prod"])
    first.record_sync("pull", "failure", 1.0)
    assert b'syncd_sync_runs_total{flow="pull",result="failure"} 1.0' in first.render()
    assert b'flow="pull"' not in second.render()
    assert not any(name.startswith("syncd_") for name in REGISTRY._names_to_collectors)


def test_buckets_cover_a_tenth_of_a_second_to_two_hours() -> None:
    assert DURATION_BUCKETS[0] == 0.1
    assert DURATION_BUCKETS[-1] == 7200
    assert list(DURATION_BUCKETS) == sorted(DURATION_BUCKETS)


def test_schedule_intervals_use_the_longest_gap_and_the_most_frequent_schedule() -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    flows, endpoints = schedule_intervals(
        [
            Schedule("nightly", flow="pull", cron="0 3 * * *"),
            Schedule("audit", flow="pull", collections=("audit_events",), interval_seconds=300),
            Schedule("weekdays", flow="report", cron="30 6 * * 1-5"),
            Schedule("deploy", flow="push", on_signal=True),
            Schedule("hourly", backup="production", interval_seconds=3600),
        ],
        start=start,
    )
    assert flows == {"pull": 300, "report": 3 * 86400}
    assert endpoints == {"production": 3600}


def test_schedule_intervals_read_cron_weekdays_as_crontab_does() -> None:
    # 7 is Sunday in crontab; with a day of month too, cron runs when either day matches.
    flows, _ = schedule_intervals(
        [
            Schedule("sundays", flow="weekly", cron="0 3 * * 7"),
            Schedule("firsts-and-mondays", flow="either", cron="0 3 1 * 1"),
        ],
        start=datetime(2024, 1, 1, tzinfo=UTC),
    )
    assert flows == {"weekly": 7 * 86400, "either": 7 * 86400}


def test_unscheduled_flows_are_set_back_to_zero_on_reload(metrics: SyncdMetrics) -> None:
    metrics.set_schedule_intervals({"to_production": 600}, {})
    metrics.set_schedule_intervals({}, {})
    text = metrics.render().decode()
    assert 'syncd_sync_schedule_interval_seconds{flow="to_production"} 0.0' in text
    assert 'syncd_sync_schedule_interval_seconds{flow="from_production"} 0.0' in text


def test_healthz_answers_200_with_the_job_states(listener: Listener, health: Health) -> None:
    health.state = HealthState(
        config_loaded=True,
        scheduler_running=True,
        jobs={
            "nightly-pull": JobHealth("success", 1_700_000_000),
            "deploy-push": JobHealth(),
        },
    )
    status, content_type, body = http_get(f"{listener.url}/healthz")
    assert (status, content_type) == (200, "application/json")
    assert json.loads(body) == {
        "healthy": True,
        "config_loaded": True,
        "scheduler_running": True,
        "jobs": {
            "deploy-push": {"last_result": None, "last_run": None},
            "nightly-pull": {"last_result": "success", "last_run": "2023-11-14T22:13:20+00:00"},
        },
        "continuous": {},
    }


def test_failed_job_keeps_syncd_healthy(listener: Listener, health: Health) -> None:
    health.state = HealthState(True, True, {"nightly-pull": JobHealth("failure", 1_700_000_000)})
    status, _, _ = http_get(f"{listener.url}/healthz")
    assert status == 200


@pytest.mark.parametrize(
    ("config_loaded", "scheduler_running"), [(False, True), (True, False), (False, False)]
)
def test_healthz_answers_503_when_not_running(
    listener: Listener, health: Health, config_loaded: bool, scheduler_running: bool
) -> None:
    health.state = HealthState(config_loaded, scheduler_running)
    status, content_type, body = http_get(f"{listener.url}/healthz")
    assert (status, content_type) == (503, "application/json")
    answer = json.loads(body)
    assert answer["healthy"] is False
    assert (answer["config_loaded"], answer["scheduler_running"]) == (
        config_loaded,
        scheduler_running,
    )


def test_healthz_answers_503_without_details_when_the_state_fails(metrics: SyncdMetrics) -> None:
    def broken() -> HealthState:
        raise RuntimeError("mongodb://admin:s3cret@db.example.net")

    with start_listener("127.0.0.1:0", metrics, broken) as listener:
        status, _, body = http_get(f"{listener.url}/healthz")
    assert status == 503
    assert b"s3cret" not in body
    assert json.loads(body)["healthy"] is False


def test_unknown_path_is_404(listener: Listener) -> None:
    status, _, _ = http_get(f"{listener.url}/nope")
    assert status == 404


def test_close_frees_the_port(metrics: SyncdMetrics, health: Health) -> None:
    listener = start_listener("127.0.0.1:0", metrics, health)
    port = listener.port
    assert http_get(f"{listener.url}/metrics")[0] == 200
    listener.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_listens_on_ipv6_loopback(metrics: SyncdMetrics, health: Health) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")
    try:
        listener = start_listener("[::1]:0", metrics, health)
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback on this machine: {exc}")
    with listener:
        assert listener.url == f"http://[::1]:{listener.port}"
        types, _ = scrape(listener)
    assert "syncd_build_info" in types


@pytest.mark.parametrize("listen", ["9647", "::1:9647", "host:port", "host:70000"])
def test_malformed_listen_address_is_refused(
    metrics: SyncdMetrics, health: Health, listen: str
) -> None:
    with pytest.raises(ListenAddressError):
        start_listener(listen, metrics, health)
