"""What a server is: its `hello` (or `isMaster`) and its version, asked once per client.

`hello` exists from MongoDB 4.4.2 (and 4.2.10); older servers of the supported range
answer only the legacy `isMaster`, with the same fields. Neither needs any privilege,
nor does `buildInfo`.
"""

from __future__ import annotations

from typing import Any

from pymongo import MongoClient
from pymongo.errors import OperationFailure

COMMAND_NOT_FOUND = 59


def hello(client: MongoClient[Any]) -> dict[str, Any]:
    """The server's `hello` reply; `isMaster`'s where `hello` is not known yet."""
    try:
        return dict(client.admin.command("hello"))
    except OperationFailure as exc:
        if exc.code != COMMAND_NOT_FOUND:
            raise
        return dict(client.admin.command("isMaster"))


def version(client: MongoClient[Any]) -> tuple[int, ...]:
    """The server's version as numbers ((8, 0, 4)); () when it does not say."""
    info = client.server_info()
    numbers = info.get("versionArray")
    if isinstance(numbers, list) and numbers:
        return tuple(int(n) for n in numbers[:3])
    parts = str(info.get("version", "")).split("-")[0].split(".")
    return tuple(int(p) for p in parts if p.isdigit())
