"""Connections to endpoints: resolve the URI, pick the database, say it safely in messages."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl

from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import ConfigurationError, InvalidURI, PyMongoError

from syncd.config.model import Endpoint
from syncd.config.secrets import redact, resolve, uri_database, uri_hosts
from syncd.errors import EndpointUnreachable, Refused, SecretError, SyncdError
from syncd.mongo import changestream
from syncd.mongo.source import SharedReads
from syncd.primary_reads import on_primary
from syncd.unreachable import diagnose, is_dns_failure

log = logging.getLogger("syncd.endpoints")

SERVER_SELECTION_MS = 10_000
# Half the server selection: a connection that hangs (a TLS handshake with a server that does
# not speak TLS, a host that drops packets) has failed, with its cause, before the command
# gives up on the endpoint, so the message can say why rather than only "timed out".
CONNECT_TIMEOUT_MS = SERVER_SELECTION_MS // 2
# No socketTimeoutMS: one limit for every operation cut index builds and long counts;
# each kind of operation has its own (mongo/timeouts.py).
DEFAULTS: dict[str, Any] = {
    "serverSelectionTimeoutMS": SERVER_SELECTION_MS,
    "connectTimeoutMS": CONNECT_TIMEOUT_MS,
    "appname": "syncd",
    "retryWrites": True,
    "retryReads": True,
    # A sync remembers what it left on the target; that memory is only true if the writes
    # survive a crash of the server, so they are acknowledged once journaled (j: true).
    "journal": True,
    # A run sends independent requests at once (listings, reads by _id, copies): over a
    # slow link each opens its connection at once, not two at a time (pymongo's default).
    "maxConnecting": 16,
}


@dataclass
class Connected:
    """An open endpoint. `label` (endpoint name + redacted URI) is safe to print."""

    endpoint: Endpoint
    client: MongoClient[Any]
    db: Database[Any]
    hosts: tuple[str, ...]
    safe_uri: str = ""  # the URI with its credentials redacted
    # reads shared by the sides of one command that writes nothing (status: every flow)
    shared: SharedReads | None = None

    @property
    def name(self) -> str:
        return self.endpoint.name

    @property
    def label(self) -> str:
        return f"'{self.name}' ({self.safe_uri})" if self.safe_uri else f"'{self.name}'"

    @property
    def database(self) -> str:
        return self.db.name

    def identity(self) -> tuple[tuple[str, ...], str]:
        """Resolved host set + database: two endpoints with the same identity are one database."""
        return self.hosts, self.db.name

    def server_version(self) -> str:
        info = self.client.server_info()
        return str(info.get("version", "unknown"))

    def close(self) -> None:
        changestream.wait_closed()  # streams closed in the background (their killCursors)
        self.client.close()


def resolve_uri(endpoint: Endpoint) -> str:
    return resolve(endpoint.uri, what=f"endpoint '{endpoint.name}' URI")


def open_endpoint(endpoint: Endpoint, *, check: bool = True) -> Connected:
    """Connect to `endpoint`; with `check`, fail fast (clearly) when it does not answer."""
    uri = resolve_uri(endpoint)
    database = endpoint.database or uri_database(uri)
    if not database:
        raise SecretError(
            f"endpoint '{endpoint.name}': no database; name it in the URI path "
            "(mongodb://host/DBNAME) or set `database:` in the config"
        )
    try:
        client: MongoClient[Any] = MongoClient(
            on_primary(uri, endpoint.name), **client_options(uri)
        )
    except (ConfigurationError, InvalidURI, ValueError) as exc:
        if is_dns_failure(exc):  # a mongodb+srv:// name: pymongo looks it up right here
            raise EndpointUnreachable(diagnose(endpoint, redact(uri), exc).line) from None
        raise SecretError(
            f"endpoint '{endpoint.name}': invalid connection string ({redact(str(exc))})"
        ) from None
    connected = Connected(endpoint, client, client[database], _resolved_hosts(uri), redact(uri))
    if check:
        try:
            _ping(connected)
        except EndpointUnreachable:
            client.close()
            raise
    return connected


# Connections opened with the check, at once: a run's independent reads (the specs of every
# collection, plan.SPEC_READERS at a time, the stream reads) then find them in the pool
# instead of each opening its own first (a round trip of the handshake, more with TLS).
WARM_CONNECTIONS = 14


def _ping(connected: Connected) -> None:
    """One `ping` per warmed connection, all at once: the check costs the round trips of one."""
    admin = connected.client.admin
    try:
        with ThreadPoolExecutor(WARM_CONNECTIONS, thread_name_prefix="syncd-warm") as pool:
            for _ in pool.map(lambda _: admin.command("ping"), range(WARM_CONNECTIONS)):
                pass
    except PyMongoError as exc:
        why = diagnose(connected.endpoint, connected.safe_uri, exc, connected.client)
        raise EndpointUnreachable(why.line) from None


def open_all(endpoints: Sequence[Endpoint]) -> list[Connected | SyncdError]:
    """Open every endpoint at once, one thread each, and say per endpoint what came of it.

    A command then waits for its slowest endpoint, at most one server selection timeout
    (10 s), not for the sum of them: two endpoints that are down cost 10 s, not 20."""
    if len(endpoints) < 2:
        return [_attempt(endpoint) for endpoint in endpoints]
    with ThreadPoolExecutor(len(endpoints), thread_name_prefix="syncd-reach") as pool:
        return list(pool.map(_attempt, endpoints))


def _attempt(endpoint: Endpoint) -> Connected | SyncdError:
    try:
        return open_endpoint(endpoint)
    except SyncdError as exc:
        return exc


def client_options(uri: str, defaults: Mapping[str, Any] = DEFAULTS) -> dict[str, Any]:
    """`defaults` for the options the URI does not set: pymongo lets keyword arguments
    override the URI, but an operator's `socketTimeoutMS=` in the URI must win."""
    query = uri.partition("?")[2]
    given = {key.lower() for key, _ in parse_qsl(query, keep_blank_values=True)}
    return {key: value for key, value in defaults.items() if key.lower() not in given}


class KeptOpen(Protocol):
    """Endpoints held open by the caller (`Connections`, `Reached`): `opened` leaves them open."""

    def get(self, endpoint: Endpoint) -> Connected: ...


@contextmanager
def opened(*endpoints: Endpoint, kept: KeptOpen | None = None) -> Iterator[list[Connected]]:
    """Open several endpoints at once (`open_all`); always close them (unless `kept` holds
    them open). When some cannot be opened, one error names each of them."""
    if kept is not None:
        yield [kept.get(endpoint) for endpoint in endpoints]
        return
    results = open_all(endpoints)
    connections = [result for result in results if isinstance(result, Connected)]
    try:
        failures = [result for result in results if not isinstance(result, Connected)]
        if len(failures) == 1:
            raise failures[0]
        if failures:
            raise EndpointUnreachable(*(str(failure) for failure in failures))
        yield connections
    finally:
        for connection in connections:
            connection.close()


class Reached:
    """The endpoints of one command: each reached once, all at once (`open_all`).

    One that did not answer stays unreachable for the rest of the command: asking for it again
    raises its error at once, instead of waiting another server selection timeout; one that
    answered is not pinged again. `status` reports each endpoint once this way, and every flow
    that needs one that is down says so by name."""

    def __init__(self, endpoints: Iterable[Endpoint]) -> None:
        wanted = list(endpoints)
        self.connected: dict[str, Connected] = {}
        self.failures: dict[str, SyncdError] = {}
        for endpoint, result in zip(wanted, open_all(wanted), strict=True):
            if isinstance(result, Connected):
                result.shared = SharedReads()  # `status` only: it writes nothing
                self.connected[endpoint.name] = result
            else:
                self.failures[endpoint.name] = result

    def get(self, endpoint: Endpoint) -> Connected:
        failure = self.failures.get(endpoint.name)
        if failure is not None:
            raise failure
        return self.connected[endpoint.name]

    def close(self) -> None:
        for connected in self.connected.values():
            connected.close()
        self.connected.clear()


class Connections:
    """Endpoints kept open across runs: a continuous job's batches would otherwise pay for
    new connections (TLS, authentication, server discovery) every few hundred milliseconds.

    Each use pings the server, so an unreachable endpoint fails as clearly as a fresh one;
    a changed URI (a reloaded config) gets a new client and the old one is closed."""

    def __init__(self) -> None:
        self._open: dict[str, tuple[tuple[str, str | None], Connected]] = {}
        self._lock = threading.Lock()

    def get(self, endpoint: Endpoint) -> Connected:
        key = (resolve_uri(endpoint), endpoint.database)
        with self._lock:
            known = self._open.get(endpoint.name)
            if known is not None and known[0] == key:
                _ping(known[1])
                return known[1]
            if known is not None:
                known[1].close()
            connected = open_endpoint(endpoint)
            self._open[endpoint.name] = (key, connected)
            return connected

    def close(self) -> None:
        with self._lock:
            for _, connected in self._open.values():
                connected.close()
            self._open.clear()


def _resolved_hosts(uri: str) -> tuple[str, ...]:
    """host:port with names resolved, so localhost and 127.0.0.1 are seen as one server."""
    if uri.startswith("mongodb+srv://"):
        return tuple(uri_hosts(uri))
    resolved = set()
    for entry in uri_hosts(uri):
        host, _, port = entry.rpartition(":")
        try:
            infos = socket.getaddrinfo(host.strip("[]"), int(port), proto=socket.IPPROTO_TCP)
            address = sorted(info[4][0] for info in infos)[0]
        except (OSError, ValueError):
            address = host
        if address in ("::1", "0:0:0:0:0:0:0:1"):
            address = "127.0.0.1"
        resolved.add(f"{address}:{port}")
    return tuple(sorted(resolved))


def refuse_same_database(source: Connected, target: Connected) -> None:
    if source.identity() == target.identity():
        raise Refused(
            f"source '{source.name}' and target '{target.name}' are the same database "
            f"({target.database} on {', '.join(target.hosts)}); fix the endpoints in the config"
        )
