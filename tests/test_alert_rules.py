"""The shipped alert rules and Grafana dashboard: checked and unit-tested by promtool,
and tied to the metrics syncd really exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from syncd.metrics import SyncdMetrics
from tests.test_metrics import SPEC_METRICS

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "config" / "alerts" / "syncd-rules.yml"
RULE_TESTS = ROOT / "config" / "alerts" / "syncd-rules.test.yml"
DASHBOARD = ROOT / "config" / "grafana" / "syncd-dashboard.json"

ALERTS = {
    "SyncFailing",
    "SyncStale",
    "DriftBlockingFlow",
    "VerifyMismatch",
    "SyncLagging",
    "BackupStale",
    "BackupFailing",
    "ConfigReloadFailed",
    "EndpointDown",
    "SyncdAbsent",
}
# Not from syncd's registry but from Prometheus (`up`, ALERTS) or the process collector.
OUTSIDE_SYNCD = {"up", "process_start_time_seconds"}
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "inf", "nan",
}  # fmt: skip
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1d",
    "$window": "1d",
}

promtool = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    promtool is None,
    reason="promtool not on PATH (Debian package `prometheus`; `make tools` installs it)",
)


def run_promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert promtool is not None
    return subprocess.run(
        [promtool, *map(str, args)], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def rule_doc() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(RULES.read_text())
    return doc


def rules() -> list[dict[str, Any]]:
    return [rule for group in rule_doc()["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def panels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    flat = []
    for panel in doc["panels"]:
        flat.append(panel)
        flat.extend(panel.get("panels", []))  # panels inside collapsed rows
    return flat


def dashboard_exprs(doc: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in panels(doc) for t in p.get("targets", []) if "expr" in t]


def exported_names() -> set[str]:
    """Every sample name a primed SyncdMetrics exposes, histogram series included."""
    metrics = SyncdMetrics()
    metrics.prime(["flow"], ["endpoint"], {"flow": ["coll"]})
    text = metrics.render().decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def recorded_names() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (functions, keywords and label names left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", text):
        follows = text[match.end() :].lstrip()
        if not follows.startswith("(") and match.group().lower() not in PROMQL_WORDS:
            names.add(match.group())
    return names


def grafana_to_promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)  # $job, $flow ... are regex matchers


# --- rules ---------------------------------------------------------------------------


def test_every_alert_has_severity_summary_and_description() -> None:
    alerts = {rule["alert"]: rule for rule in rules() if "alert" in rule}
    assert set(alerts) == ALERTS
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert rule["annotations"]["summary"].strip(), name
        assert rule["annotations"]["description"].strip(), name


def test_rules_use_only_metrics_syncd_exports() -> None:
    known = exported_names() | recorded_names() | OUTSIDE_SYNCD
    for rule in rules():
        unknown = metric_names(rule["expr"]) - known
        assert not unknown, f"{rule.get('alert') or rule.get('record')}: {sorted(unknown)}"


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    doc = yaml.safe_load(RULE_TESTS.read_text())
    fires, quiet = set(), set()
    for case in doc["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check["exp_alerts"] else quiet).add(check["alertname"])
    assert fires == ALERTS, f"never shown firing: {sorted(ALERTS - fires)}"
    assert quiet == ALERTS, f"never shown quiet: {sorted(ALERTS - quiet)}"


@needs_promtool
def test_promtool_accepts_the_rule_file() -> None:
    result = run_promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


@needs_promtool
def test_promtool_unit_tests_pass() -> None:
    result = run_promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


# --- dashboard -----------------------------------------------------------------------


def test_dashboard_picks_its_datasource_from_a_variable() -> None:
    """File provisioning never resolves `__inputs` (grafana/grafana#10786); a datasource
    variable works both when provisioned from a file and when imported in the UI."""
    doc = dashboard()
    assert doc["schemaVersion"] >= 39
    assert doc["uid"] and doc["title"]
    assert "__inputs" not in doc
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in panels(doc)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(doc):
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            assert target["refId"]
    for variable in doc["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == "${datasource}"


def test_dashboard_queries_use_only_metrics_syncd_exports() -> None:
    doc = dashboard()
    known = exported_names() | recorded_names() | OUTSIDE_SYNCD
    for expr in dashboard_exprs(doc):
        unknown = metric_names(expr) - known
        assert not unknown, f"{expr}: {sorted(unknown)}"
    for variable in doc["templating"]["list"]:
        if variable["type"] == "query":  # label_values(METRIC{...}, LABEL)
            metric = re.fullmatch(r"label_values\((\w+)[{,].*", variable["definition"])
            assert metric is not None and metric.group(1) in known, variable["definition"]


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    exprs = dashboard_exprs(dashboard())
    group = {
        "name": "dashboard",
        "rules": [
            {"record": f"dashboard:query_{i}", "expr": grafana_to_promql(e)}
            for i, e in enumerate(exprs)
        ],
    }
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [group]}))
    result = run_promtool("check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_spec_metric_is_on_the_dashboard_or_in_an_alert() -> None:
    used: set[str] = set()
    for expr in dashboard_exprs(dashboard()) + [r["expr"] for r in rules()]:
        used |= metric_names(expr)
    used |= {
        n.removesuffix(s) for n in used for s in ("_bucket", "_count", "_sum") if n.endswith(s)
    }
    assert set(SPEC_METRICS) - used == set()


def test_dashboard_shows_what_the_issue_asks_for() -> None:
    exprs = "\n".join(dashboard_exprs(dashboard()))
    assert "syncd_sync_runs_total" in exprs and "result" in exprs  # runs by result
    assert "time() - (syncd_sync_last_success_timestamp_seconds" in exprs  # success age
    assert "histogram_quantile(0.9" in exprs  # duration quantiles
    assert "sum by (flow, op)" in exprs  # documents by op
    for name in ("syncd_drift_documents", "syncd_backups", "syncd_backup_bytes"):
        assert name in exprs
    assert "syncd_backup_last_success_timestamp_seconds" in exprs  # backup age
    assert "syncd_endpoint_up" in exprs and "syncd_config_last_reload_successful" in exprs
