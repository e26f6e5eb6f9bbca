"""A real Prometheus scrapes syncd's listener and evaluates the shipped alert rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncd import __version__
from syncd.health import HealthState, start_listener
from syncd.metrics import SyncdMetrics
from tests.support.prometheus import (
    NOT_INSTALLED,
    prometheus_path,
    shorten_for,
    start_prometheus,
)

RULES = Path(__file__).resolve().parent.parent / "config" / "alerts" / "syncd-rules.yml"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(prometheus_path() is None, reason=NOT_INSTALLED),
]


def healthy() -> HealthState:
    return HealthState(config_loaded=True, scheduler_running=True)


def test_prometheus_scrapes_the_listener_and_fires_the_shipped_alerts(tmp_path: Path) -> None:
    metrics = SyncdMetrics()
    metrics.prime(["from_production"], ["local", "production"], {"from_production": ["users"]})
    metrics.record_reload(True)
    metrics.set_endpoint_up("local", True)  # production never answers
    rules = shorten_for(RULES, tmp_path / "syncd-rules.yml", "0s")

    with (
        start_listener("127.0.0.1:0", metrics, healthy) as listener,
        start_prometheus(tmp_path / "prometheus", [f"127.0.0.1:{listener.port}"], [rules]) as prom,
    ):
        build = prom.wait_for("a scraped sample", lambda: prom.query("syncd_build_info"))
        assert build[0]["metric"]["version"] == __version__
        assert build[0]["metric"]["job"] == "syncd"
        assert prom.query('up{job="syncd"}')[0]["value"][1] == "1"

        # Prometheus must see the primed 0 before the failure, as it would after a real start.
        prom.wait_for(
            "the primed failure counter",
            lambda: prom.query('syncd_sync_runs_total{result="failure"} == 0'),
        )
        metrics.record_sync("from_production", "failure", 3.0)

        failing = prom.wait_for("SyncFailing to fire", lambda: prom.firing("SyncFailing"))
        assert [a["labels"]["flow"] for a in failing] == ["from_production"]
        assert failing[0]["annotations"]["summary"] == "syncd flow from_production failed"
        down = prom.wait_for("EndpointDown to fire", lambda: prom.firing("EndpointDown"))
        assert [a["labels"]["endpoint"] for a in down] == ["production"]
        firing = {a["labels"]["alertname"] for a in prom.alerts() if a["state"] == "firing"}
        assert firing == {"SyncFailing", "EndpointDown"}
