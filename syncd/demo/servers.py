"""Two embedded MongoDB endpoints for the demo: SecantusDB, run as separate processes.

SecantusDB is GPL-licensed, so syncd never imports it: the demo only runs its
`secantusd-py` program and talks to it over the MongoDB wire protocol, like any server.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from syncd.errors import SyncdError

SERVER_PROGRAM = "secantusd-py"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
_POLL = 0.05


class ServerMissing(SyncdError):
    pass


def find_server_program() -> Path:
    """`secantusd-py` next to this Python (a venv) or on PATH."""
    beside = Path(sys.executable).with_name(SERVER_PROGRAM)
    if beside.is_file():
        return beside
    found = shutil.which(SERVER_PROGRAM)
    if found is None:
        raise ServerMissing(
            f"the demo runs two embedded MongoDB-compatible servers ({SERVER_PROGRAM}), "
            "which is not installed. Install it with `pip install secantusdb` "
            "(or run `make demo`, which installs it in .venv), then try again."
        )
    return Path(found)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class DemoServer:
    """One `secantusd-py` process with its storage and log under `directory`."""

    name: str
    directory: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def launch(self, program: Path) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config = self.directory / "secantusd.toml"
        config.write_text("# empty: keeps secantusd-py from reading a secantusd.toml elsewhere\n")
        args = [str(program), "--config", str(config), "--host", "127.0.0.1"]
        args += ["--port", str(self.port), "--storage-path", str(self.directory)]
        args += ["--log-level", "WARNING", "--cache-size", "128M"]
        self._log = (self.directory / "server.log").open("ab")
        # Its own session: a Ctrl-C reaches only the demo, which stops the servers in order.
        self.proc = subprocess.Popen(  # noqa: S603 - our own argument list, no shell
            args,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not _accepts(self.port):
            if self.proc is None or self.proc.poll() is not None:
                raise SyncdError(f"{self.name} server exited at start; see {self._log_path}")
            if time.monotonic() > deadline:
                raise SyncdError(f"{self.name} server did not open port {self.port} in time")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(_POLL)
        try:
            client: MongoClient[dict[str, Any]] = MongoClient(
                self.uri, serverSelectionTimeoutMS=int(timeout * 1000)
            )
            with client:
                client.admin.command("ping")
        except PyMongoError as exc:
            raise SyncdError(f"{self.name} server does not answer: {exc}") from None

    @property
    def _log_path(self) -> Path:
        return self.directory / "server.log"

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, then SIGKILL when it is still there after `timeout`."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            deadline = time.monotonic() + timeout
            while self.proc.poll() is None and time.monotonic() < deadline:
                _accepts(self.port)  # wakes its accept loop so it sees the stop flag
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(_POLL)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


def start_servers(root: Path, names: tuple[str, ...]) -> list[DemoServer]:
    """Launch all, then wait for all (they start in parallel). Stops them on failure."""
    program = find_server_program()
    servers = [DemoServer(name, root / name) for name in names]
    try:
        for server in servers:
            server.launch(program)
        for server in servers:
            server.wait_ready()
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers
