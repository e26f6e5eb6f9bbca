"""Bad input through real syncs: a document at the 16 MB BSON limit, deeply nested documents,
collection names with dots and unicode, empty collections, views and system collections,
and a source collection dropped while the sync reads it. Where a backup could stumble on
the input, the test takes it through `backup create` and `backup restore` too.
"""

from __future__ import annotations

from typing import Any

import bson
import pytest
from bson.raw_bson import RawBSONDocument
from pymongo.database import Database

from syncd.backup import list_backups
from tests.engine_kit import (
    Outcome,
    Pair,
    backup_contents,
    collection_options,
    index_specs,
    snapshot,
    syncd,
    user_collections,
)
from tests.support.pause import during

Capsys = pytest.CaptureFixture[str]
PUSH = ("sync", "to_production", "--yes")
PULL = ("sync", "from_production", "--yes")
BSON_LIMIT = 16 * 1024 * 1024  # maxBsonObjectSize: MongoDB's and SecantusDB's
DROPPED_DOCS = 4_000  # four write batches (two for an update): the drop lands after the first


def ok(result: Outcome) -> Outcome:
    assert result.code == 0, result.err
    assert "Traceback" not in result.text
    return result


def doc_of_size(_id: Any, tag: str, size: int) -> RawBSONDocument:
    """{_id, tag, pad} encoded to exactly `size` bytes."""
    overhead = len(bson.encode({"_id": _id, "tag": tag, "pad": ""}))
    raw = bson.encode({"_id": _id, "tag": tag, "pad": "x" * (size - overhead)})
    assert len(raw) == size
    return RawBSONDocument(raw)


def nested(depth: int, leaf: Any) -> Any:
    """`depth` levels of alternating subdocuments and arrays around `leaf`."""
    value = leaf
    for level in range(depth - 1):
        value = {"l": value, "n": level} if level % 2 else [value, level]
    return value


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


def newest_backup(pair: Pair, endpoint: str) -> str:
    names = [b.name for b in list_backups(pair.backups) if b.endpoint == endpoint]
    assert names, f"no backup of {endpoint}"
    return names[0]


def test_a_document_at_the_16_mb_limit_syncs_backs_up_and_restores(
    pair: Pair, capsys: Capsys
) -> None:
    pair.local.big.insert_many([{"_id": i, "v": i} for i in range(5)])
    pair.local.big.insert_one(doc_of_size("huge", "first", BSON_LIMIT))

    ok(syncd(capsys, pair.config, *PUSH))  # a first copy: streamed
    first = snapshot(pair.production)
    assert first == snapshot(pair.local)
    assert len(first["big"][bson.encode({"_id": "huge"})]) == BSON_LIMIT

    pair.local.big.replace_one({"_id": "huge"}, doc_of_size("huge", "second", BSON_LIMIT))
    out = ok(syncd(capsys, pair.config, *PUSH)).out  # scanned, spooled, replaced, verified

    assert "1 to update" in out
    assert snapshot(pair.production) == snapshot(pair.local)
    before_sync = newest_backup(pair, "production")  # the 16 MB document, as it was
    assert backup_contents(pair)[before_sync]["big"] == first["big"]

    ok(syncd(capsys, pair.config, "backup", "restore", before_sync, "--yes"))

    assert snapshot(pair.production) == first


def test_90_level_nested_documents_travel_both_ways(pair: Pair, capsys: Capsys) -> None:
    docs = [{"_id": i, "tree": nested(90 - 1, {"leaf": i})} for i in range(20)]
    assert depth_of(docs[0]) == 90
    pair.local.trees.insert_many(docs)

    ok(syncd(capsys, pair.config, *PUSH))
    assert snapshot(pair.production) == snapshot(pair.local)

    pair.production.trees.replace_one({"_id": 3}, {"tree": nested(90 - 1, {"leaf": "edited"})})
    pair.production.trees.delete_one({"_id": 4})
    out = ok(syncd(capsys, pair.config, *PULL)).out

    assert "1 to update" in out and "1 to delete" in out
    assert snapshot(pair.local) == snapshot(pair.production)


DOTTED = "hr.vacation.requests"
UNICODE = "contratos_año"


def test_collection_names_with_dots_and_unicode_sync_back_up_and_restore(
    pair: Pair, capsys: Capsys
) -> None:
    for name in (DOTTED, UNICODE):
        pair.local[name].insert_many([{"_id": i, "who": f"empleado {i}"} for i in range(50)])
        pair.local[name].create_index("who", unique=True)

    ok(syncd(capsys, pair.config, *PUSH))
    pushed = snapshot(pair.production)
    assert pushed == snapshot(pair.local) and set(pushed) == {DOTTED, UNICODE}
    for name in (DOTTED, UNICODE):
        assert index_specs(pair.production[name]) == index_specs(pair.local[name])

    created = ok(syncd(capsys, pair.config, "backup", "create", "production"))
    name = newest_backup(pair, "production")
    assert name in created.out
    files = {p.name for p in (pair.backups / name / pair.production.name).iterdir()}
    assert {"hr.vacation.requests.bson.gz", "contratos_a%C3%B1o.bson.gz"} <= files  # mongodump's
    assert backup_contents(pair)[name] == pushed

    pair.production[DOTTED].delete_many({"_id": {"$lt": 10}})
    pair.production[UNICODE].drop_index("who_1")
    pair.production[UNICODE].update_many({}, {"$set": {"who": "nadie"}})
    ok(syncd(capsys, pair.config, "backup", "restore", name, "--yes"))

    assert snapshot(pair.production) == pushed
    for coll in (DOTTED, UNICODE):
        assert index_specs(pair.production[coll]) == index_specs(pair.local[coll])


def test_empty_collections_are_created_on_the_target_with_their_indexes(
    pair: Pair, capsys: Capsys
) -> None:
    pair.local.create_collection("no_indexes")
    pair.local.create_collection("with_indexes")
    pair.local.with_indexes.create_index("email", unique=True)
    pair.local.with_indexes.create_index([("org", 1), ("created_at", -1)], name="org_recent")

    ok(syncd(capsys, pair.config, *PUSH))

    assert user_collections(pair.production) == ["no_indexes", "with_indexes"]
    for name in ("no_indexes", "with_indexes"):
        assert pair.production[name].count_documents({}) == 0
        assert index_specs(pair.production[name]) == index_specs(pair.local[name])
        assert collection_options(pair.production, name) == collection_options(pair.local, name)
    assert "nothing to do" in ok(syncd(capsys, pair.config, *PUSH)).out

    ok(syncd(capsys, pair.config, "backup", "create", "production"))
    pair.production.drop_collection("with_indexes")
    ok(syncd(capsys, pair.config, "backup", "restore", newest_backup(pair, "production"), "--yes"))

    assert "with_indexes" in pair.production.list_collection_names()
    assert index_specs(pair.production.with_indexes) == index_specs(pair.local.with_indexes)


def source_with_a_view_and_a_system_collection(db: Database[Any]) -> None:
    db.users.insert_many([{"_id": i, "active": i % 2 == 0} for i in range(10)])
    db.command("create", "active_users", viewOn="users", pipeline=[{"$match": {"active": True}}])
    db["system.js"].insert_one({"_id": "total", "value": bson.Code("function () { return 1; }")})


def test_views_and_system_collections_are_skipped_with_a_note(pair: Pair, capsys: Capsys) -> None:
    source_with_a_view_and_a_system_collection(pair.local)

    result = ok(syncd(capsys, pair.config, *PUSH))

    assert "skipping active_users: a view on 'local' (mongodb://" in result.err
    assert "skipping system.js: a system collection; it is never synced" in result.err
    assert user_collections(pair.production) == ["users"]
    assert snapshot(pair.production) == snapshot(pair.local, ["users"])

    backup = ok(syncd(capsys, pair.config, "backup", "create", "local"))
    assert "skipping active_users" in backup.err and "skipping system.js" in backup.err
    assert list(backup_contents(pair)[newest_backup(pair, "local")]) == ["users"]


@pytest.mark.parametrize("named", ["active_users", "system.js"])
def test_a_view_or_system_collection_named_on_the_command_line_is_refused(
    pair: Pair, capsys: Capsys, named: str
) -> None:
    """An operator who asks for exactly that collection must not read "done" and find
    nothing copied: the run is refused (exit 3) with the reason, and nothing is written."""
    source_with_a_view_and_a_system_collection(pair.local)

    result = syncd(capsys, pair.config, *PUSH, "-C", named, "-C", "users")

    assert result.code == 3, result.text
    message = result.err.strip().splitlines()[-1]
    assert message.startswith(f"syncd: {named}: ")
    assert "never synced" in message
    assert "Traceback" not in result.text
    assert user_collections(pair.production) == []
    assert not (pair.state_dir / "backups").exists()


def fill(db: Database[Any], name: str, count: int, version: int = 1) -> None:
    for start in range(0, count, 5000):
        db[name].insert_many(
            [
                {"_id": i, "v": version, "pad": "x" * 200}
                for i in range(start, min(count, start + 5000))
            ]
        )


def sync_dropping_source(pair: Pair, capsys: Capsys) -> Outcome:
    """The push, held once its first batch reached the target while the source is dropped."""
    with during(pair.root, {"write.batch": lambda: pair.local.drop_collection("items")}) as held:
        result = syncd(capsys, pair.config, *PUSH)
    assert held.acted == {"write.batch"}  # the drop landed during the sync
    return result


@pytest.mark.parametrize("first_copy", [True, False], ids=["first-copy", "update"])
def test_a_source_collection_dropped_during_the_sync(
    pair: Pair, capsys: Capsys, first_copy: bool
) -> None:
    """Dropped once the target received the first batch: either the snapshot read before
    the drop is applied and verified, or the run fails cleanly naming the source. The next
    run sees the collection missing on the source, which counts as empty: the target's
    documents are deleted (after a backup), with no drift, and the collection itself is
    kept."""
    fill(pair.local, "items", DROPPED_DOCS if first_copy else DROPPED_DOCS // 2)
    pair.local.other.insert_many([{"_id": i} for i in range(10)])
    if not first_copy:  # the target holds v1: the source is scanned and spooled, then written
        ok(syncd(capsys, pair.config, *PUSH))
        pair.local.items.update_many({}, {"$set": {"v": 2}})
    read = snapshot(pair.local, ["items"])

    result = sync_dropping_source(pair, capsys)

    assert "Traceback" not in result.text
    if result.code == 0:
        assert "2/2 collections verified equal to the source" in result.out
        assert snapshot(pair.production, ["items"]) == read
    else:
        assert result.code == 1, result.text
        message = result.err.strip().splitlines()[-1]
        assert message.startswith("syncd: reading items on 'local' (mongodb://"), message
        assert "dropped or renamed while it was read" in message

    rerun = ok(syncd(capsys, pair.config, *PUSH))

    assert "0 drifted" in rerun.out and "backup before sync:" in rerun.out
    assert "items" in pair.production.list_collection_names()
    assert pair.production.items.count_documents({}) == 0
    assert snapshot(pair.production, ["other"]) == snapshot(pair.local)
    assert "nothing to do" in ok(syncd(capsys, pair.config, *PUSH)).out
