"""docker-compose.yml, the example stack for users.

No Docker engine runs here, so this checks what `docker compose config` and the containers
would trip over: missing files, undefined secrets and volumes, health conditions nobody
can meet, passwords written inline, and configs that disagree with one another.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncd.cli import main as syncd_main

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
SECRET_WORDS = re.compile(r"PASSWORD|SECRET|TOKEN|PASSWD|API_?KEY", re.IGNORECASE)
URI_WITH_PASSWORD = re.compile(r"://[^/@\s:]+:[^/@\s]+@")


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = load(COMPOSE)
    assert isinstance(doc, dict)
    return doc


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose["services"]
    return result


def bind_mounts(service: dict[str, Any]) -> dict[str, str]:
    """Host path -> container path of the service's bind mounts (./ sources)."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            mounts[source[2:]] = target
    return mounts


def walk_strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in walk_strings(key) + walk_strings(value)]
    if isinstance(node, list):
        return [s for item in node for s in walk_strings(item)]
    return [node] if isinstance(node, str) else []


def test_stack_has_two_mongodb_replica_sets_syncd_prometheus_and_grafana(
    compose: dict[str, Any],
) -> None:
    assert set(services(compose)) == {
        "mongo-local",
        "mongo-production",
        "syncd",
        "prometheus",
        "grafana",
    }
    for name in ("mongo-local", "mongo-production"):
        mongo = services(compose)[name]
        assert mongo["image"].startswith("mongo:7")
        assert mongo["command"][:2] == ["--replSet", "rs0"]
        check = " ".join(mongo["healthcheck"]["test"])
        assert "rs.initiate" in check and f"host: '{name}:27017'" in check
        assert "$" not in check, "compose would interpolate it; write $$"


def test_every_file_the_stack_mounts_is_in_the_repository(compose: dict[str, Any]) -> None:
    missing = [
        f"{name}: ./{source}"
        for name, service in services(compose).items()
        for source in bind_mounts(service)
        if not (REPO / source).exists()
    ]
    assert missing == []
    build = services(compose)["syncd"]["build"]
    assert (REPO / build / "Dockerfile").exists()


def test_secrets_are_defined_gitignored_and_have_templates(compose: dict[str, Any]) -> None:
    defined = compose["secrets"]
    used = {s for service in services(compose).values() for s in service.get("secrets", [])}
    assert used == set(defined)
    for name, secret in defined.items():
        path = Path(secret["file"])
        assert path.parent == Path("docker/secrets"), name
        assert (REPO / f"{path}.example").is_file(), f"{name}: no {path}.example to copy"
        git = shutil.which("git")
        if git is not None and (REPO / ".git").exists():
            ignored = subprocess.run([git, "check-ignore", "-q", str(path)], cwd=REPO, check=False)
            assert ignored.returncode == 0, f"{path} would be committed"


def test_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    used = {
        volume.split(":")[0]
        for service in services(compose).values()
        for volume in service.get("volumes", [])
        if not volume.startswith(("./", "/"))
    }
    assert used == set(compose["volumes"])


def test_health_conditions_can_be_met(compose: dict[str, Any]) -> None:
    dockerfile_has_healthcheck = "\nHEALTHCHECK " in (REPO / "Dockerfile").read_text()
    for name, service in services(compose).items():
        healthy = "healthcheck" in service or ("build" in service and dockerfile_has_healthcheck)
        assert healthy, f"{name} has no healthcheck"
        for target, rule in service.get("depends_on", {}).items():
            assert target in services(compose), f"{name} depends on unknown {target}"
            assert rule["condition"] in CONDITIONS, f"{name} -> {target}: {rule['condition']}"
    syncd = services(compose)["syncd"]
    assert {t: r["condition"] for t, r in syncd["depends_on"].items()} == {
        "mongo-local": "service_healthy",
        "mongo-production": "service_healthy",
    }


def test_no_password_is_written_in_the_compose_file(compose: dict[str, Any]) -> None:
    for name, service in services(compose).items():
        for key, value in dict(service.get("environment", {})).items():
            if SECRET_WORDS.search(key):
                assert key.endswith("_FILE"), f"{name}: {key} inline; use {key}__FILE"
                assert str(value).startswith("/run/secrets/"), f"{name}: {key}"
    # No offending value in the message: it would put the password in the test output.
    inline = any(URI_WITH_PASSWORD.search(s) for s in walk_strings(compose))
    assert not inline, "a URI with user:password@ is written in docker-compose.yml"


def test_ports_are_published_on_loopback_only(compose: dict[str, Any]) -> None:
    for name, service in services(compose).items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"


def test_syncd_config_in_the_stack_is_valid_and_uses_its_secrets(
    compose: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    syncd = services(compose)["syncd"]
    mounts = bind_mounts(syncd)
    assert mounts.get("docker/syncd.yaml") == syncd["environment"]["SYNCD_CONFIG"]
    assert syncd_main(["-c", str(REPO / "docker" / "syncd.yaml"), "validate"]) == 0, (
        capsys.readouterr().err
    )
    config = load(REPO / "docker" / "syncd.yaml")
    assert config["endpoints"]["production"]["uri_file"] == "/run/secrets/mongodb-uri"
    assert config["hooks"]["reset_passwords"]["password_file"] == "/run/secrets/reset-password"
    assert {"mongodb-uri", "reset-password"} <= set(syncd["secrets"])
    host, _, port = config["metrics"]["listen"].rpartition(":")
    assert host == "0.0.0.0", "Prometheus scrapes syncd from another container"  # noqa: S104
    assert f"127.0.0.1:{port}:{port}" in syncd["ports"]
    template = (REPO / "docker/secrets/mongodb-uri.example").read_text()
    assert re.search(r"//mongo-production:27017/", template)


def test_prometheus_scrapes_syncd_and_loads_the_shipped_rules(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    prometheus = services(compose)["prometheus"]
    mounts = bind_mounts(prometheus)
    config = load(REPO / "docker" / "prometheus.yml")
    assert mounts["config/alerts/syncd-rules.yml"] in config["rule_files"]
    assert mounts["docker/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    port = load(REPO / "docker" / "syncd.yaml")["metrics"]["listen"].rpartition(":")[2]
    targets = [
        t for job in config["scrape_configs"] for s in job["static_configs"] for t in s["targets"]
    ]
    assert f"syncd:{port}" in targets
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (make tools)")
    # The same config with the rules at their repository path, so promtool checks them too.
    local = dict(config, rule_files=[str(REPO / "config/alerts/syncd-rules.yml")])
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(local))
    done = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_grafana_provisions_the_datasource_and_the_dashboard(compose: dict[str, Any]) -> None:
    grafana = services(compose)["grafana"]
    mounts = bind_mounts(grafana)
    assert mounts["docker/grafana/provisioning"] == "/etc/grafana/provisioning"
    provisioning = REPO / "docker/grafana/provisioning"
    (datasource,) = load(provisioning / "datasources/prometheus.yml")["datasources"]
    prometheus_port = services(compose)["prometheus"]["ports"][0].rpartition(":")[2]
    assert datasource["url"] == f"http://prometheus:{prometheus_port}"
    (provider,) = load(provisioning / "dashboards/syncd.yml")["providers"]
    dashboard_target = Path(mounts["config/grafana/syncd-dashboard.json"])
    assert dashboard_target.parent == Path(provider["options"]["path"])
    dashboard = json.loads((REPO / "config/grafana/syncd-dashboard.json").read_text())
    assert dashboard_problems(dashboard, datasource["uid"]) == []


def dashboard_problems(dashboard: dict[str, Any], provisioned_uid: str) -> list[str]:
    """Why Grafana's file provisioning would show this dashboard without data, if it would.

    Provisioning loads the JSON as is: an "export for sharing" `__inputs` block and its
    `${DS_...}` placeholders are never resolved (grafana/grafana#10786). Panels must name
    the provisioned uid or a datasource template variable.
    """
    problems = []
    if "__inputs" in dashboard:
        problems.append("has __inputs (export-for-sharing format); provisioning ignores them")
    names = [
        v["name"]
        for v in dashboard.get("templating", {}).get("list", [])
        if v.get("type") == "datasource"
    ]
    known = {provisioned_uid, "-- Grafana --", "grafana"}
    known |= {f"${{{name}}}" for name in names} | {f"${name}" for name in names}
    refs = _datasource_refs(dashboard)
    if not refs:
        problems.append("queries no datasource")
    unknown = sorted({ref["uid"] for ref in refs if "uid" in ref and ref["uid"] not in known})
    if unknown:
        problems.append(f"panels use datasource uids Grafana will not have: {unknown}")
    return problems


def _datasource_refs(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, list):
        return [ref for item in node for ref in _datasource_refs(item)]
    if not isinstance(node, dict):
        return []
    refs = [node["datasource"]] if isinstance(node.get("datasource"), dict) else []
    return refs + [
        ref for key, v in node.items() if key != "datasource" for ref in _datasource_refs(v)
    ]
