"""A light job: ping every endpoint, keep `syncd_endpoint_up` current, log changes only.

One client per endpoint, kept between pings, so a `uri_command` (say, `heroku config:get`)
runs once per config rather than every 30 seconds. Every endpoint is pinged at once, and a
down one is logged in the words of `syncd status` (syncd.unreachable).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from syncd.config.model import Config, Endpoint
from syncd.config.secrets import redact
from syncd.endpoints import client_options, resolve_uri
from syncd.errors import SyncdError
from syncd.metrics import SyncdMetrics, UnsafeLabelValue
from syncd.mongo.retry import first_line
from syncd.unreachable import diagnose

log = logging.getLogger("syncd.daemon")

PING_SECONDS = 30
PING_TIMEOUT_MS = 5000
PING_OPTIONS: dict[str, Any] = {
    "serverSelectionTimeoutMS": PING_TIMEOUT_MS,
    "connectTimeoutMS": PING_TIMEOUT_MS // 2,  # a hung connection fails with its cause first
    "socketTimeoutMS": PING_TIMEOUT_MS,
    "appname": "syncd-ping",
}


def ping_options(uri: str) -> dict[str, Any]:
    """The ping's short timeouts, unless the URI sets its own (as for every syncd client)."""
    return client_options(uri, PING_OPTIONS)


class Pinger:
    def __init__(self, metrics: SyncdMetrics) -> None:
        self.metrics = metrics
        self._lock = threading.Lock()
        self._clients: dict[str, tuple[Endpoint, MongoClient[Any], str]] = {}
        self._up: dict[str, bool] = {}

    def __call__(self, config: Config) -> None:
        endpoints = list(config.endpoints.values())
        with ThreadPoolExecutor(max(1, len(endpoints)), thread_name_prefix="syncd-ping") as pool:
            results = list(pool.map(self._ping, endpoints))
        for endpoint, (up, why) in zip(endpoints, results, strict=True):
            try:
                self.metrics.set_endpoint_up(endpoint.name, up)
            except UnsafeLabelValue:
                pass
            before = self._up.get(endpoint.name)
            self._up[endpoint.name] = up
            if up and before is False:
                log.info("endpoint is up again", extra={"endpoint": endpoint.name})
            elif not up and before is not False:
                log.warning(f"endpoint is down: {why}", extra={"endpoint": endpoint.name})

    def _ping(self, endpoint: Endpoint) -> tuple[bool, str]:
        """(up, why not): `why` is what `syncd status` says after "is unreachable: "."""
        try:
            client, safe_uri = self._client(endpoint)
        except SyncdError as exc:
            return False, str(exc)
        except (PyMongoError, ValueError) as exc:  # the driver refused the URI
            return False, first_line(exc) or type(exc).__name__
        try:
            client.admin.command("ping")
        except PyMongoError as exc:
            return False, diagnose(endpoint, safe_uri, exc, client).reason
        return True, ""

    def _client(self, endpoint: Endpoint) -> tuple[MongoClient[Any], str]:
        with self._lock:
            known = self._clients.get(endpoint.name)
            if known is not None and known[0] == endpoint:
                return known[1], known[2]
        uri = resolve_uri(endpoint)
        client: MongoClient[Any] = MongoClient(uri, **ping_options(uri))
        with self._lock:
            old = self._clients.pop(endpoint.name, None)
            self._clients[endpoint.name] = (endpoint, client, redact(uri))
        if old is not None:
            old[1].close()
        return client, redact(uri)

    def forget(self, config: Config) -> None:
        """After a reload: drop the clients of endpoints that went away or changed."""
        with self._lock:
            stale = [
                name
                for name, (endpoint, _, _) in self._clients.items()
                if config.endpoints.get(name) != endpoint
            ]
            clients = [self._clients.pop(name)[1] for name in stale]
        for client in clients:
            client.close()

    def close(self) -> None:
        with self._lock:
            clients = [client for _, client, _ in self._clients.values()]
            self._clients.clear()
        for client in clients:
            client.close()
