"""Python's cyclic garbage collector, paused while documents stream through.

The per-document loops (a copy, a scan, a read-back, remembering) allocate a few objects per
document and create no reference cycles: reference counting frees all of it. The collector
still runs every 700 allocations and, now and then, walks every object of the process (the
imported modules, pymongo's state): about a tenth of a first copy's CPU. It is paused for
the length of such a loop, from any thread, and runs again when the last pause ends; what
cycles other code made meanwhile (a handful per server round trip) wait until then.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_depth = 0
_was_enabled = False


@contextmanager
def gc_paused() -> Iterator[None]:
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()
