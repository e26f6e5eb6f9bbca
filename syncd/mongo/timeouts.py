"""How long each kind of operation may run on a server: its own limit, none for index builds.

One socket timeout for every operation (syncd's old 120 s `socketTimeoutMS`) cut index
builds, which answer only once the index is built, and exact counts of large collections,
then retried them five times. So the client has no socket timeout of syncd's, as pymongo's
own default (an operator's `socketTimeoutMS=` in the URI still bounds every round trip),
and an operation whose length can be told runs with its kind's `maxTimeMS`: the server
stops the work and says so (MaxTimeMSExpired), which no retry repeats.

Limits are the server's, not the client's: pymongo's client-side timeout
(`pymongo.timeout`) would also retry a retryable operation again and again until its
deadline, so an outage would cost five whole limits instead of five quick attempts
(tests/test_fault_network.py). A dead peer is still found without a socket timeout:
pymongo's TCP keepalive probes an idle connection within about three minutes.
"""

from __future__ import annotations

from typing import Any, Literal

Kind = Literal["metadata", "read", "count", "index", "scan", "write"]

# Seconds; None: no limit, and why.
LIMITS: dict[Kind, float | None] = {
    "metadata": 120.0,  # listCollections, the record count: answered from the catalog
    "read": 300.0,  # a read by _id of at most 1000 documents
    "count": 3600.0,  # an exact count walks the collection (or its _id index)
    "index": None,  # an index build answers when the index is built: hours on a big one
    "scan": None,  # a cursor's maxTimeMS holds for its whole life: as long as the collection
    "write": None,  # a batch is at most 1000 documents or 8 MB; pymongo has no per-write limit
}


def max_time_ms(kind: Kind) -> int | None:
    """The `maxTimeMS` of a command of `kind`; None when it has no limit."""
    seconds = LIMITS[kind]
    return None if seconds is None else int(seconds * 1000)


def max_time(kind: Kind) -> dict[str, Any]:
    """`maxTimeMS` for a command of `kind` as keyword arguments ({} when it has none)."""
    limit = max_time_ms(kind)
    return {} if limit is None else {"maxTimeMS": limit}
