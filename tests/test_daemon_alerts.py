"""A real `syncd run` as Prometheus and an operator's dashboard see it: its metrics after real
runs, and the shipped alert rules firing in a real Prometheus (with `for:` shortened)."""

from __future__ import annotations

import re
import signal
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pymongo.database import Database

from tests.support.daemon import SyncdDaemon, wait_until
from tests.support.prometheus import (
    NOT_INSTALLED,
    PrometheusServer,
    prometheus_path,
    shorten_for,
    start_prometheus,
)
from tests.support.servers import free_port
from tests.test_daemon import daemon_config

pytestmark = pytest.mark.slow

RULES = Path(__file__).resolve().parent.parent / "config" / "alerts" / "syncd-rules.yml"
needs_prometheus = pytest.mark.skipif(prometheus_path() is None, reason=NOT_INSTALLED)

Db = Database[dict[str, Any]]
StartDaemon = Callable[[Path], SyncdDaemon]
Sample = tuple[str, dict[str, str], float]

# SPEC §7: every metric a scrape must show (histograms by their _count series).
SPEC_SERIES = (
    "syncd_sync_runs_total",
    "syncd_sync_duration_seconds_count",
    "syncd_sync_last_success_timestamp_seconds",
    "syncd_sync_documents_total",
    "syncd_drift_documents",
    "syncd_backup_runs_total",
    "syncd_backup_last_success_timestamp_seconds",
    "syncd_backups",
    "syncd_backup_bytes",
    "syncd_endpoint_up",
    "syncd_config_last_reload_successful",
    "syncd_config_last_reload_success_timestamp_seconds",
    "syncd_build_info",
)
# What a label value must never look like: a URI, credentials, an IPv4/IPv6 host, host:port.
UNSAFE_LABEL = re.compile(
    r"mongodb(\+srv)?://|@|\b\d{1,3}(\.\d{1,3}){3}\b|localhost|\[?[0-9a-f]*::[0-9a-f:]*\]?|:\d+$",
    re.IGNORECASE,
)


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[StartDaemon]:
    started: list[SyncdDaemon] = []

    def start(config: Path) -> SyncdDaemon:
        daemon = SyncdDaemon(config, tmp_path / f"syncd-{len(started)}.log")
        started.append(daemon.start())
        return daemon

    yield start
    for daemon in started:
        daemon.stop()


def scrape(daemon: SyncdDaemon) -> list[Sample]:
    with urllib.request.urlopen(f"{daemon.metrics_url()}/metrics", timeout=10) as response:  # noqa: S310
        text = response.read().decode()
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def value(samples: list[Sample], name: str, **labels: str) -> float | None:
    return next((v for n, found, v in samples if n == name and found == labels), None)


def unsafe_labels(series: list[dict[str, str]]) -> list[dict[str, str]]:
    return [labels for labels in series if any(UNSAFE_LABEL.search(v) for v in labels.values())]


def firing_names(prom: PrometheusServer) -> set[str]:
    return {a["labels"]["alertname"] for a in prom.alerts() if a["state"] == "firing"}


def firing(prom: PrometheusServer, alertname: str, label: str) -> list[str]:
    return sorted(a["labels"][label] for a in prom.firing(alertname))


# -- metrics wiring ---------------------------------------------------------------------------


def test_metrics_follow_a_pull_with_its_backup_a_refused_push_and_a_scheduled_backup(
    write_config: Callable[..., Path],
    start_daemon: StartDaemon,
    tmp_path: Path,
    local_uri: str,
    production_uri: str,
    local_db: Db,
    production_db: Db,
) -> None:
    production_db.users.insert_many(
        [{"_id": n, "email": f"{n}@valkyria.com", "name": n} for n in ("admin", "legal")]
    )
    production_db.audit_events.insert_one({"_id": 1, "what": "edited in production"})
    schedules = (
        "  - {name: pull, flow: from_production, collections: [users], interval: 1s}\n"
        "  - {name: deploy-push, flow: to_production, collections: [audit_events],"
        " on_signal: true, unattended: true}\n"
        "  - {name: prod-backup, backup: production, interval: 1s}\n"
    )
    config = write_config(daemon_config(tmp_path / "state", local_uri, production_uri, schedules))
    daemon = start_daemon(config)
    daemon.wait_msg("sync done", job="pull")

    # A replace on the target: the pull backs `local` up first.
    production_db.users.update_one({"_id": "admin"}, {"$set": {"name": "Admin"}})
    mark = daemon.mark()
    pulled = daemon.wait_log(
        lambda e: e.get("msg") == "sync done" and e.get("job") == "pull" and "backup" in e,
        start=mark,
    )
    assert pulled["updated"] == 1
    after_pull = scrape(daemon)
    flow = {"flow": "from_production", "collection": "users"}
    assert value(after_pull, "syncd_sync_documents_total", **flow, op="insert") == 2
    assert value(after_pull, "syncd_sync_documents_total", **flow, op="update") == 1
    assert value(after_pull, "syncd_sync_documents_total", **flow, op="delete") == 0
    assert value(after_pull, "syncd_backup_runs_total", endpoint="local", result="success") == 1
    assert value(after_pull, "syncd_backups", endpoint="local") == 1
    assert (value(after_pull, "syncd_backup_bytes", endpoint="local") or 0) > 0
    assert (
        value(after_pull, "syncd_backup_last_success_timestamp_seconds", endpoint="local") or 0
    ) > 0

    # audit_events on production holds a document syncd never put there: drift, refused.
    mark = daemon.mark()
    daemon.send(signal.SIGUSR1)
    daemon.wait_msg("sync refused", start=mark, job="deploy-push")
    refused = scrape(daemon)
    push = {"flow": "to_production", "collection": "audit_events"}
    assert value(refused, "syncd_drift_documents", **push) == 1
    assert value(refused, "syncd_sync_runs_total", flow="to_production", result="refused") == 1

    # Local now holds the same document: nothing to write, the push succeeds, drift is gone.
    local_db.audit_events.insert_one({"_id": 1, "what": "edited in production"})
    mark = daemon.mark()
    daemon.send(signal.SIGUSR1)
    done = daemon.wait_msg("sync done", start=mark, job="deploy-push")
    assert done["inserted"] == done["updated"] == done["deleted"] == 0
    wait_until(
        lambda: (
            daemon.metric("syncd_endpoint_up", endpoint="production") == 1
            and daemon.metric("syncd_backups", endpoint="production")
        ),
        what="production pinged and backed up",
    )
    final = scrape(daemon)
    assert value(final, "syncd_drift_documents", **push) == 0
    assert value(final, "syncd_sync_documents_total", **push, op="insert") == 0
    assert value(final, "syncd_sync_runs_total", flow="to_production", result="success") == 1
    assert value(final, "syncd_endpoint_up", endpoint="local") == 1
    assert (
        value(final, "syncd_backup_runs_total", endpoint="production", result="success") or 0
    ) >= 1
    assert (value(final, "syncd_backup_bytes", endpoint="production") or 0) > 0
    assert value(final, "syncd_config_last_reload_successful") == 1
    assert (value(final, "syncd_config_last_reload_success_timestamp_seconds") or 0) > 0
    assert {name for name, _, _ in final} >= set(SPEC_SERIES)
    assert unsafe_labels([labels for name, labels, _ in final if name.startswith("syncd_")]) == []


# -- alerts in a real Prometheus --------------------------------------------------------------


@needs_prometheus
def test_shipped_alerts_fire_for_a_daemon_whose_production_is_down(
    write_config: Callable[..., Path],
    start_daemon: StartDaemon,
    tmp_path: Path,
    local_uri: str,
) -> None:
    # Nothing listens there; the short timeout makes each failed pull and ping quick.
    nowhere = (
        f"mongodb://127.0.0.1:{free_port()}/valkyria"
        "?directConnection=true&serverSelectionTimeoutMS=300"
    )
    schedules = "  - {name: pull, flow: from_production, interval: 1s}\n"
    good = daemon_config(tmp_path / "state", local_uri, nowhere, schedules)
    config = write_config(good)
    daemon = start_daemon(config)
    port = daemon.metrics_url().rpartition(":")[2]
    rules = shorten_for(RULES, tmp_path / "syncd-rules.yml", "0s")

    with start_prometheus(tmp_path / "prometheus", [f"127.0.0.1:{port}"], [rules]) as prom:
        daemon.wait_msg("sync failed", job="pull")
        daemon.wait_msg("endpoint is down", endpoint="production")
        prom.wait_for(
            "SyncFailing{flow=from_production}",
            lambda: firing(prom, "SyncFailing", "flow") == ["from_production"],
        )
        prom.wait_for(
            "EndpointDown for production only",
            lambda: firing(prom, "EndpointDown", "endpoint") == ["production"],
        )
        # A failing 1 s schedule is also stale after 2 s: twice its interval without success.
        prom.wait_for(
            "SyncStale{flow=from_production}",
            lambda: firing(prom, "SyncStale", "flow") == ["from_production"],
        )
        assert firing_names(prom) == {"SyncFailing", "EndpointDown", "SyncStale"}
        assert all(a["labels"]["alertname"] != "SyncdAbsent" for a in prom.alerts())
        series = prom.query('{__name__=~"syncd_.*"}')
        names = {s["metric"]["__name__"] for s in series}
        assert names >= set(SPEC_SERIES) - {"syncd_sync_duration_seconds_count"}
        # `instance` is Prometheus's own target label; everything else came from syncd.
        syncd_labels = [{k: v for k, v in s["metric"].items() if k != "instance"} for s in series]
        assert unsafe_labels(syncd_labels) == []

        write_config(good + "bogus: true\n")
        mark = daemon.mark()
        daemon.send(signal.SIGHUP)
        daemon.wait_msg("config reload failed", start=mark)
        prom.wait_for("ConfigReloadFailed", lambda: prom.firing("ConfigReloadFailed"))
        assert all(a["labels"]["alertname"] != "SyncdAbsent" for a in prom.alerts())

        daemon.send(signal.SIGTERM)
        assert daemon.wait_exit(30) == 0
        absent = prom.wait_for("SyncdAbsent", lambda: prom.firing("SyncdAbsent"))
        assert absent[0]["labels"]["job"] == "syncd"
