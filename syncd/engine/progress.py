"""Progress of long work: a live line per collection on a terminal, log lines otherwise."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from syncd.engine.plan import CollectionPlan

log = logging.getLogger("syncd.engine")
REFRESH_SECONDS = 0.25


class Reporter:
    def __init__(self, stream: TextIO | None = None, *, live: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self._lock = threading.Lock()
        self._last_draw = 0.0

    def counter(
        self, collection: str, what: str, total: int | None = None
    ) -> Callable[[int], None]:
        """A callback taking documents done so far; draws `collection: what n/total (rate/s)`."""
        started = time.monotonic()

        def update(done: int) -> None:
            if not self.live:
                return
            now = time.monotonic()
            with self._lock:
                if now - self._last_draw < REFRESH_SECONDS and done != total:
                    return
                self._last_draw = now
                rate = done / max(now - started, 1e-6)
                of = f"/{total}" if total is not None else ""
                self.stream.write(f"\r\x1b[K{collection}: {what} {done}{of} docs ({rate:,.0f}/s)")
                self.stream.flush()

        return update

    def planned(self, plan: CollectionPlan) -> None:
        if self.live:
            with self._lock:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
        log.info(
            "planned",
            extra={
                "collection": plan.name,
                "source_docs": plan.source_count,
                "target_docs": plan.target_count,
                "inserts": plan.inserts,
                "updates": plan.replaces,
                "deletes": plan.deletes,
                "drift": plan.drifted,
            },
        )

    def clear(self) -> None:
        if self.live:
            with self._lock:
                self.stream.write("\r\x1b[K")
                self.stream.flush()


class Silent(Reporter):
    def __init__(self) -> None:
        super().__init__(sys.stderr, live=False)
