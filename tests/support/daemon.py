"""A real `syncd run` process for the tests, its log, and a systemd notify socket.

`NotifySocket` is what systemd would be: an AF_UNIX datagram socket whose address goes to
the daemon as $NOTIFY_SOCKET. `SyncdDaemon` starts `syncd -c CONFIG --log-format json run`
with stderr to a file and reads that file back as events. Every wait polls with a
deadline; none sleeps for a fixed time.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

SYNCD = Path(sys.executable).with_name("syncd")
POLL = 0.02
DEADLINE = 30.0

Event = dict[str, Any]


def syncd_command(*args: str) -> list[str]:
    """The installed console script, or `python -m syncd.cli` when there is none."""
    if SYNCD.exists():
        return [str(SYNCD), *args]
    return [sys.executable, "-m", "syncd.cli", *args]


class NotifySocket:
    """Collects sd_notify messages, as systemd would, from a reader thread (so the queue of
    the datagram socket, 10 messages by default, never fills up). Each message is a dict of
    its KEY=VALUE lines."""

    def __init__(self, path: Path | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if path is None:  # abstract: nothing on disk, no path length limit to worry about
            name = f"syncd-test-{os.getpid()}-{secrets.token_hex(4)}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            self.sock.bind(str(path))
            self.address = str(path)
        self.messages: list[dict[str, str]] = []
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read, name="notify-reader", daemon=True)
        self.sock.settimeout(0.2)
        self._reader.start()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            lines = data.decode().splitlines()
            self.messages.append(dict(line.split("=", 1) for line in lines if "=" in line))

    def wait_for(
        self,
        predicate: Callable[[dict[str, str]], bool],
        *,
        start: int = 0,
        timeout: float = DEADLINE,
    ) -> int:
        """Index of the first message from `start` on that satisfies `predicate`."""
        deadline = time.monotonic() + timeout
        while True:
            for index in range(start, len(self.messages)):
                if predicate(self.messages[index]):
                    return index
            if time.monotonic() > deadline:
                raise AssertionError(f"no such notify message; got {self.messages}")
            self._closed.wait(POLL)

    def close(self) -> None:
        self._closed.set()
        self._reader.join(timeout=5)
        self.sock.close()


class SyncdDaemon:
    def __init__(
        self,
        config: Path,
        log_path: Path,
        *,
        notify: NotifySocket | None = None,
        env: dict[str, str] | None = None,
        log_format: str = "json",
        command: list[str] | None = None,
    ) -> None:
        """`command` replaces the `syncd` command (the options and `run` are appended)."""
        self.config, self.log_path, self.notify = config, log_path, notify
        self.command = command or syncd_command()
        self.log_format = log_format
        inherited = ("NOTIFY_SOCKET", "JOURNAL_STREAM", "WATCHDOG_USEC", "WATCHDOG_PID")
        self.env = {k: v for k, v in os.environ.items() if k not in inherited}
        if notify is not None:
            self.env["NOTIFY_SOCKET"] = notify.address
        self.env.update(env or {})
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SyncdDaemon:
        args = [*self.command, "-c", str(self.config), "--log-format", self.log_format, "run"]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.env
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    # -- the log ------------------------------------------------------------------------
    def lines(self) -> list[str]:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        complete = text if text.endswith("\n") else text.rpartition("\n")[0]
        return complete.splitlines()

    def events(self) -> list[Event]:
        """JSON log lines as dicts; anything else (a traceback) as {"raw": line}."""
        out = []
        for line in self.lines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"raw": line})
        return out

    def mark(self) -> int:
        return len(self.lines())

    def wait_log(
        self, predicate: Callable[[Event], bool], *, start: int = 0, timeout: float = DEADLINE
    ) -> Event:
        """The first event from line `start` on satisfying `predicate`; fails if syncd exits."""
        deadline = time.monotonic() + timeout
        while True:
            events = self.events()[start:]
            for event in events:
                if predicate(event):
                    return event
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"syncd exited ({self.proc.returncode}):\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no such log line after {timeout:.0f}s:\n{self.tail()}")
            self._pause()

    def wait_msg(
        self, prefix: str, *, start: int = 0, timeout: float = DEADLINE, **fields: Any
    ) -> Event:
        """The first event whose msg starts with `prefix` and has `fields`."""

        def match(event: Event) -> bool:
            return str(event.get("msg", "")).startswith(prefix) and all(
                event.get(k) == v for k, v in fields.items()
            )

        return self.wait_log(match, start=start, timeout=timeout)

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.lines()[-n:])

    # -- metrics --------------------------------------------------------------------------
    def metrics_url(self) -> str:
        event = self.wait_msg("metrics listening on")
        return f"http://127.0.0.1:{event['port']}"

    def metric(self, name: str, **labels: str) -> float | None:
        with urllib.request.urlopen(f"{self.metrics_url()}/metrics", timeout=10) as response:  # noqa: S310
            text = response.read().decode()
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        pattern = re.compile(rf"^{re.escape(name)}(\{{(?P<labels>[^}}]*)\}})? (?P<value>\S+)$")
        for line in text.splitlines():
            match = pattern.match(line)
            if match is None:
                continue
            found = ",".join(sorted((match["labels"] or "").split(","))) if match["labels"] else ""
            if found == wanted:
                return float(match["value"])
        return None

    # -- life cycle -------------------------------------------------------------------------
    def send(self, signum: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait_exit(self, timeout: float = DEADLINE) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"syncd still running after {timeout:.0f}s:\n{self.tail()}"
            ) from None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers (clean-up only; tests assert the exit themselves)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def _pause(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(POLL)
        else:
            time.sleep(POLL)


def wait_until(
    condition: Callable[[], Any], *, timeout: float = DEADLINE, what: str = "condition"
) -> Any:
    """Poll `condition` until it returns something truthy; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(POLL)
