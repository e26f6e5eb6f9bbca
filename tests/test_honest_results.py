"""Results syncd reports are ones it checked: undoing a sync from a `changes` backup reads
the restored documents back, and the reads behind backups (a scheduled or manual backup,
the before-images of a `changes` backup, the safety backup before a restore) survive a
connection cut the way scans do (a TCP fault proxy between syncd and production)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bson
import pytest
from pymongo.database import Database

from syncd.backup import BackupWriter, list_backups
from syncd.backup.create import BATCH_BYTES
from syncd.mongo import retry
from syncd.mongo.source import CollectionSpec
from tests.engine_kit import Outcome, Pair, backup_contents, make_pair, snapshot, syncd
from tests.support.faultproxy import FaultProxy
from tests.support.pause import DEADLINE, during
from tests.support.servers import Server

Capsys = pytest.CaptureFixture[str]
PUSH = ("sync", "to_production", "--yes")
SHORT = {"serverSelectionTimeoutMS": "2000", "connectTimeoutMS": "2000", "socketTimeoutMS": "5000"}


def contracts(n: int, pad: int = 0) -> list[dict[str, Any]]:
    """`pad` random bytes per document: backups of them do not compress."""
    return [
        {"_id": i, "number": f"CTR-{i:05d}", "status": "draft", "scan": os.urandom(pad)}
        for i in range(n)
    ]


# -- undoing a sync reads back what it restored ---------------------------------------------


def test_undoing_a_sync_reads_back_every_restored_document(pair: Pair, capsys: Capsys) -> None:
    pair.configure(hook=False, before_sync="changes")
    pair.local.contracts.insert_many(contracts(30))
    assert syncd(capsys, pair.config, *PUSH).code == 0
    before = snapshot(pair.production)
    pair.local.contracts.update_many({"_id": {"$lt": 10}}, {"$set": {"status": "signed"}})
    pair.local.contracts.delete_many({"_id": {"$gte": 25}})
    pair.local.contracts.insert_one({"_id": 100, "number": "new"})
    pushed = syncd(capsys, pair.config, *PUSH)
    assert pushed.code == 0, pushed.err
    (changes,) = [b.name for b in list_backups(pair.backups) if b.kind == "changes"]

    restored = syncd(capsys, pair.config, "backup", "restore", changes, "--yes")

    assert restored.code == 0, restored.err
    assert "1/1 collections read back and verified" in restored.out
    assert snapshot(pair.production) == before


def undo_backup(pair: Pair, *, inserted_id: int) -> str:
    """A `changes` backup of contracts: _id 1's before-image, and `inserted_id` as inserted
    by the sync it records."""
    with BackupWriter(
        pair.backups, "production", pair.production.name, kind="changes", compress="gzip"
    ) as writer:
        image = bson.encode({"_id": 1, "number": "CTR-00001", "status": "before"})
        writer.write_collection(CollectionSpec("contracts"), [image])
        writer.write_inserted_ids("contracts", [bson.encode({"_id": inserted_id})])
        return writer.commit().name


def test_an_undo_that_does_not_read_back_as_the_backup_holds_fails(
    pair: Pair, capsys: Capsys
) -> None:
    """A `changes` backup is restored while someone else writes a document it puts back:
    the read-back sees it otherwise than the backup holds it and says so."""
    pair.configure(hook=False)
    pair.production.contracts.insert_many(contracts(3))
    name = undo_backup(pair, inserted_id=2)

    def edit() -> None:  # after the restore wrote its batch, before it reads it back
        pair.production.contracts.update_one({"_id": 1}, {"$set": {"status": "edited"}})

    with during(pair.root, {"write.batch": edit}) as held:
        result = syncd(capsys, pair.config, "backup", "restore", name, "--yes")

    assert held.acted == {"write.batch"}
    assert result.code == 1
    assert "contracts on 'production'" in result.err
    assert "1 document(s) do not read back as the backup holds them" in result.err
    assert "run the restore again" in result.err


def test_a_changes_backup_that_records_no_one_sync_is_not_undone(
    pair: Pair, capsys: Capsys
) -> None:
    """A before-image also listed as inserted by the sync: no sync writes that, so the
    backup cannot say what the target held; the restore writes nothing and says why."""
    pair.configure(hook=False)
    pair.production.contracts.insert_many(contracts(3))
    before = snapshot(pair.production)
    name = undo_backup(pair, inserted_id=1)

    result = syncd(capsys, pair.config, "backup", "restore", name, "--yes")

    assert result.code == 1
    assert f"backup {name}: contracts: 1 document(s) are listed both as before-images" in (
        result.err
    )
    assert "nothing was written" in result.err
    assert snapshot(pair.production) == before


# -- a first copy is read back ----------------------------------------------------------------


def test_a_target_edit_during_a_first_copy_is_never_taken_for_the_copy(
    pair: Pair, capsys: Capsys
) -> None:
    """A first copy is verified by reading the target back: a document edited on the target
    while the copy runs fails the verification, or (edited after the read-back) is drift
    for the next sync; either way it is named, never remembered as copied."""
    pair.configure(hook=False, before_sync="changes")
    pair.local.contracts.insert_many(contracts(10_000, pad=200))

    def edit() -> None:  # the first batch copied holds _id 0
        done = pair.production.contracts.update_one({"_id": 0}, {"$set": {"status": "edited"}})
        assert done.modified_count == 1

    with during(pair.root, {"write.batch": edit}) as held:
        first = syncd(capsys, pair.config, *PUSH)

    assert held.acted == {"write.batch"}
    assert "Traceback" not in first.text
    if first.code != 0:
        assert "contracts on 'production'" in first.err, first.err
        assert "1 document(s) differ from the source" in first.err, first.err
    second = syncd(capsys, pair.config, *PUSH)
    assert second.code == 3, second.text
    assert "contracts: changed on production since the last sync: 0" in second.err, second.err
    assert pair.production.contracts.find_one({"_id": 0})["status"] == "edited"


# -- reads behind backups are retried --------------------------------------------------------


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry, "FIRST_DELAY", 0.01)


@pytest.fixture
def proxy(server_production: Server) -> Iterator[FaultProxy]:
    with FaultProxy(server_production.host, server_production.port) as running:
        yield running


@pytest.fixture
def proxied(
    local_db: Database[Any],
    production_db: Database[Any],
    local_uri: str,
    proxy: FaultProxy,
    tmp_path: Path,
) -> Pair:
    uri = proxy.uri_for(production_db.name, **SHORT)
    return make_pair(local_db, production_db, local_uri, uri, tmp_path, hook=False)


BACKING_UP = "backup.write"  # held once a backup has its first documents on disk
# documents of ~1 KB a backup reads in two batches (of BATCH_BYTES): the second is read after
# the first is on disk, where the run is held
TWO_BATCHES = 3 * BATCH_BYTES // 2 // 1000
READING_BY_ID = "fetch.batch"  # held once the first batch of documents was read by _id


class Retried(logging.Handler):
    """Set once syncd logs that it retries a step after a transient error."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "transient error, retrying":
            self.seen.set()


@pytest.fixture
def retried() -> Iterator[Retried]:
    handler = Retried()
    logger = logging.getLogger("syncd.engine")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def outage_at(
    point: str, proxy: FaultProxy, retried: Retried, capsys: Capsys, pair: Pair, *args: str
) -> Outcome:
    """`syncd ARGS...`, held at `point` while every connection is cut and new ones refused
    (longer than the driver's own single retry); the link is back once syncd says it
    retries."""
    ended = threading.Event()

    def link_back() -> None:
        while not ended.is_set():
            if retried.seen.wait(0.01):
                proxy.refuse(False)
                return

    back = threading.Thread(target=link_back, daemon=True)
    with during(pair.root, {point: lambda: (proxy.refuse(True), proxy.drop_connections())}) as held:
        back.start()
        try:
            result = syncd(capsys, pair.config, *args)
        finally:
            ended.set()
            back.join(timeout=DEADLINE)
    assert held.acted == {point}
    return result


def test_a_backup_cut_while_reading_reads_the_collection_again(
    proxied: Pair, proxy: FaultProxy, retried: Retried, capsys: Capsys
) -> None:
    pair = proxied
    pair.production.contracts.insert_many(contracts(TWO_BATCHES, pad=1000))
    result = outage_at(BACKING_UP, proxy, retried, capsys, pair, "backup", "create", "production")

    assert result.code == 0, result.err
    assert "transient error, retrying" in result.err
    assert 'step="back up contracts (production)"' in result.err
    (saved,) = backup_contents(pair).values()
    assert saved == snapshot(pair.production)


def test_before_images_cut_while_reading_are_read_again(
    proxied: Pair, proxy: FaultProxy, retried: Retried, capsys: Capsys
) -> None:
    pair = proxied
    pair.configure(hook=False, before_sync="changes")
    pair.local.contracts.insert_many(contracts(3_000, pad=1000))
    assert syncd(capsys, pair.config, *PUSH).code == 0
    before = snapshot(pair.production)
    pair.local.contracts.update_many({}, {"$set": {"status": "signed"}})
    result = outage_at(READING_BY_ID, proxy, retried, capsys, pair, *PUSH)

    assert result.code == 0, result.err
    assert "transient error, retrying" in result.err
    assert 'step="read contracts by _id' in result.err
    (changes,) = [b for b in list_backups(pair.backups) if b.kind == "changes"]
    assert backup_contents(pair)[changes.name] == before
    assert snapshot(pair.production) == snapshot(pair.local)


def test_the_safety_backup_before_a_restore_survives_a_cut(
    proxied: Pair, proxy: FaultProxy, retried: Retried, capsys: Capsys
) -> None:
    pair = proxied
    pair.production.contracts.insert_many(contracts(TWO_BATCHES, pad=1000))
    made = syncd(capsys, pair.config, "backup", "create", "production")
    assert made.code == 0, made.err
    (first,) = [b.name for b in list_backups(pair.backups)]
    original = snapshot(pair.production)
    pair.production.contracts.update_many({}, {"$set": {"status": "edited"}})
    edited = snapshot(pair.production)
    result = outage_at(
        BACKING_UP, proxy, retried, capsys, pair, "backup", "restore", first, "--yes"
    )

    assert result.code == 0, result.err
    assert 'step="back up contracts (production)"' in result.err, result.err
    assert snapshot(pair.production) == original
    safety = next(b.name for b in list_backups(pair.backups) if b.name != first)
    assert backup_contents(pair)[safety] == edited
