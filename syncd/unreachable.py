"""Why an endpoint cannot be used, in one line a person reads.

pymongo says it in a paragraph: the selector, every server's last error with the timeouts it
was configured with, and the whole topology description. A person needs four things: which
endpoint, its URI (redacted), the cause in plain words and what to do about it. The driver's
paragraph goes to the log at DEBUG (`--log-level DEBUG`), nowhere else.

The cause is read from what the driver keeps per server (each server description's last
error), not from the exception's text: with several hosts each may have its own. Within an
error, the errno names the cause the same way on every platform (`socket.EAI_*` are negative
on Linux, positive on macOS); a failed TLS handshake has nothing better than pymongo's own
prefix ("SSL handshake failed: ", since pymongo 3) or the reason tag of Python's ssl errors
("[SSL: CERTIFICATE_VERIFY_FAILED]").
"""

from __future__ import annotations

import errno
import logging
import re
import socket
from dataclasses import dataclass
from typing import Any

from dns.exception import DNSException
from dns.exception import Timeout as DNSTimeout
from pymongo import MongoClient
from pymongo.errors import (
    ConfigurationError,
    NetworkTimeout,
    OperationFailure,
    ServerSelectionTimeoutError,
)

from syncd.config.model import Endpoint
from syncd.config.secrets import redact, uri_hosts

log = logging.getLogger("syncd.endpoints")

AUTH_FAILED_CODES = frozenset({11, 18})  # UserNotFound, AuthenticationFailed
_RESOLVER_ERRNOS = frozenset(
    getattr(socket, name)
    for name in ("EAI_NONAME", "EAI_AGAIN", "EAI_FAIL", "EAI_NODATA")
    if hasattr(socket, name)
)
_ERRNO = re.compile(r"\[Errno (-?\d+)\]\s*([^(]*)")
_CONFIGURED_TIMEOUTS = re.compile(r"\s*\(configured timeouts:[^)]*\)")
_SSL_NOISE = re.compile(r"\[SSL: \w+\]\s*|\s*\(_ssl\.c:\d+\)|_ssl\.c:\d+:\s*")
_TLS_PREFIX = "SSL handshake failed: "  # pymongo's, for a handshake that fails or times out
_SSL_REASON = "[SSL: "  # Python's ssl errors, e.g. "[SSL: CERTIFICATE_VERIFY_FAILED] ..."


@dataclass(frozen=True)
class Unreachable:
    """Why endpoint `name` cannot be used: `cause` in plain words, `todo` what to do."""

    name: str
    safe_uri: str  # credentials redacted
    cause: str
    todo: str

    @property
    def reason(self) -> str:
        return f"{self.cause}; {self.todo}"

    @property
    def line(self) -> str:
        return f"endpoint '{self.name}' ({self.safe_uri}) is unreachable: {self.reason}"


def diagnose(
    endpoint: Endpoint, safe_uri: str, exc: BaseException, client: MongoClient[Any] | None = None
) -> Unreachable:
    """The one line for `exc`, raised by the first command to `endpoint` (or by creating its
    client, for a `mongodb+srv://` name the resolver does not know)."""
    said = redact(f"{type(exc).__name__}: {exc}")
    log.debug("endpoint '%s': the driver says: %s", endpoint.name, said)
    kind, cause = _cause(exc, client, safe_uri)
    return Unreachable(endpoint.name, safe_uri, cause, _todo(kind, endpoint))


def is_dns_failure(exc: BaseException) -> bool:
    """A `mongodb+srv://` URI whose SRV record could not be looked up (pymongo does that when
    the client is created, and raises a ConfigurationError from the resolver's exception)."""
    return isinstance(exc, ConfigurationError) and isinstance(exc.__cause__, DNSException)


def _cause(exc: BaseException, client: MongoClient[Any] | None, safe_uri: str) -> tuple[str, str]:
    if isinstance(exc, OperationFailure) and exc.code in AUTH_FAILED_CODES:
        return "auth", "authentication failed"
    if is_dns_failure(exc):
        names = ", ".join(host.rpartition(":")[0] for host in uri_hosts(safe_uri))
        if isinstance(exc.__cause__, DNSTimeout):
            return "timeout", f"the DNS lookup of {names} timed out"
        return "unresolved", f"name not resolved ({names})"
    if client is None:
        return "other", _plain(str(exc))
    waited = client.options.server_selection_timeout
    found = _server_causes(client, waited)
    if found:
        causes = [f"{cause} ({', '.join(hosts)})" for (_, cause), hosts in found.items()]
        return next(iter(found))[0], ", ".join(causes)
    if isinstance(exc, ServerSelectionTimeoutError):
        hosts = ", ".join(_address(a) for a in client.topology_description.server_descriptions())
        return "timeout", f"timed out after {waited:g} s ({hosts})"
    return "other", _plain(str(exc))


def _server_causes(client: MongoClient[Any], waited: float) -> dict[tuple[str, str], list[str]]:
    """(kind, cause) -> the hosts it applies to, in the order the driver lists its servers."""
    connect = client.options.pool_options.connect_timeout or waited
    found: dict[tuple[str, str], list[str]] = {}
    for address, server in client.topology_description.server_descriptions().items():
        if server.error is None:
            continue
        kind, cause, host = _server_cause(server.error, address, connect, waited)
        found.setdefault((kind, cause), []).append(host)
    return found


def _server_cause(
    error: Exception, address: tuple[str, int | None], connect: float, waited: float
) -> tuple[str, str, str]:
    """(kind, cause, the host it concerns) for one server's last error."""
    where = _address(address)
    text = _plain(str(error)).removeprefix(f"{where}: ")
    if isinstance(error, OperationFailure) and error.code in AUTH_FAILED_CODES:
        return "auth", "authentication failed", where
    if text.startswith(_TLS_PREFIX) or _SSL_REASON in text:
        if isinstance(error, NetworkTimeout):
            detail = f"no TLS answer within {connect:g} s"
        else:
            detail = _SSL_NOISE.sub("", text.removeprefix(_TLS_PREFIX).removeprefix(f"{where}: "))
            detail = detail.strip() or "the server closed the connection"
        return "tls", f"TLS handshake failed: {detail}", where
    number = _ERRNO.search(text)
    if number is not None:
        code = int(number[1])
        if code == errno.ECONNREFUSED:
            return "refused", "connection refused", where
        if code in _RESOLVER_ERRNOS:
            return "unresolved", "name not resolved", str(address[0])
        if code == errno.ETIMEDOUT:
            return "timeout", f"timed out after {waited:g} s", where
        return "other", number[2].strip().lower() or text, where
    if isinstance(error, NetworkTimeout):
        return "timeout", f"timed out after {waited:g} s", where
    return "other", text, where


def _address(address: tuple[str, int | None]) -> str:
    host, port = address
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{port if port is not None else 27017}"


def _plain(text: str) -> str:
    """The driver's first line, without its reply dump, timeouts and topology description."""
    first = (redact(text).splitlines() or [""])[0]
    first = first.split(", full error:")[0].split(", Timeout:")[0]
    return _CONFIGURED_TIMEOUTS.sub("", first)[:300]


def _todo(kind: str, endpoint: Endpoint) -> str:
    advice = {
        "refused": "start the server, or fix the host and port in the URI",
        "unresolved": "check the host name in the URI",
        "tls": "check that the server has TLS on and the URI's tls and tlsCAFile options",
        "auth": "check the user name and password in the URI",
        "timeout": (
            "check the server is up and reachable from this machine "
            "(firewall, VPN, Atlas IP access list)"
        ),
    }.get(kind, "check the server is up and the URI")
    return advice + _source(endpoint)


def _source(endpoint: Endpoint) -> str:
    """Where the URI comes from, for the advice: the password is wherever the URI is."""
    ref = endpoint.uri
    if ref.kind == "env":
        return f" (from environment variable {ref.value})"
    if ref.kind == "file":
        return f" (from file {ref.value})"
    if ref.kind == "command":
        return (
            " (from the endpoint's uri_command: run it by hand; for Heroku, `heroku login` first)"
        )
    return ""
