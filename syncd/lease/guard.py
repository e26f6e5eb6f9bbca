"""The stop check of a held lease, found from the database a batch is written to.

The engine does not carry the lease around: where it writes a batch to a target it calls
`check_writes(db)`, and the lease held on that database (this process, this client) says
whether the run may go on. Without a database lease (`lease: local`, tests calling the
engine directly) it is a no-op. Keyed by client and database name, so two jobs of one
daemon writing two targets never see each other's lease.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from pymongo.database import Database

Check = Callable[[], None]

_lock = threading.Lock()
_checks: dict[tuple[int, str], Check] = {}


def _key(db: Database[Any]) -> tuple[int, str]:
    return id(db.client), db.name


def register(db: Database[Any], check: Check) -> None:
    with _lock:
        _checks[_key(db)] = check


def unregister(db: Database[Any], check: Check) -> None:
    with _lock:
        if _checks.get(_key(db)) == check:
            del _checks[_key(db)]


def check_writes(db: Database[Any]) -> None:
    """Raise (LeaseLost) if the lease this run holds on `db` is gone; call before a batch."""
    with _lock:
        check = _checks.get(_key(db))
    if check is not None:
        check()
