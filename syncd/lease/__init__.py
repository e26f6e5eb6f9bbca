"""One writer per target: the write lease a sync or restore holds while it writes.

Two layers, taken in this order and given back in reverse:

1. this machine: a lease file in the state directory (`local.py`), so the daemon and a
   manual run on one machine queue for a target;
2. every machine: a lease document in the target database (`database.py`), unless the
   endpoint says `lease: local`.

`write_lease` is the one entry point: manual runs wait (saying who they wait for) or,
with `wait=False`, raise `LeaseBusy`; a run whose database lease is lost stops before its
next batch (the `WriteLease.check` it yields is the run's lease check: engine/context.py).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from syncd.config.model import Config
from syncd.endpoints import Connected
from syncd.errors import SyncdError
from syncd.lease.database import (
    COLLECTION,
    DatabaseLease,
    LeaseLost,
    LeaseUnwritable,
    lease_seconds,
    release_all,
)
from syncd.lease.holder import Holder, LeaseBusy, utc_text
from syncd.lease.local import target_lease

__all__ = [
    "COLLECTION",
    "Holder",
    "LeaseBusy",
    "LeaseLost",
    "LeaseUnwritable",
    "Terminated",
    "WriteLease",
    "release_all",
    "target_lease",
    "write_lease",
]

log = logging.getLogger("syncd.lease")


class Terminated(SyncdError):
    """SIGTERM reached a run holding a write lease: it stopped and gave the lease back."""


class WriteLease:
    """What the holder of a write lease can ask: is it still mine?"""

    def __init__(self, database: DatabaseLease | None) -> None:
        self.database = database

    def check(self) -> None:
        """Raise LeaseLost once the database lease is gone (a no-op for `lease: local`)."""
        if self.database is not None:
            self.database.check()


@contextmanager
def write_lease(
    config: Config,
    target: Connected,
    *,
    job: str,
    flow: str | None = None,
    wait: bool = True,
) -> Iterator[WriteLease]:
    """Hold the write lease of `target`: the state-directory lease, then the database's."""
    name = target.name
    seconds = lease_seconds() if target.endpoint.lease == "database" else 0.0

    def waiting(holder: Holder) -> None:
        line = f"waiting for the write lease of '{name}': being written by {holder.describe()}"
        if holder.expires is not None:
            line += (
                f"; if that run has died, the lease is taken over when it expires "
                f"({utc_text(holder.expires)} unless renewed)"
            )
        log.warning(line, extra={"endpoint": name})

    with (
        _stopped_by_sigterm(),
        target_lease(config.state, name, job=job, flow=flow, wait=wait, on_wait=waiting),
    ):
        if target.endpoint.lease == "local":
            yield WriteLease(None)
            return
        me = Holder.me(job=job, flow=flow, where="database")
        lease = DatabaseLease(target.db, name, me, seconds)
        try:  # a SIGTERM may land between the lease's insert and acquire's return
            lease.acquire(wait=wait, on_wait=waiting)
            yield WriteLease(lease)
        finally:
            lease.release()


@contextmanager
def _stopped_by_sigterm() -> Iterator[None]:
    """A one-shot command (`syncd sync`, `backup restore`) told to stop by SIGTERM raises
    `Terminated` where it is, like Ctrl-C raises KeyboardInterrupt, so its leases are given
    back on the way out instead of expiring. A second SIGTERM ends it at once.

    Only where SIGTERM is not handled already: the daemon has its own (jobs stop between
    batches), and its jobs run on other threads, where handlers cannot be set anyway."""
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated(
            "stopped by SIGTERM; the write lease was given back. What was written is "
            "consistent (whole documents); run it again to finish"
        )

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
