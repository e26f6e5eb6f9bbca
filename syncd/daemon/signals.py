"""Signals handled by queue: the handler only records the signal, the main loop acts.

The same queue carries the daemon's own wake-ups (a job finished), so the main loop waits
on one thing. `queue.SimpleQueue.put` is reentrant: safe to call from a signal handler
that interrupts a `get` in the same thread.
"""

from __future__ import annotations

import queue
import signal
from types import FrameType
from typing import Any

HANDLED = (signal.SIGHUP, signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)
JOB_DONE = "job-done"

Event = signal.Signals | str


class Inbox:
    """Signals and internal events, in arrival order."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._previous: dict[signal.Signals, Any] = {}

    def install(self) -> None:
        """Take over HUP, USR1, TERM and INT (main thread only)."""
        for signum in HANDLED:
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._queue.put(signal.Signals(signum))

    def post(self, event: Event) -> None:
        self._queue.put(event)

    def get(self, timeout: float | None) -> Event | None:
        """The next event, or None after `timeout` seconds (None: wait for ever)."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
