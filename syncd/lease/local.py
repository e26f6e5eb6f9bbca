"""One writer per target endpoint on this machine: a lease file in the state directory
(`StateDir.lease`).

`flock` is released by the kernel when its holder dies, so a stale lease of a killed
process is taken over without clean-up; the file records who holds it, for messages.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from syncd.lease.holder import Holder, LeaseBusy
from syncd.state.statedir import StateDir

POLL_SECONDS = 0.2
OnWait = Callable[[Holder], None]


def holder_of(path: Path) -> Holder:
    """Who the lease file says holds it (whatever it says, someone holds the flock)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        record = {}
    if not isinstance(record, dict):
        record = {}
    record.setdefault("job", "another syncd process")
    return Holder.from_record(record, "state_dir")


def local_holder(state: StateDir, endpoint: str) -> Holder | None:
    """The holder of `endpoint`'s lease on this machine, or None when it is free.

    Probes with a shared flock, taken and dropped at once: a writer that tries at that very
    instant sees it busy and waits one poll (or, with --no-wait, is refused)."""
    path = state.lease(endpoint)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return holder_of(path)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@contextmanager
def target_lease(
    state: StateDir,
    endpoint: str,
    *,
    job: str,
    flow: str | None = None,
    wait: bool = True,
    timeout: float | None = None,
    on_wait: OnWait | None = None,
) -> Iterator[None]:
    """Hold the write lease of `endpoint`; wait for it, or raise LeaseBusy.

    `on_wait` is told the holder when this run starts waiting, and again when it changes."""
    path = state.lease(endpoint)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        _acquire(fd, path, endpoint, wait=wait, timeout=timeout, on_wait=on_wait)
        me = Holder.me(job=job, flow=flow, where="state_dir")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({**me.record(), "since": time.time()}).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(
    fd: int,
    path: Path,
    endpoint: str,
    *,
    wait: bool,
    timeout: float | None,
    on_wait: OnWait | None,
) -> None:
    deadline = None if timeout is None else time.monotonic() + timeout
    told: Holder | None = None
    while True:
        with contextlib.suppress(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        holder = holder_of(path)
        if not wait or (deadline is not None and time.monotonic() >= deadline):
            raise LeaseBusy(endpoint, holder)
        if on_wait is not None and (told is None or told.record() != holder.record()):
            on_wait(holder)
            told = holder
        time.sleep(POLL_SECONDS)
