"""The daemon step: `syncd run` as a real process, its /healthz and /metrics scraped."""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from syncd.demo.session import DemoFailed

START_TIMEOUT = 30.0
STOP_TIMEOUT = 35.0  # the daemon promises an exit within 30 s of SIGTERM
SHOWN_METRICS = (
    "syncd_build_info",
    "syncd_config_last_reload_successful",
    "syncd_endpoint_up",
    "syncd_backups",
    "syncd_backup_last_success_timestamp_seconds",
    "syncd_sync_last_success_timestamp_seconds",
)
_POLL = 0.1


def daemon_available() -> bool:
    """`syncd run` exists: syncd.daemon is importable and has its `run` action."""
    try:
        module = importlib.import_module("syncd.daemon")
    except ImportError:
        return False
    return callable(getattr(module, "run", None))


def start_daemon(config_path: Path, log_path: Path) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "syncd.cli", "-c", str(config_path), "run"]
    with log_path.open("ab") as log:
        return subprocess.Popen(  # noqa: S603 - our own argument list, no shell
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ),
            start_new_session=True,  # Ctrl-C reaches the demo only; it stops the daemon
        )


def _get(url: str) -> tuple[int, str]:
    # Our own loopback URL, http only.
    with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
        return int(response.status), response.read().decode("utf-8", "replace")


def wait_healthy(proc: subprocess.Popen[bytes], url: str) -> str:
    """Poll /healthz until it answers 200; fail with the daemon's log if it dies or is slow."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise DemoFailed(f"the daemon exited at start with code {proc.returncode}")
        with contextlib.suppress(OSError, urllib.error.URLError):
            status, body = _get(url)
            if status == 200:
                return body
        if time.monotonic() > deadline:
            raise DemoFailed(f"{url} did not answer within {START_TIMEOUT:.0f} s")
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(_POLL)


def metric_lines(url: str) -> list[str]:
    """The sample lines of the metrics we show, once the first endpoint ping has landed.

    The daemon pings the endpoints right after it starts; until then `syncd_endpoint_up`
    reads 0, which would say the endpoints are down. Polled, bounded.
    """
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        _, body = _get(url)
        lines = [line for line in body.splitlines() if line.startswith(SHOWN_METRICS)]
        up = [line for line in lines if line.startswith("syncd_endpoint_up")]
        if (up and all(line.endswith(" 1.0") for line in up)) or time.monotonic() > deadline:
            return lines
        time.sleep(_POLL)


def stop_daemon(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM, as systemd does; SIGKILL only if it overstays its 30 s promise."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


def tail(log_path: Path, lines: int = 15) -> str:
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(f"    {line}" for line in text.splitlines()[-lines:])
