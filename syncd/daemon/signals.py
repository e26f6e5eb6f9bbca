"""Signals as events for the main loop: the handler does nothing but queue the signal.

The queue is a socket pair. `signal.set_wakeup_fd` makes the interpreter's C-level handler
write the signal number into it, whichever thread the kernel picked to take the signal;
a Python-level handler alone would not wake a main thread blocked in a wait when another
thread (scheduler, metrics, pymongo monitors) took the signal. Job threads post their own
wake-ups (a job finished) to the same socket, so the main loop waits on one thing.
"""

from __future__ import annotations

import select
import signal
import socket
from collections import deque
from types import FrameType
from typing import Any

HANDLED = (signal.SIGHUP, signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)
JOB_DONE = "job-done"
_JOB_DONE_BYTE = b"\0"  # no signal has number 0

Event = signal.Signals | str


def _queued_by_wakeup_fd(signum: int, frame: FrameType | None) -> None:
    """The Python-level handler: nothing to do, the wakeup fd already queued the signal.

    (It must exist: with SIG_DFL, SIGTERM would end the process and SIGHUP too.)
    """


class Inbox:
    """Signals and internal events, in arrival order."""

    def __init__(self) -> None:
        self._read, self._write = socket.socketpair()
        self._read.setblocking(False)
        self._write.setblocking(False)
        self._pending: deque[Event] = deque()
        self._previous: dict[signal.Signals, Any] = {}
        self._previous_fd: int | None = None

    def install(self) -> None:
        """Take over HUP, USR1, TERM and INT (main thread only)."""
        self._previous_fd = signal.set_wakeup_fd(self._write.fileno(), warn_on_full_buffer=False)
        for signum in HANDLED:
            self._previous[signum] = signal.signal(signum, _queued_by_wakeup_fd)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        if self._previous_fd is not None:
            signal.set_wakeup_fd(self._previous_fd)
            self._previous_fd = None

    def close(self) -> None:
        self._read.close()
        self._write.close()

    def post(self, event: str) -> None:
        """From any thread: wake the main loop (only JOB_DONE is carried)."""
        try:
            self._write.send(_JOB_DONE_BYTE)
        except OSError:
            pass  # full: the loop has wake-ups queued already; closed: the daemon has stopped

    def get(self, timeout: float | None) -> Event | None:
        """The next event, or None after `timeout` seconds (None: wait for ever)."""
        if not self._pending:
            select.select([self._read], [], [], timeout)
            self._drain()
        return self._pending.popleft() if self._pending else None

    def _drain(self) -> None:
        while True:
            try:
                data = self._read.recv(4096)
            except BlockingIOError:
                return
            for number in data:
                if number == 0:
                    self._pending.append(JOB_DONE)
                    continue
                try:
                    self._pending.append(signal.Signals(number))
                except ValueError:
                    pass
