"""Hold a running syncd at a named point (`syncd/pause.py`) and act while it waits there.

This is how a test lands a drop, a kill, a cut or an edit *during* a sync: the sync is held
at a known step, the action runs, then the sync goes on. No poll that hopes to be in time:
a sync that ends before the point fails the test with "never reached".
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from syncd.pause import DIR_ENV, POINTS_ENV

DEADLINE = 120.0  # seconds; generous for a loaded 2-core machine, never reached when healthy
POLL = 0.005


@dataclass
class Holds:
    """The pause points of one syncd run (a process, or the in-process runs of a block)."""

    folder: Path
    points: tuple[str, ...]
    acted: set[str] = field(default_factory=set)

    @classmethod
    def at(cls, root: Path, *points: str) -> Holds:
        return cls(Path(tempfile.mkdtemp(prefix="pause-", dir=root)), points)

    @property
    def env(self) -> dict[str, str]:
        return {DIR_ENV: str(self.folder), POINTS_ENV: ",".join(self.points)}

    def reached(self, point: str) -> int | None:
        """The pid held at `point`, once it got there."""
        marker = self.folder / f"{point}.reached"
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int(marker.read_text(encoding="utf-8"))
        return None

    def wait(
        self, point: str, *, ended: Callable[[], bool] = lambda: False, what: str = "syncd"
    ) -> int:
        """Wait until the run is held at `point`; fail if it `ended` first."""
        deadline = time.monotonic() + DEADLINE
        while (pid := self.reached(point)) is None:
            if ended():
                raise AssertionError(f"{what} ended before it reached {point}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} never reached {point}")
            time.sleep(POLL)
        return pid

    def release(self, point: str) -> None:
        (self.folder / f"{point}.go").touch()

    def release_all(self) -> None:
        for point in self.points:
            self.release(point)


@contextlib.contextmanager
def during(root: Path, actions: Mapping[str, Callable[[], object]]) -> Iterator[Holds]:
    """Runs of syncd in this process within the block are held at each point of `actions`
    while its action runs (on a thread of its own), then go on. The block must reach every
    point: afterwards `holds.acted` names the points whose action ran."""
    holds = Holds.at(root, *actions)
    finished = threading.Event()
    failures: list[BaseException] = []

    def act(point: str, action: Callable[[], object]) -> None:
        try:
            holds.wait(point, ended=finished.is_set)
            action()
            holds.acted.add(point)
        except BaseException as exc:  # noqa: BLE001 - reported on the test's thread
            failures.append(exc)
        finally:
            holds.release(point)

    threads = [threading.Thread(target=act, args=item, daemon=True) for item in actions.items()]
    saved = {key: os.environ.get(key) for key in holds.env}
    os.environ.update(holds.env)
    for thread in threads:
        thread.start()
    try:
        yield holds
    finally:
        finished.set()
        for thread in threads:
            thread.join(timeout=DEADLINE)
        holds.release_all()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    if failures:
        raise failures[0]


def stop_at(proc: subprocess.Popen[bytes], holds: Holds, point: str) -> int:
    """SIGSTOP `proc` once it is held at `point`, then let the point go: the process stays
    frozen there (a suspended machine) until SIGCONT. Its pid."""
    pid = holds.wait(point, ended=lambda: proc.poll() is not None, what=f"syncd (pid {proc.pid})")
    os.kill(proc.pid, signal.SIGSTOP)
    holds.release(point)
    return pid


def kill_at(proc: subprocess.Popen[bytes], holds: Holds, point: str) -> None:
    """SIGKILL `proc` while it is held at `point`."""
    holds.wait(point, ended=lambda: proc.poll() is not None, what=f"syncd (pid {proc.pid})")
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
