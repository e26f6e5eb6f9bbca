"""The network breaks under a sync (a TCP fault proxy between syncd and production):
connections cut while reading, an outage longer than the retries, a stalled server, and
permanent server errors that must fail at once with a message naming endpoint and collection.

The syncs run in-process with the retry backoff cut to milliseconds (the number of
attempts is unchanged) and the URIs carry short timeouts, which syncd must honour.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from syncd.config.model import Endpoint, SecretRef
from syncd.endpoints import CONNECT_TIMEOUT_MS, client_options, open_endpoint
from syncd.mongo import retry
from tests.engine_kit import Outcome, Pair, make_pair, snapshot, syncd
from tests.support.faultproxy import FaultProxy
from tests.support.pause import during
from tests.support.servers import Server

Capsys = pytest.CaptureFixture[str]
PUSH = ("sync", "to_production", "--yes")
PULL = ("sync", "from_production", "--yes")
# Short enough for a test, long enough for a loaded 2-core machine to answer a healthy server.
SHORT = {"serverSelectionTimeoutMS": "2000", "connectTimeoutMS": "2000", "socketTimeoutMS": "5000"}


def outage(proxy: FaultProxy) -> Callable[[], None]:
    """The proxy refuses and cuts every connection, until `refuse(False)`."""

    def cut() -> None:
        proxy.refuse(True)
        proxy.drop_connections()

    return cut


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry, "FIRST_DELAY", 0.01)


@pytest.fixture
def proxy(server_production: Server) -> Iterator[FaultProxy]:
    with FaultProxy(server_production.host, server_production.port) as running:
        yield running


def proxied_pair(
    local_db: Database[Any],
    production_db: Database[Any],
    local_uri: str,
    proxy: FaultProxy,
    root: Path,
) -> Pair:
    uri = proxy.uri_for(production_db.name, **SHORT)
    return make_pair(local_db, production_db, local_uri, uri, root, hook=False)


@pytest.fixture
def push_through_proxy(
    local_db: Database[Any],
    production_db: Database[Any],
    local_uri: str,
    proxy: FaultProxy,
    tmp_path: Path,
) -> Pair:
    """6,000 local documents to push to production through the proxy."""
    fill(local_db, 6_000, pad=200)
    return proxied_pair(local_db, production_db, local_uri, proxy, tmp_path)


def fill(db: Database[Any], count: int, pad: int = 1000) -> None:
    for start in range(0, count, 2000):
        db.items.insert_many(
            [{"_id": i, "v": 1, "pad": "x" * pad} for i in range(start, min(count, start + 2000))]
        )


def run_during(
    point: str, action: Callable[[], object], capsys: Capsys, pair: Pair, *args: str
) -> Outcome:
    """`syncd ARGS...`, held at `point` (syncd/pause.py) while `action` runs."""
    with during(pair.root, {point: action}) as held:
        result = syncd(capsys, pair.config, *args)
    assert held.acted == {point}
    return result


def test_uri_timeouts_win_over_syncds_defaults(server_local: Server) -> None:
    uri = server_local.uri_for("db") + "&socketTimeoutMS=2000&serverselectiontimeoutms=900"
    options = client_options(uri)
    assert "socketTimeoutMS" not in options and "serverSelectionTimeoutMS" not in options
    assert options["connectTimeoutMS"] == CONNECT_TIMEOUT_MS == 5_000

    connected = open_endpoint(Endpoint(name="local", uri=SecretRef("literal", uri)))
    try:
        assert connected.client.options.pool_options.socket_timeout == 2.0
        assert connected.client.options.server_selection_timeout == 0.9
    finally:
        connected.close()


def test_connections_cut_while_reading_the_source_are_retried(
    local_db: Database[Any],
    production_db: Database[Any],
    local_uri: str,
    proxy: FaultProxy,
    tmp_path: Path,
    capsys: Capsys,
) -> None:
    fill(production_db, 8_000)
    pair = proxied_pair(local_db, production_db, local_uri, proxy, tmp_path)
    # held after the first batch: the next batch's reply dies on the wire
    result = run_during(
        f"read.batch@{production_db.name}", proxy.cut_next_reply, capsys, pair, *PULL
    )

    assert result.code == 0, result.err
    assert "transient error, retrying" in result.err
    assert 'step="read items' in result.err
    assert snapshot(local_db) == snapshot(production_db)


@pytest.mark.slow
@pytest.mark.usefixtures("short_lease")  # the lease the cut-off run could not give back
def test_an_outage_longer_than_the_retries_fails_cleanly_and_the_rerun_converges(
    local_db: Database[Any],
    production_db: Database[Any],
    proxy: FaultProxy,
    push_through_proxy: Pair,
    capsys: Capsys,
) -> None:
    pair = push_through_proxy
    result = run_during("write.batch", outage(proxy), capsys, pair, *PUSH)

    assert result.code == 1
    assert result.err.count("transient error, retrying") == retry.ATTEMPTS - 1
    message = result.err.strip().splitlines()[-1]
    assert message.startswith("syncd: writing items on 'production' (mongodb://127.0.0.1:")
    assert f"{proxy.port}/{production_db.name}" in message
    assert f"no answer after {retry.ATTEMPTS} attempts" in message
    assert 0 < production_db.items.count_documents({}) < 6_000, "cut part-way"

    proxy.refuse(False)
    rerun = syncd(capsys, pair.config, *PUSH)

    assert rerun.code == 0, rerun.err
    assert "duplicate key" not in rerun.text.lower()
    assert snapshot(production_db) == snapshot(local_db)


@pytest.mark.slow
@pytest.mark.usefixtures("short_lease")  # the lease the cut-off run could not give back
def test_a_stalled_server_times_out_and_the_rerun_converges(
    local_db: Database[Any],
    production_db: Database[Any],
    proxy: FaultProxy,
    push_through_proxy: Pair,
    capsys: Capsys,
) -> None:
    """Bytes held (not refused) by a stalled server: the URI's socketTimeoutMS ends each
    attempt, the sync fails with exit 1 instead of hanging (syncd sets no socket timeout of
    its own: mongo/timeouts.py)."""
    pair = push_through_proxy
    result = run_during("write.batch", proxy.stall, capsys, pair, *PUSH)

    assert result.code == 1
    assert "syncd: writing items on 'production'" in result.err
    assert "timed out" in result.err
    # The held requests die with their connections (a real middlebox would reset them).
    proxy.drop_connections()
    proxy.resume()
    rerun = syncd(capsys, pair.config, *PUSH)

    assert rerun.code == 0, rerun.err
    assert snapshot(production_db) == snapshot(local_db)


@pytest.mark.slow
@pytest.mark.usefixtures("short_lease")  # the lease the cut-off run could not give back
def test_a_cut_short_sync_then_more_source_edits_is_not_drift(
    local_db: Database[Any],
    production_db: Database[Any],
    proxy: FaultProxy,
    push_through_proxy: Pair,
    capsys: Capsys,
) -> None:
    """The soak's finding: production keeps changing between the failed pull and the next."""
    pair = push_through_proxy
    assert run_during("write.batch", outage(proxy), capsys, pair, *PUSH).code == 1
    proxy.refuse(False)
    written = [d["_id"] for d in production_db.items.find({}, {"_id": 1}).limit(10)]
    assert written, "the cut-short sync wrote something"
    local_db.items.update_many({"_id": {"$in": written}}, {"$set": {"v": 2}})

    rerun = syncd(capsys, pair.config, *PUSH)

    assert rerun.code == 0, rerun.err
    assert snapshot(production_db) == snapshot(local_db)
