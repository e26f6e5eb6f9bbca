"""While a sync runs: the target is never dropped and rebuilt (a reader polling it never
sees the collection shrink, let alone empty), and connections dropped mid-write do not
break the sync or its result."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from tests.engine_kit import Pair, collection_uuid, make_pair, snapshot, syncd
from tests.support.faultproxy import FaultProxy
from tests.support.pause import during
from tests.support.servers import Server

Capsys = pytest.CaptureFixture[str]
PUSH = ("sync", "to_production", "--yes")
POLL = 0.005  # seconds between polls of the target


def test_readers_never_see_the_target_shrink_during_a_sync(
    pair: Pair, capsys: Capsys, production_client: MongoClient[dict[str, Any]]
) -> None:
    count = 3_000
    pair.local.items.insert_many([{"_id": i, "v": 1, "pad": "x" * 200} for i in range(count)])
    assert syncd(capsys, pair.config, *PUSH).code == 0
    uuid = collection_uuid(pair.production, "items")
    pair.local.items.update_many({}, {"$set": {"v": 2}})

    seen: list[int] = []
    done = threading.Event()
    reader = production_client[pair.production.name].items

    def read() -> None:
        while not done.is_set():
            seen.append(reader.count_documents({}))

    def read_between_batches() -> None:  # one read at least lands while the sync writes
        seen.append(reader.count_documents({}))
        mid_sync.append(seen[-1])

    mid_sync: list[int] = []
    thread = threading.Thread(target=read)
    thread.start()
    try:
        with during(pair.root, {"write.batch": read_between_batches}):
            result = syncd(capsys, pair.config, *PUSH)
    finally:
        done.set()
        thread.join(timeout=30)

    assert result.code == 0, result.err
    assert f"{count} to update" in result.out
    assert mid_sync == [count]
    assert min(seen) == count
    assert collection_uuid(pair.production, "items") == uuid
    assert pair.production.items.count_documents({"v": 2}) == count


def test_connections_dropped_while_writing_do_not_break_the_sync(
    local_db: Database[Any],
    production_db: Database[Any],
    local_uri: str,
    server_production: Server,
    tmp_path: Path,
    capsys: Capsys,
) -> None:
    count = 6_000
    local_db.items.insert_many([{"_id": i, "pad": "x" * 200} for i in range(count)])
    with FaultProxy(server_production.host, server_production.port) as proxy:
        pair = make_pair(
            local_db,
            production_db,
            local_uri,
            proxy.uri_for(production_db.name),
            tmp_path,
            hook=False,
        )
        dropped: list[int] = []  # target count when the connections were cut

        def cut() -> None:
            assert proxy.drop_connections(), "syncd had connections open to cut"
            dropped.append(production_db.items.count_documents({}))

        # after the first and the fourth of six batches
        with during(tmp_path, {"write.batch": cut, "write.batch#4": cut}):
            result = syncd(capsys, pair.config, *PUSH)

    assert len(dropped) == 2 and max(dropped) < count, "the connections were cut while writing"
    assert result.code == 0, result.err
    assert "duplicate key" not in result.text.lower()
    assert snapshot(production_db) == snapshot(local_db)


def test_a_write_to_the_target_during_the_sync_fails_verification(
    pair: Pair, capsys: Capsys, production_client: MongoClient[dict[str, Any]]
) -> None:
    """A sync that cannot prove the target equal fails (exit 1); the stranger's document
    is then drift for the next run, not silently deleted."""
    count = 5_000
    pair.local.items.insert_many([{"_id": i, "pad": "x" * 200} for i in range(count)])
    target = production_client[pair.production.name].items

    def write() -> None:
        target.insert_one({"_id": "written by the app", "during": "sync"})

    with during(pair.root, {"write.batch": write}) as held:
        result = syncd(capsys, pair.config, *PUSH)

    assert held.acted == {"write.batch"}
    assert result.code == 1
    assert "items on 'production'" in result.err
    assert "after writing, 1 document(s) differ from the source" in result.err
    rerun = syncd(capsys, pair.config, *PUSH)
    assert rerun.code == 3
    assert "written by the app" in rerun.err
    assert target.find_one({"_id": "written by the app"}) is not None


def test_an_app_write_to_a_document_the_sync_just_wrote_fails_verification(
    pair: Pair, capsys: Capsys, production_client: MongoClient[dict[str, Any]]
) -> None:
    """Verification reads back what the sync wrote: an app overwriting one of those
    documents before the sync ends makes it fail, and the next run reports it as drift."""
    count = 5_000
    pair.local.items.insert_many([{"_id": i, "v": 1, "pad": "x" * 200} for i in range(count)])
    assert syncd(capsys, pair.config, *PUSH).code == 0
    pair.local.items.update_many({}, {"$set": {"v": 2}})
    target = production_client[pair.production.name].items
    overwritten: list[Any] = []

    def overwrite() -> None:  # one of the documents of the batch the sync just wrote
        _id = target.find_one({"v": 2}, {"_id": 1})["_id"]  # type: ignore[index]
        target.update_one({"_id": _id}, {"$set": {"v": "written by the app"}})
        overwritten.append(_id)

    with during(pair.root, {"write.batch": overwrite}):
        result = syncd(capsys, pair.config, *PUSH)

    assert len(overwritten) == 1
    assert result.code == 1, result.text
    assert "items on 'production'" in result.err
    assert "after writing, 1 document(s) differ from the source" in result.err
    rerun = syncd(capsys, pair.config, *PUSH)
    assert rerun.code == 3
    assert target.find_one({"_id": overwritten[0]}, {"_id": 0, "v": 1}) == {
        "v": "written by the app"
    }
