"""The metrics listener: `GET /metrics` (Prometheus) and `GET /healthz` (container probes).

The standard library's ThreadingHTTPServer rather than prometheus_client's
`start_http_server`: the latter serves the registry on every path and cannot add a route,
and we need `/healthz` on the same port (the Dockerfile's HEALTHCHECK probes it).
"""

from __future__ import annotations

import json
import logging
import socket
import socketserver
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from syncd.metrics import SyncdMetrics

# SyncdMetrics.render() writes the classic text format, which every Prometheus version reads.
METRICS_CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobHealth:
    """A scheduled job's last run; `last_result` is None until it has run."""

    last_result: str | None = None  # success | failure | refused | skipped
    last_run: float | None = None  # unix time the run finished


@dataclass(frozen=True)
class HealthState:
    """What the daemon reports. Healthy = config loaded and scheduler running.

    A failed job does not make syncd unhealthy: restarting the container would not bring a
    production database back; the alert rules report failed runs instead.
    """

    config_loaded: bool
    scheduler_running: bool
    jobs: Mapping[str, JobHealth] = field(default_factory=dict)
    continuous: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # job -> state

    @property
    def healthy(self) -> bool:
        return self.config_loaded and self.scheduler_running

    def to_json(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "config_loaded": self.config_loaded,
            "scheduler_running": self.scheduler_running,
            "jobs": {
                name: {"last_result": job.last_result, "last_run": _iso(job.last_run)}
                for name, job in sorted(self.jobs.items())
            },
            "continuous": {name: dict(state) for name, state in sorted(self.continuous.items())},
        }


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


class ListenAddressError(ValueError):
    pass


def parse_listen(listen: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `:port` (all interfaces) -> (host, port)."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ListenAddressError(f"listen address {listen!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ListenAddressError(f"listen address {listen!r}: write an IPv6 host as [ADDR]:PORT")
    return host, int(port_text)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        family: socket.AddressFamily,
        metrics: SyncdMetrics,
        health: Callable[[], HealthState],
    ) -> None:
        self.address_family = family
        self.metrics, self.health = metrics, health
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would resolve our own name (getfqdn): a DNS wait for nothing.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10  # a stalled client cannot hold a thread for ever
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, METRICS_CONTENT_TYPE, self.server.metrics.render())
        elif path == "/healthz":
            status, body = self._health()
            self._send(status, "application/json", body)
        elif path == "/":
            page = b'<a href="/metrics">/metrics</a> <a href="/healthz">/healthz</a>\n'
            self._send(200, "text/html; charset=utf-8", page)
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found\n")

    def _health(self) -> tuple[int, bytes]:
        try:
            state = self.server.health()
        except Exception as exc:  # the probe must answer; the cause goes to the log only
            log.error("health state unavailable", exc_info=exc)
            return 503, json.dumps({"healthy": False, "error": "health state unavailable"}).encode()
        return (200 if state.healthy else 503), json.dumps(state.to_json()).encode()

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


@dataclass
class Listener:
    """A running listener; `close()` stops it and frees the port."""

    server: _Server
    thread: threading.Thread

    @property
    def host(self) -> str:
        return str(self.server.server_address[0])

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_listener(
    listen: str, metrics: SyncdMetrics, health: Callable[[], HealthState]
) -> Listener:
    """Serve /metrics and /healthz on `listen` from a daemon thread. Port 0 picks a free port.

    Raises ListenAddressError for a malformed address and OSError when it cannot bind.
    """
    host, port = parse_listen(listen)
    family, _, _, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    server = _Server((str(address[0]), int(address[1])), family, metrics, health)
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.2},
        name="syncd-metrics",
        daemon=True,
    )
    thread.start()
    return Listener(server, thread)
