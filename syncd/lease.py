"""One writer per target endpoint, across processes: a lease file under `state_dir/leases`.

`flock` is released by the kernel when its holder dies, so a stale lease of a killed
process is taken over without clean-up; the file records who holds it, for messages.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from syncd.errors import Refused

POLL_SECONDS = 0.2


class LeaseBusy(Refused):
    """The target endpoint is being written by another run."""


def lease_path(state_dir: Path, endpoint: str) -> Path:
    return state_dir / "leases" / f"{endpoint}.lease"


def holder_of(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return "another syncd process"
    return f"pid {info.get('pid', '?')} ({info.get('job', 'unknown job')})"


@contextmanager
def target_lease(
    state_dir: Path,
    endpoint: str,
    *,
    job: str,
    wait: bool = True,
    timeout: float | None = None,
) -> Iterator[None]:
    """Hold the write lease of `endpoint`; wait for it, or raise LeaseBusy."""
    path = lease_path(state_dir, endpoint)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        _acquire(fd, path, endpoint, wait=wait, timeout=timeout)
        os.ftruncate(fd, 0)
        os.pwrite(
            fd, json.dumps({"pid": os.getpid(), "job": job, "since": time.time()}).encode(), 0
        )
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(fd: int, path: Path, endpoint: str, *, wait: bool, timeout: float | None) -> None:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if not wait or (deadline is not None and time.monotonic() >= deadline):
                raise LeaseBusy(
                    f"endpoint '{endpoint}' is being written by {holder_of(path)}; "
                    "wait for it to finish (or run without --no-wait to queue)"
                ) from None
            time.sleep(POLL_SECONDS)
