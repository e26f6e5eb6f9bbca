"""Retries with backoff for transient server errors; every retried step is idempotent."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from pymongo.errors import AutoReconnect, NetworkTimeout, NotPrimaryError

log = logging.getLogger("syncd.engine")
T = TypeVar("T")
TRANSIENT = (AutoReconnect, NetworkTimeout, NotPrimaryError, ConnectionResetError)
ATTEMPTS = 5
FIRST_DELAY = 0.5
MAX_DELAY = 8.0


def with_retries(step: Callable[[], T], *, what: str, attempts: int = ATTEMPTS) -> T:
    """Run `step`; on a transient error wait (0.5 s, 1 s, 2 s ...) and run it again."""
    delay = FIRST_DELAY
    for attempt in range(1, attempts + 1):
        try:
            return step()
        except TRANSIENT as exc:
            if attempt == attempts:
                raise
            log.warning(
                "transient error, retrying",
                extra={"step": what, "attempt": attempt, "error": type(exc).__name__},
            )
            time.sleep(delay)
            delay = min(delay * 2, MAX_DELAY)
    raise AssertionError("unreachable")
