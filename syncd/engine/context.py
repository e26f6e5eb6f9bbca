"""What one run carries down to where it reads and writes: `RunContext`.

The engine asks it, never a process-wide registry or the progress reporter, whether to go
on. Its checks are called at documented boundaries only: before each write batch
(`apply.py`), after each collection is planned and as a scan reports progress
(`plan.py`), before each hook (`hooks.py`). GridFS pairs are never cut between fs.chunks
and fs.files (`write.py` gives their batches the lease check alone).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from syncd.config.model import GRIDFS_PAIRS
from syncd.engine.progress import Reporter, Silent

if TYPE_CHECKING:
    from syncd.state.memory import SyncMemory

Check = Callable[[], None]  # raises to stop the run; returns to let it go on


def go_on() -> None:
    """The check of a run nothing stops (a test calling the engine, a dry run)."""


@dataclass
class RunContext:
    """One run's stop check, lease check, progress reporter and sync memory.

    `stop` raises once the run must end early (the daemon is stopping: `Abandoned`);
    `lease` raises once the target's write lease is gone (`LeaseLost`); both are
    no-ops by default. `memory` is the run's one handle on the sync memory (hooks record
    their writes through it)."""

    reporter: Reporter = field(default_factory=Silent)
    stop: Check = go_on
    lease: Check = go_on
    memory: SyncMemory | None = None

    def check(self) -> None:
        """Before a write batch: may this run still write?"""
        self.stop()
        self.lease()

    def before_batch(self, collection: str) -> Check:
        """The check before each write batch of `collection`: the stop check and the lease
        check, or the lease check alone inside a GridFS pair (the engine writes a file's
        chunks, then its file document: a stop waits for the pair to be written)."""
        return self.lease if collection in GRIDFS_PAIRS else self.check

    def progress(
        self, collection: str, what: str, total: int | None = None
    ) -> Callable[[int], None]:
        """The reporter's counter, with the stop check at each report (a long read or
        write stops between two batches)."""
        counter = self.reporter.counter(collection, what, total)
        stop = self.stop

        def update(done: int) -> None:
            counter(done)
            stop()

        return update
