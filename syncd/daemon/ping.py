"""A light job: ping every endpoint, keep `syncd_endpoint_up` current, log changes only.

One client per endpoint, kept between pings, so a `uri_command` (say, `heroku config:get`)
runs once per config rather than every 30 seconds.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from syncd.config.model import Config, Endpoint
from syncd.endpoints import client_options, resolve_uri
from syncd.engine.retry import first_line
from syncd.errors import SyncdError
from syncd.metrics import SyncdMetrics, UnsafeLabelValue

log = logging.getLogger("syncd.daemon")

PING_SECONDS = 30
PING_TIMEOUT_MS = 5000
PING_OPTIONS: dict[str, Any] = {
    "serverSelectionTimeoutMS": PING_TIMEOUT_MS,
    "connectTimeoutMS": PING_TIMEOUT_MS,
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
        self._clients: dict[str, tuple[Endpoint, MongoClient[Any]]] = {}
        self._up: dict[str, bool] = {}

    def __call__(self, config: Config) -> None:
        for endpoint in config.endpoints.values():
            up, why = self._ping(endpoint)
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
        try:
            client = self._client(endpoint)
            client.admin.command("ping")
        except SyncdError as exc:
            return False, str(exc)
        except (PyMongoError, ValueError) as exc:
            return False, first_line(exc) or type(exc).__name__
        return True, ""

    def _client(self, endpoint: Endpoint) -> MongoClient[Any]:
        with self._lock:
            known = self._clients.get(endpoint.name)
            if known is not None and known[0] == endpoint:
                return known[1]
        uri = resolve_uri(endpoint)
        client: MongoClient[Any] = MongoClient(uri, **ping_options(uri))
        with self._lock:
            old = self._clients.pop(endpoint.name, None)
            self._clients[endpoint.name] = (endpoint, client)
        if old is not None:
            old[1].close()
        return client

    def forget(self, config: Config) -> None:
        """After a reload: drop the clients of endpoints that went away or changed."""
        with self._lock:
            stale = [
                name
                for name, (endpoint, _) in self._clients.items()
                if config.endpoints.get(name) != endpoint
            ]
            clients = [self._clients.pop(name)[1] for name in stale]
        for client in clients:
            client.close()

    def close(self) -> None:
        with self._lock:
            clients = [client for _, client in self._clients.values()]
            self._clients.clear()
        for client in clients:
            client.close()
