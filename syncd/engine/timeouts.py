"""How long each kind of operation may take on a server: its own limit, none for index builds.

One socket timeout for every operation (syncd's old 120 s `socketTimeoutMS`) cut index builds,
which answer only once the index is built, and exact counts of large collections, then
retried them five times. So the client has no socket timeout of syncd's (an operator's
`socketTimeoutMS=` in the URI still applies), and each operation runs under the limit of its
kind through pymongo's client-side timeout (`pymongo.timeout`): the driver sends the rest of
the limit as `maxTimeMS`, so the server stops the work too, and bounds the socket read by
it. Scans (cursors over a whole collection) get no limit: a `maxTimeMS` on a `find` holds for
the cursor's whole life on the server, which is as long as the collection is big; pymongo's
own default is none too. A dead peer is still found without a socket timeout: pymongo's TCP
keepalive probes an idle connection within about two minutes.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Literal

import pymongo

Kind = Literal["command", "read", "write", "count", "index"]

# Seconds; None: no limit.
LIMITS: dict[Kind, float | None] = {
    "command": 120.0,  # metadata and DDL: listCollections, create, collMod, dropIndexes...
    "read": 300.0,  # a read by _id: at most 1000 documents
    "write": 300.0,  # one bulk write of at most 1000 documents or 8 MB
    "count": 3600.0,  # an exact count walks the collection (or its _id index)
    "index": None,  # an index build answers when the index is built: hours on a big one
}


def limit(kind: Kind) -> AbstractContextManager[None]:
    """The deadline of one operation of `kind` (nothing for a kind without a limit)."""
    seconds = LIMITS[kind]
    return nullcontext() if seconds is None else pymongo.timeout(seconds)
