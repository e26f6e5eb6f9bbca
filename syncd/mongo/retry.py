"""Retries with backoff for transient server errors; every retried step is idempotent.

Permanent errors (no rights, a refused write, a bad command) are not retried: `failing_clearly`
turns them, and transient errors that outlasted every attempt, into one message naming the
endpoint (URI redacted), the collection and the step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    NetworkTimeout,
    NotPrimaryError,
    OperationFailure,
    PyMongoError,
)

from syncd.config.secrets import redact
from syncd.errors import SyncdError
from syncd.mongo.privileges import UNAUTHORIZED, unauthorized_hint

log = logging.getLogger("syncd.engine")
T = TypeVar("T")
TRANSIENT = (AutoReconnect, NetworkTimeout, NotPrimaryError, ConnectionResetError)
# Server codes of a failover or shutdown in progress (the driver specs' retryable codes).
RETRYABLE_CODES = frozenset({6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 134})
UNAUTHORIZED_CODES = frozenset({13, 18, 8000})
CURSOR_LOST_CODES = frozenset({43, 175, 237})  # CursorNotFound, QueryPlanKilled, CursorKilled
ATTEMPTS = 5
FIRST_DELAY = 0.5
MAX_DELAY = 8.0


class ServerFailed(SyncdError):
    """A server error that retrying does not (or did not) cure."""


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TRANSIENT):
        return True
    if isinstance(exc, OperationFailure) and not isinstance(exc, BulkWriteError):
        return exc.code in RETRYABLE_CODES or exc.has_error_label("RetryableWriteError")
    return False


def with_retries(step: Callable[[], T], *, what: str, attempts: int = ATTEMPTS) -> T:
    """Run `step`; on a transient error wait (0.5 s, 1 s, 2 s ...) and run it again."""
    delay = FIRST_DELAY
    for attempt in range(1, attempts + 1):
        try:
            return step()
        except (*TRANSIENT, OperationFailure) as exc:
            if attempt == attempts or not is_transient(exc):
                raise
            log.warning(
                "transient error, retrying",
                extra={"step": what, "attempt": attempt, "error": type(exc).__name__},
            )
            time.sleep(delay)
            delay = min(delay * 2, MAX_DELAY)
    raise AssertionError("unreachable")


@contextmanager
def failing_clearly(step: str, collection: str, endpoint: str) -> Iterator[None]:
    """Re-raise a server error as `ServerFailed`: "STEP COLLECTION on ENDPOINT: why; what to do"."""
    try:
        yield
    except PyMongoError as exc:
        raise ServerFailed(
            f"{step} {collection} on {redact(endpoint)}: {server_reason(exc)}; {_hint(exc)}"
        ) from None


def first_line(exc: BaseException) -> str:
    """The server's message without pymongo's ", full error: {...}" reply dump, redacted."""
    return (redact(str(exc)).splitlines() or [""])[0].split(", full error:")[0][:300]


def server_reason(exc: PyMongoError) -> str:
    """`first_line` with the error's type and code: what a message names as the cause."""
    text = first_line(exc)
    code = getattr(exc, "code", None)
    return f"{text} ({type(exc).__name__}{f', code {code}' if code is not None else ''})"


def _hint(exc: PyMongoError) -> str:
    if is_transient(exc):
        return (
            f"no answer after {ATTEMPTS} attempts; check the server is up and reachable, "
            "then run again (the next run converges)"
        )
    if isinstance(exc, OperationFailure) and exc.code == UNAUTHORIZED:
        return unauthorized_hint(str(exc))
    if isinstance(exc, OperationFailure) and exc.code in UNAUTHORIZED_CODES:
        return "not allowed: check the endpoint's credentials and the user's roles"
    if isinstance(exc, OperationFailure) and exc.code in CURSOR_LOST_CODES:
        return (
            "the collection was dropped or renamed while it was read; run again (a collection "
            "missing on the source counts as empty)"
        )
    return "the server refused it; fix the cause, then run again (the next run converges)"
