"""A local/production pair whose production is reached through a `FaultProxy` (for tests
that answer some of syncd's commands with the errors a real MongoDB would give)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from syncd.mongo import changestream
from tests.engine_kit import Pair, make_pair
from tests.support.faultproxy import FaultProxy
from tests.support.servers import Server


@contextmanager
def production_behind_proxy(
    server: Server,
    local_db: Database[Any],
    production_db: Database[Any],
    local_uri: str,
    root: Path,
) -> Iterator[tuple[Pair, FaultProxy]]:
    """The pair (no hook) and the proxy; skips where the server has no change streams."""
    with FaultProxy(server.host, server.port) as proxy:
        uri = proxy.uri_for(production_db.name)
        with MongoClient(uri) as client:
            if changestream.unsupported_reason(client.get_database("admin")) is not None:
                pytest.skip("needs change streams")
        yield make_pair(local_db, production_db, local_uri, uri, root, hook=False), proxy
