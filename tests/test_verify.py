"""`syncd verify FLOW`: both sides compared now, document by document, indexes and options;
exit 0 equal, 1 different, with per-collection counts and sample ids; nothing written to
either endpoint; the last result shows in `syncd status`."""

from __future__ import annotations

import json
from typing import Any

import bson
import pytest

from syncd.compare import verify_flow
from syncd.config import load_config
from tests.engine_kit import HOOK_USERS, RESET_PASSWORD, Pair, index_specs, snapshot, syncd

Capsys = pytest.CaptureFixture[str]
PUSH = ("sync", "to_production", "--yes")


def contracts(n: int = 30) -> list[dict[str, Any]]:
    return [{"_id": i, "number": f"CTR-{i:03d}", "status": "draft"} for i in range(n)]


@pytest.fixture
def pushed(pair: Pair, capsys: Capsys) -> Pair:
    pair.configure(hook=False)
    pair.local.contracts.insert_many(contracts())
    pair.local.users.insert_many(
        [{"_id": bson.ObjectId(), "email": f"u{i}@x.com"} for i in range(5)]
    )
    pair.local.users.create_index("email", unique=True)
    first = syncd(capsys, pair.config, *PUSH)
    assert first.code == 0, first.err
    return pair


def everything(pair: Pair) -> tuple[Any, ...]:
    """Both databases byte for byte, their collection lists (a lease would be a collection)
    and their indexes."""
    return (
        snapshot(pair.local),
        snapshot(pair.production),
        sorted(pair.local.list_collection_names()),
        sorted(pair.production.list_collection_names()),
        index_specs(pair.production.users),
    )


def test_equal_sides_verify_with_exit_0_and_nothing_written(pushed: Pair, capsys: Capsys) -> None:
    pair = pushed
    before = everything(pair)

    result = syncd(capsys, pair.config, "verify", "to_production")

    assert result.code == 0, result.err
    assert "2 collections compared" in result.out and "0 differ" in result.out
    assert result.out.rstrip().endswith(
        "equal: both sides hold the same documents, indexes and options"
    )
    assert everything(pair) == before
    status = syncd(capsys, pair.config, "status", "to_production")
    assert "last verify: 20" in status.out and " equal" in status.out


def test_differences_are_counted_with_sample_ids_and_exit_1(pushed: Pair, capsys: Capsys) -> None:
    pair = pushed
    pair.production.contracts.delete_one({"_id": 4})  # missing on production
    pair.production.contracts.insert_one({"_id": 99, "number": "only in production"})  # extra
    pair.production.contracts.update_one({"_id": 7}, {"$set": {"status": "signed"}})  # different
    pair.production.contracts.update_one({"_id": 8}, {"$set": {"status": 1}})
    pair.production.users.drop_index("email_1")
    before = everything(pair)

    text = syncd(capsys, pair.config, "verify", "to_production")
    as_json = syncd(capsys, pair.config, "verify", "to_production", "--json")

    assert text.code == 1 and as_json.code == 1
    assert "  contracts: missing on production: 4\n" in text.out
    assert "  contracts: only on production: 99\n" in text.out
    assert "  contracts: different: 7, 8\n" in text.out
    assert "  users: index email_1 missing on production\n" in text.out
    assert "2 differ" in text.out
    row = next(line for line in text.out.splitlines() if line.startswith("contracts "))
    assert row.split() == ["contracts", "30", "30", "1", "1", "2", "-"]
    report = json.loads(as_json.out)
    assert report["result"] == "different"
    by_name = {c["name"]: c for c in report["collections"]}
    assert by_name["contracts"]["different_ids"] == ["7", "8"]
    assert by_name["users"]["specs"] == ["index email_1 missing on production"]
    assert by_name["users"]["missing"] == 0
    assert everything(pair) == before
    status = syncd(capsys, pair.config, "status", "to_production", "--json")
    last = json.loads(status.out)["flows"]["to_production"]["last_verify"]
    assert last["result"] == "different" and last["mismatched"] == 4
    assert last["collections_differ"] == ["contracts", "users"]


def test_sample_ids_are_capped_at_ten_with_the_rest_counted(pushed: Pair, capsys: Capsys) -> None:
    pair = pushed
    pair.production.contracts.update_many({"_id": {"$lt": 25}}, {"$set": {"status": "x"}})

    result = syncd(capsys, pair.config, "verify", "to_production", "-C", "contracts")

    assert result.code == 1
    assert "  contracts: different: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 and 15 more\n" in result.out
    assert "1 collections compared" in result.out


def test_a_collection_outside_the_flow_policy_is_refused(pushed: Pair, capsys: Capsys) -> None:
    pair = pushed
    pair.local.audit_events.insert_one({"_id": 1})

    result = syncd(capsys, pair.config, "verify", "to_production", "-C", "audit_events")

    assert result.code == 3
    assert "audit_events: not allowed on flow 'to_production'" in result.err


def test_a_view_of_each_side_is_what_is_compared(pushed: Pair) -> None:
    """The plug point for a flow's filters and masks: documents as a sync would see them."""
    pair = pushed
    pair.production.contracts.update_many({}, {"$set": {"reviewed": True}})
    config = load_config(pair.config)

    def without_reviewed(raw: bytes) -> bytes | None:
        doc = bson.decode(raw)
        doc.pop("reviewed", None)
        return None if doc["_id"] == 0 else bson.encode(doc)

    def views(name: str) -> tuple[Any, Any]:
        return (without_reviewed, without_reviewed) if name == "contracts" else (None, None)

    plain = verify_flow(config, "to_production", ["contracts"])
    viewed = verify_flow(config, "to_production", ["contracts"], views=views)

    assert plain.collections[0].different == 30
    assert viewed.equal
    assert viewed.collections[0].source_count == 29  # _id 0 left out on both sides


def test_the_password_a_push_hook_resets_is_not_a_difference(
    pair: Pair, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNCD_RESET_PASSWORD", RESET_PASSWORD)
    pair.configure(hook=True)
    users = [*HOOK_USERS, "someone@valkyria.com"]
    pair.local.users.insert_many(
        [
            {"_id": i, "email": e, "encrypted_password": f"$2a$04$local{i}"}
            for i, e in enumerate(users)
        ]
    )
    assert syncd(capsys, pair.config, *PUSH).code == 0
    reset = pair.production.users.find_one({"email": HOOK_USERS[0]})
    assert reset is not None and reset["encrypted_password"] != "$2a$04$local0"

    equal = syncd(capsys, pair.config, "verify", "to_production")
    pair.production.users.update_one({"_id": 3}, {"$set": {"encrypted_password": "other"}})
    pair.production.users.update_one({"_id": 0}, {"$set": {"name": "renamed"}})
    different = syncd(capsys, pair.config, "verify", "to_production")

    assert equal.code == 0, equal.out
    assert different.code == 1
    assert "  users: different: 0, 3\n" in different.out
