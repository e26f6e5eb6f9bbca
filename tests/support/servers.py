"""Real MongoDB wire-protocol servers for the tests.

`MongoServer` runs SecantusDB (`secantusd-py`) as a subprocess on a loopback port;
`ExternalServer` (in `external.py`) wraps a real `mongod` from `SYNCD_TEST_MONGODB_URI`.
Both answer the same questions (`uri`, `uri_for`, `client`, `host`, `port`), so a test
does not care which one it got, unless it kills or restarts the server.
"""

from __future__ import annotations

import contextlib
import ctypes
import platform
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import quote, quote_plus

from pymongo import MongoClient
from pymongo.errors import ConnectionFailure

from tests.support.tls import TestCA, make_test_ca

__all__ = [
    "FAIL_FAST",
    "AuthUsers",
    "Credentials",
    "MongoServer",
    "Server",
    "ServerStartError",
    "TestCA",
    "free_port",
    "make_test_ca",
    "start_auth_server",
    "start_servers",
    "stop_servers",
    "uri_with_database",
]

SERVER_BINARY = Path(sys.executable).with_name("secantusd-py")
LOG_NAME = "secantusd.log"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
CLIENT_TIMEOUT_MS = 3000
# URI options for an endpoint whose server a test kills: syncd finds it gone in a second,
# not after its own 10 s defaults (a loaded 2-core machine still answers a live one in time).
FAIL_FAST = "&serverSelectionTimeoutMS=1000&connectTimeoutMS=1000"
CACHE_SIZE = "256M"  # WiredTiger cache; secantusd's 1G default is a lot for N test servers
_POLL = 0.02  # seconds between readiness / exit checks
_TGKILL = {"x86_64": 234, "aarch64": 131}  # syscall numbers


class ServerStartError(RuntimeError):
    pass


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str
    auth_source: str = "admin"

    def __repr__(self) -> str:  # keeps the password out of assertion output
        return f"Credentials(username={self.username!r}, auth_source={self.auth_source!r})"


@dataclass(frozen=True)
class AuthUsers:
    admin: Credentials  # root, authSource=admin
    app: Credentials  # readWrite on app_database, authSource=app_database
    app_database: str


class Server(Protocol):
    """What `MongoServer` and `ExternalServer` have in common."""

    @property
    def uri(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    def uri_for(
        self, database: str | None = None, *, credentials: Credentials | None = None
    ) -> str: ...
    def client(
        self, *, credentials: Credentials | None = None, **kwargs: Any
    ) -> MongoClient[dict[str, Any]]: ...
    def kill(self) -> None: ...
    def restart(self) -> None: ...


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tcp_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _signal_main_thread(pid: int, signum: int) -> bool:
    """tgkill(pid, pid, signum): deliver a signal to the main thread of `pid` (Linux only).

    secantusd-py waits for SIGTERM in Event.wait() on its main thread. A process-wide
    SIGTERM that lands on another thread (we saw it when a client connects during
    shutdown) is then never handled and the server runs on; a signal aimed at the main
    thread interrupts the wait. Returns False where tgkill is not available.
    """
    number = _TGKILL.get(platform.machine())
    if sys.platform != "linux" or number is None:
        return False
    return int(ctypes.CDLL(None, use_errno=True).syscall(number, pid, pid, signum)) == 0


def uri_with_database(uri: str, database: str | None, **options: str) -> str:
    """`uri` with its path set to `database` (or none) and `options` added to the query."""
    scheme, _, rest = uri.partition("://")
    hosts, slash, tail = rest.partition("/")
    if slash:
        query = tail.partition("?")[2]
    else:
        hosts, _, query = hosts.partition("?")
    extra = "&".join(f"{k}={quote(str(v), safe='/')}" for k, v in options.items())
    query = "&".join(part for part in (query, extra) if part)
    return f"{scheme}://{hosts}/{database or ''}" + (f"?{query}" if query else "")


class MongoServer:
    """One SecantusDB process; storage, log and an empty config file live in `storage_dir`.

    With TLS, `tls_ca_file` is both the server's --tls-ca-file (client certificates are
    then optional but verified) and the CA that `uri`/`client()` trust.
    """

    def __init__(
        self,
        storage_dir: Path,
        *,
        port: int | None = None,
        auth: bool = False,
        tls_cert_file: Path | None = None,
        tls_key_file: Path | None = None,
        tls_ca_file: Path | None = None,
        extra_args: tuple[str, ...] = (),
        config_text: str = "",
    ) -> None:
        self.storage_dir = Path(storage_dir)
        self.config_text = config_text  # secantusd.toml (e.g. "[storage]\nttl_sweep_seconds = 0")
        self._port = port
        self._fixed_port = port is not None
        self.auth = auth
        self.tls_cert_file = tls_cert_file
        self.tls_key_file = tls_key_file
        self.tls_ca_file = tls_ca_file
        self.extra_args = extra_args
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._terminated = self._directed = False

    # -- addresses -----------------------------------------------------------------
    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("server has no port yet; call start()")
        return self._port

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    @property
    def log_path(self) -> Path:
        return self.storage_dir / LOG_NAME

    @property
    def uri(self) -> str:
        return self.uri_for()

    def uri_for(
        self, database: str | None = None, *, credentials: Credentials | None = None
    ) -> str:
        """A URI naming `database`; with TLS it carries tls=true and the CA file."""
        userinfo = ""
        options = {"directConnection": "true"}
        if credentials is not None:
            userinfo = f"{quote_plus(credentials.username)}:{quote_plus(credentials.password)}@"
            options["authSource"] = credentials.auth_source
        if self.tls:
            options["tls"] = "true"
            if self.tls_ca_file is not None:
                options["tlsCAFile"] = str(self.tls_ca_file)
        base = f"mongodb://{userinfo}{self.host}:{self.port}/"
        return uri_with_database(base, database, **options)

    def client(
        self, *, credentials: Credentials | None = None, **kwargs: Any
    ) -> MongoClient[dict[str, Any]]:
        kwargs.setdefault("serverSelectionTimeoutMS", CLIENT_TIMEOUT_MS)
        kwargs.setdefault("connectTimeoutMS", CLIENT_TIMEOUT_MS)
        return MongoClient(self.uri_for(credentials=credentials), **kwargs)

    # -- life cycle ----------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> MongoServer:
        """Start and wait until `ping` answers. A free port is picked unless one was given."""
        for attempt in range(3):
            self.launch()
            try:
                self.wait_ready(timeout)
                return self
            except ServerStartError:
                # Another process may have taken the free port between probe and bind.
                if self._fixed_port or attempt == 2 or self.is_running:
                    self.kill()
                    raise
                self._port = None
        raise AssertionError("unreachable")

    def launch(self) -> None:
        """Spawn the process without waiting (`start_servers` starts several at once)."""
        if self.is_running:
            raise RuntimeError(f"server already running (pid {self.pid})")
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        if self._port is None:
            self._port = free_port()
        config = self.storage_dir / "secantusd.toml"
        config.write_text(
            self.config_text
            or "# empty: keeps secantusd-py from auto-discovering a secantusd.toml\n"
        )
        args = [str(SERVER_BINARY), "--config", str(config), "--host", self.host]
        args += ["--port", str(self._port), "--storage-path", str(self.storage_dir)]
        args += ["--log-level", "WARNING", "--cache-size", CACHE_SIZE]
        if self.auth:
            args.append("--auth")
        if self.tls_cert_file is not None and self.tls_key_file is not None:
            args += ["--tls-cert-file", str(self.tls_cert_file)]
            args += ["--tls-key-file", str(self.tls_key_file)]
            if self.tls_ca_file is not None:
                args += ["--tls-ca-file", str(self.tls_ca_file)]
        args += list(self.extra_args)
        self._close_log()
        self._log = self.log_path.open("ab")
        self._terminated = self._directed = False
        self._proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.storage_dir,
        )

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Poll until the port accepts, then until `ping` answers; fail with the log tail."""
        proc = self._require_proc()
        deadline = time.monotonic() + timeout
        while not _tcp_accepts(self.host, self.port):
            if proc.poll() is not None:
                self._fail(f"process exited with code {proc.returncode}")
            if time.monotonic() > deadline:
                self._fail(f"port {self.port} not open after {timeout:.0f}s")
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(_POLL)
        probe: MongoClient[dict[str, Any]]
        with MongoClient(self.uri, serverSelectionTimeoutMS=500, connectTimeoutMS=500) as probe:
            while True:
                try:
                    probe.admin.command("ping")
                    return
                except ConnectionFailure as exc:
                    if proc.poll() is not None:
                        self._fail(f"process exited with code {proc.returncode}")
                    if time.monotonic() > deadline:
                        self._fail(f"no answer to ping after {timeout:.0f}s: {exc}")

    def terminate(self) -> None:
        """Send SIGTERM (once); `stop()` waits for the exit."""
        if self.is_running and not self._terminated:
            proc = self._require_proc()
            self._directed = _signal_main_thread(proc.pid, signal.SIGTERM)
            if not self._directed:
                proc.send_signal(signal.SIGTERM)
            self._terminated = True

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, then SIGKILL if the process is still there after `timeout`."""
        self.terminate()
        deadline = time.monotonic() + timeout
        while self.is_running and time.monotonic() < deadline:
            if self._directed:
                # secantusd's accept thread sees its stop flag only when accept() returns;
                # a connection wakes it (otherwise every stop waits out a 2 s join timeout).
                _tcp_accepts(self.host, self.port)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._require_proc().wait(_POLL)
        self.kill()

    def kill(self) -> None:
        """SIGKILL: no shutdown, like a crash or the OOM killer."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
        self._close_log()

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        """Stop (if running) and start again on the same port and storage."""
        self.stop()
        self._fixed_port = True
        self.start(timeout)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _require_proc(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError("server was never launched")
        return self._proc

    def _fail(self, why: str) -> None:
        raise ServerStartError(
            f"secantusd-py on port {self._port} did not start: {why}\n"
            f"--- {self.log_path} (tail) ---\n{self.log_tail()}"
        )

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> MongoServer:
        return self if self.is_running else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"MongoServer(port={self._port}, storage_dir={str(self.storage_dir)!r})"


def start_servers(*servers: MongoServer, timeout: float = START_TIMEOUT) -> None:
    """Start several servers in parallel: launch all, then wait for each."""
    for server in servers:
        server.launch()
    try:
        for server in servers:
            server.wait_ready(timeout)
    except ServerStartError:
        stop_servers(*servers)
        raise


def stop_servers(*servers: MongoServer) -> None:
    """Stop several servers in parallel: signal all, then wait for each."""
    for server in servers:
        server.terminate()
    for server in servers:
        server.stop()


def start_auth_server(
    storage_dir: Path, *, app_database: str = "valkyria_ecm_production", **kwargs: Any
) -> tuple[MongoServer, AuthUsers]:
    """A server with --auth and two SCRAM-SHA-256 users with random passwords.

    Users must exist before auth is on: start open, createUser, restart with --auth.
    """
    users = AuthUsers(
        admin=Credentials("syncd-admin", secrets.token_urlsafe(16), "admin"),
        app=Credentials("valkyria-app", secrets.token_urlsafe(16), app_database),
        app_database=app_database,
    )
    server = MongoServer(storage_dir, auth=False, **kwargs).start()
    try:
        with server.client() as client:
            client.admin.command(
                "createUser",
                users.admin.username,
                pwd=users.admin.password,
                roles=[{"role": "root", "db": "admin"}],
            )
            client[app_database].command(
                "createUser",
                users.app.username,
                pwd=users.app.password,
                roles=[{"role": "readWrite", "db": app_database}],
            )
        server.stop()
        server.auth = True
        server.restart()
    except BaseException:
        server.kill()
        raise
    return server, users
