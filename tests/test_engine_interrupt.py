"""A sync cut short is safe to run again: `syncd sync` runs as a real process and is
SIGKILLed while held after its first batch of writes (a pause point, `syncd/pause.py`); the
next run converges with no manual clean-up, no duplicate-key error and no drift."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.database import Database

from tests.engine_kit import Pair, snapshot, start_syncd, syncd
from tests.support.pause import Holds, kill_at

Capsys = pytest.CaptureFixture[str]
PUSH = ("sync", "to_production", "--yes")
DOCS = 10_000  # about 10 write batches: room to be killed part-way
# step 2: these, then again the first batch the killed run wrote (1,000): under a quarter of
# the collection in all, so the re-run is found by change streams
CHANGED = 1_200
WRITTEN = "write.batch"  # held, then killed, after the first batch reached the target


def fill(db: Database[Any], count: int, version: int = 1) -> None:
    pad = "x" * 200
    batch = 5000
    for start in range(0, count, batch):
        db.items.insert_many(
            [{"_id": i, "v": version, "pad": pad} for i in range(start, min(count, start + batch))]
        )


@pytest.mark.slow
@pytest.mark.usefixtures("short_lease")  # the killed run's lease expires in seconds
def test_a_killed_sync_converges_on_the_next_run(pair: Pair, capsys: Capsys) -> None:
    fill(pair.local, DOCS)
    target = pair.production.items

    # 1. the first push, into an empty target, killed while inserting
    holds = Holds.at(pair.root, WRITTEN)
    proc = start_syncd(pair, pair.root / "first.log", *PUSH, holds=holds)
    kill_at(proc, holds, WRITTEN)
    assert 0 < target.count_documents({}) < DOCS, "killed mid-way"

    rerun = syncd(capsys, pair.config, *PUSH)

    assert rerun.code == 0, rerun.err
    assert "took over the write lease of 'production'" in rerun.err  # the killed run's
    assert "0 drifted" in rerun.out
    assert "duplicate key" not in rerun.text.lower()
    assert snapshot(pair.production) == snapshot(pair.local)
    assert list((pair.state_dir / "tmp").iterdir()) == []  # the killed run's scratch is gone

    # 2. an incremental push (found by change streams) replacing a fifth of the documents,
    # with the sync memory in place, killed mid-way
    settle = syncd(capsys, pair.config, *PUSH)  # past the first copy's own events
    assert settle.code == 0, settle.err
    changed = {"_id": {"$lt": CHANGED}}
    pair.local.items.update_many(changed, {"$set": {"v": 2}})
    holds = Holds.at(pair.root, WRITTEN)
    proc = start_syncd(pair, pair.root / "second.log", *PUSH, holds=holds)
    kill_at(proc, holds, WRITTEN)
    assert target.count_documents({"v": 1, **changed}) > 0, "killed mid-way"
    # the source moves on before the re-run: what the killed run wrote (v 2) is now neither
    # the source (v 3) nor the memory (v 1), yet it is syncd's own write, not drift
    written = [d["_id"] for d in target.find({"v": 2}, {"_id": 1})]
    pair.local.items.update_many({"_id": {"$in": written}}, {"$set": {"v": 3}})

    rerun = syncd(capsys, pair.config, *PUSH)

    assert rerun.code == 0, rerun.err
    assert "took over the write lease of 'production'" in rerun.err  # the killed run's
    assert "0 drifted" in rerun.out
    assert "reading both sides whole" not in rerun.err  # found by change streams
    assert snapshot(pair.production) == snapshot(pair.local)

    # 3. and a real edit on the target is still drift, intents or not
    pair.production.items.update_one({"_id": 7}, {"$set": {"v": "edited in production"}})
    pair.local.items.update_one({"_id": 7}, {"$set": {"v": 4}})
    refused = syncd(capsys, pair.config, *PUSH)
    assert refused.code == 3, refused.err
    assert "items: changed on production since the last sync: 7" in refused.err
