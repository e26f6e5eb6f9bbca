"""Real servers for the whole suite: two SecantusDB processes per session, a clean
database pair per test (dropped afterwards), or real mongod servers from
SYNCD_TEST_MONGODB_URI / SYNCD_TEST_MONGODB_URI_2.

Fixtures (see tests/support for the helpers):
  server_local, server_production   session servers (MongoServer or ExternalServer)
  local_client, production_client   session pymongo clients to them
  dbnames                            DbNames(local="local_3", production="prod_3"), dropped after
  local_db, production_db            pymongo Database objects for those names
  local_uri, production_uri          URIs naming those databases
  mongo_server_factory               dedicated SecantusDB servers a test may kill or restart
  auth_server, tls_server            session SecantusDB servers with --auth / TLS
  write_config                       write_config(yaml_text, name="syncd.yaml") -> Path
  short_lease                        SYNCD_LEASE_SECONDS short: a dead run's lease expires soon
  notify, start_daemon               a systemd notify socket; real `syncd run` processes
"""

from __future__ import annotations

import itertools
import secrets
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from tests.engine_kit import LEASE_SECONDS, RESET_PASSWORD, Pair, make_pair
from tests.support.daemon import NotifySocket, SyncdDaemon
from tests.support.external import ENV_URI, ENV_URI_2, ExternalServer, external_uris
from tests.support.servers import (
    AuthUsers,
    MongoServer,
    Server,
    make_test_ca,
    start_auth_server,
    start_servers,
    stop_servers,
)

Client = MongoClient[dict[str, Any]]
StartDaemon = Callable[..., SyncdDaemon]


@dataclass(frozen=True)
class ServerPair:
    local: Server
    production: Server
    external: bool  # real mongod(s) from the environment, not SecantusDB


@dataclass(frozen=True)
class DbNames:
    local: str
    production: str


@dataclass(frozen=True)
class AuthServer:
    server: MongoServer
    users: AuthUsers


@pytest.fixture(scope="session")
def mongo_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerPair]:
    uri_1, uri_2 = external_uris()
    if uri_2 and not uri_1:
        raise pytest.UsageError(f"{ENV_URI_2} is set but {ENV_URI} is not")
    if uri_1:
        local = ExternalServer(uri_1, env_name=ENV_URI).start()
        production = ExternalServer(uri_2, env_name=ENV_URI_2).start() if uri_2 else local
        yield ServerPair(local, production, external=True)
        return
    root = tmp_path_factory.mktemp("mongo")
    local_server = MongoServer(root / "local")
    production_server = MongoServer(root / "production")
    start_servers(local_server, production_server)
    try:
        yield ServerPair(local_server, production_server, external=False)
    finally:
        stop_servers(local_server, production_server)


@pytest.fixture(scope="session")
def server_local(mongo_servers: ServerPair) -> Server:
    return mongo_servers.local


@pytest.fixture(scope="session")
def server_production(mongo_servers: ServerPair) -> Server:
    return mongo_servers.production


@pytest.fixture(scope="session")
def local_client(server_local: Server) -> Iterator[Client]:
    with server_local.client() as client:
        yield client


@pytest.fixture(scope="session")
def production_client(server_production: Server) -> Iterator[Client]:
    with server_production.client() as client:
        yield client


@pytest.fixture(scope="session")
def _dbname_source(mongo_servers: ServerPair) -> Iterator[Callable[[], DbNames]]:
    # On a shared real mongod a random prefix keeps concurrent runs (and leftovers) apart.
    prefix = f"syncd_{secrets.token_hex(3)}_" if mongo_servers.external else ""
    counter = itertools.count(1)

    def next_names() -> DbNames:
        n = next(counter)
        return DbNames(local=f"{prefix}local_{n}", production=f"{prefix}prod_{n}")

    yield next_names


@pytest.fixture
def dbnames(
    _dbname_source: Callable[[], DbNames], local_client: Client, production_client: Client
) -> Iterator[DbNames]:
    """A fresh, empty database per role for this test, dropped when it ends."""
    names = _dbname_source()
    local_client.drop_database(names.local)
    production_client.drop_database(names.production)
    yield names
    local_client.drop_database(names.local)
    production_client.drop_database(names.production)


@pytest.fixture
def local_db(local_client: Client, dbnames: DbNames) -> Database[dict[str, Any]]:
    return local_client[dbnames.local]


@pytest.fixture
def production_db(production_client: Client, dbnames: DbNames) -> Database[dict[str, Any]]:
    return production_client[dbnames.production]


@pytest.fixture
def local_uri(server_local: Server, dbnames: DbNames) -> str:
    return server_local.uri_for(dbnames.local)


@pytest.fixture
def production_uri(server_production: Server, dbnames: DbNames) -> str:
    return server_production.uri_for(dbnames.production)


@pytest.fixture
def mongo_server_factory(tmp_path: Path) -> Iterator[Callable[..., MongoServer]]:
    """make(**MongoServer options) -> a started SecantusDB server of this test's own.

    For tests that kill, restart or otherwise hurt a server; stopped at the end.
    """
    started: list[MongoServer] = []

    def make(**options: Any) -> MongoServer:
        server = MongoServer(tmp_path / f"server_{len(started)}", **options)
        started.append(server)
        return server.start()

    yield make
    stop_servers(*started)


@pytest.fixture(scope="session")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    """SecantusDB with --auth: users.admin is root, users.app may readWrite users.app_database."""
    server, users = start_auth_server(tmp_path_factory.mktemp("auth-server"))
    try:
        yield AuthServer(server, users)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MongoServer]:
    """SecantusDB with TLS from a throwaway CA; `tls_server.tls_ca_file` is the CA to trust."""
    root = tmp_path_factory.mktemp("tls-server")
    ca = make_test_ca(root / "ca")
    server = MongoServer(
        root / "data",
        tls_cert_file=ca.cert_file,
        tls_key_file=ca.key_file,
        tls_ca_file=ca.ca_file,
    )
    with server:
        yield server


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """write_config(text, name="syncd.yaml") -> path; the text is dedented."""

    def write(text: str, name: str = "syncd.yaml") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return write


@pytest.fixture
def pair(
    request: pytest.FixtureRequest,
    local_db: Database[Any],
    production_db: Database[Any],
    local_uri: str,
    production_uri: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Pair:
    """local + production with a config written under tmp_path (tests/engine_kit.py).

    A test module sets `PAIR_RESET_PASSWORDS = True` to get the reset_passwords hook.
    """
    monkeypatch.delenv("FORCE", raising=False)
    hook = bool(getattr(request.module, "PAIR_RESET_PASSWORDS", False))
    if hook:
        monkeypatch.setenv("SYNCD_RESET_PASSWORD", RESET_PASSWORD)
    return make_pair(local_db, production_db, local_uri, production_uri, tmp_path, hook=hook)


@pytest.fixture
def short_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    """SYNCD_LEASE_SECONDS=LEASE_SECONDS for syncd in this process and the ones it starts:
    the run after one that was killed (or could not give its lease back) waits seconds, not
    a minute, for the lease to expire."""
    monkeypatch.setenv("SYNCD_LEASE_SECONDS", LEASE_SECONDS)


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()


@pytest.fixture
def start_daemon(tmp_path: Path, notify: NotifySocket) -> Iterator[StartDaemon]:
    """start_daemon(config, **SyncdDaemon options) -> a running daemon, stopped at the end."""
    started: list[SyncdDaemon] = []

    def start(config: Path, **options: Any) -> SyncdDaemon:
        options.setdefault("notify", notify)
        log = tmp_path / f"syncd-{len(started)}.log"
        daemon = SyncdDaemon(config, log, **options)
        started.append(daemon.start())
        return daemon

    yield start
    for daemon in started:
        daemon.stop()
