"""A real Prometheus server for tests: Debian's `prometheus` binary in a temporary directory.

    with start_prometheus(tmp_path, ["127.0.0.1:9647"], [rules]) as prom:
        prom.wait_for("a sample", lambda: prom.query("syncd_build_info"))
        prom.wait_for("SyncFailing", lambda: prom.firing("SyncFailing"))

`shorten_for(src, dst)` copies a rule file with every alert's `for:` replaced, so a test
sees an alert fire in seconds. Scrapes and rule evaluations run every second.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tests.support.servers import free_port

T = TypeVar("T")

PROMETHEUS_BINARY = "prometheus"
NOT_INSTALLED = (
    "prometheus not on PATH (Debian package `prometheus`: "
    "apt-get install --no-install-recommends prometheus, or `make tools`)"
)


def prometheus_path() -> str | None:
    return shutil.which(PROMETHEUS_BINARY)


class PrometheusError(RuntimeError):
    pass


@dataclass
class PrometheusServer:
    url: str
    process: subprocess.Popen[bytes]
    workdir: Path

    @property
    def log(self) -> str:
        path = self.workdir / "prometheus.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/PATH; the `data` of a successful answer."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"{self.url}/api/v1/{path}{query}", timeout=10) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise PrometheusError(f"{path}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the result vector (empty when nothing matches)."""
        result: list[dict[str, Any]] = self.api("query", query=expr)["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        """Every pending or firing alert, as /api/v1/alerts lists them."""
        alerts: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return alerts

    def firing(self, alertname: str) -> list[dict[str, Any]]:
        return [
            a
            for a in self.alerts()
            if a["labels"].get("alertname") == alertname and a["state"] == "firing"
        ]

    def targets_up(self) -> list[dict[str, Any]]:
        data = self.api("targets", state="active")
        return [t for t in data["activeTargets"] if t.get("health") == "up"]

    def wait_for(self, what: str, check: Callable[[], T], timeout: float = 60.0) -> T:
        """Poll `check` until it returns something truthy; fail with the server's log tail."""
        deadline = time.monotonic() + timeout
        last: T = check()
        while not last:
            if self.process.poll() is not None:
                raise PrometheusError(f"prometheus exited while waiting for {what}:\n{self.log}")
            if time.monotonic() > deadline:
                raise PrometheusError(
                    f"no {what} within {timeout:.0f}s; last: {last!r}\n{self.log[-3000:]}"
                )
            _pause(self.process, 0.2)
            last = check()
        return last

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def write_config(
    workdir: Path,
    targets: Sequence[str],
    rule_files: Sequence[Path] = (),
    *,
    job: str = "syncd",
    interval: str = "1s",
) -> Path:
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(Path(p).resolve()) for p in rule_files],
        "scrape_configs": [
            {
                "job_name": job,
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "static_configs": [{"targets": list(targets)}],
            }
        ],
    }
    path = workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def shorten_for(src: Path, dst: Path, duration: str = "0s") -> Path:
    """Copy a rule file with every alerting rule's `for:` set to `duration`."""
    doc = yaml.safe_load(src.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                rule["for"] = duration
    dst.write_text(yaml.safe_dump(doc, sort_keys=False))
    return dst


@contextmanager
def start_prometheus(
    workdir: Path,
    targets: Sequence[str],
    rule_files: Sequence[Path] = (),
    *,
    job: str = "syncd",
    interval: str = "1s",
    timeout: float = 60.0,
) -> Iterator[PrometheusServer]:
    """Run Prometheus on a free loopback port until the block ends."""
    binary = prometheus_path()
    if binary is None:
        raise PrometheusError(NOT_INSTALLED)
    workdir.mkdir(parents=True, exist_ok=True)
    config = write_config(workdir, targets, rule_files, job=job, interval=interval)
    server = _launch(binary, workdir, config, timeout)
    try:
        yield server
    finally:
        server.stop()


def _launch(binary: str, workdir: Path, config: Path, timeout: float) -> PrometheusServer:
    for _attempt in range(3):  # the free port may be taken between probing and binding
        port = free_port()
        with (workdir / "prometheus.log").open("ab") as log:
            process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=info",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=workdir,
            )
        server = PrometheusServer(f"http://127.0.0.1:{port}", process, workdir)
        if _ready(server, timeout):
            return server
        server.stop()
        if "address already in use" not in server.log:
            break
    raise PrometheusError(f"prometheus did not become ready:\n{server.log[-3000:]}")


def _ready(server: PrometheusServer, timeout: float) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.process.poll() is None:
        try:
            with opener.open(f"{server.url}/-/ready", timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        _pause(server.process, 0.1)
    return False


def _pause(process: subprocess.Popen[bytes], seconds: float) -> None:
    """Wait between polls; returns at once if the process exits meanwhile."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(seconds)
