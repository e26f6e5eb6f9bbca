"""Named points where a test can hold a running syncd.

A test that does something "during" a sync (drops the source collection, kills the process,
cuts the network, edits the target) must land it at a known moment. Polling the target
from another thread and hoping the sync is still running is a race the test loses on a
fast or a loaded machine. Instead the test names a point, and syncd waits there:

    SYNCD_PAUSE_DIR=DIR SYNCD_PAUSE_AT=write.batch syncd sync ...

The first time the process reaches a named point it writes `DIR/POINT.reached` (its pid),
then waits until `DIR/POINT.go` exists (or `WAIT_SECONDS` pass, so a test that died never
leaves a syncd behind for good). `POINT#N` holds it the N-th time instead (`write.batch#4`:
after the fourth batch). Other passes go on at once. Signals are handled while it waits, as
anywhere else.

Without `SYNCD_PAUSE_DIR` (every real run) a point is one environment lookup. The points:

- `lease.taken`: the write lease on the target was just taken;
- `read.batch`: a batch of a collection was read whole from a side (scan, first copy), also
  as `read.batch@DATABASE`, for one side's reads;
- `changes.fence`: a read of a change stream has its fence (the operation time it reads up
  to), also as `changes.fence@DATABASE`;
- `fetch.batch`: a batch of documents was read by `_id`;
- `write.batch`: a batch of writes was applied to the target;
- `backup.write`: a backup has put the first documents of a collection on disk.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

DIR_ENV = "SYNCD_PAUSE_DIR"
POINTS_ENV = "SYNCD_PAUSE_AT"
WAIT_SECONDS = 300.0
_POLL_SECONDS = 0.005


_passes: dict[tuple[str, str], int] = {}  # (folder, point) -> times reached
_counting = threading.Lock()  # points are passed on several threads (readers, writers)


def point(name: str, where: str = "") -> None:
    """Wait here if a test named this pass through this point; otherwise return at once.

    `where` narrows a point for tests that name it `POINT@WHERE` (a database's name, for a
    read that must be of one side)."""
    folder = os.environ.get(DIR_ENV)
    if not folder:
        return
    named = os.environ.get(POINTS_ENV, "").split(",")
    for point_name in (name, f"{name}@{where}") if where else (name,):
        with _counting:
            n = _passes[(folder, point_name)] = _passes.get((folder, point_name), 0) + 1
        for held in (f"{point_name}#{n}", point_name if n == 1 else None):
            if held in named:
                _hold(Path(folder), held)


def _hold(folder: Path, held: str) -> None:
    reached, go = folder / f"{held}.reached", folder / f"{held}.go"
    with reached.open("w", encoding="utf-8") as marker:
        marker.write(str(os.getpid()))
    deadline = time.monotonic() + WAIT_SECONDS
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(_POLL_SECONDS)
