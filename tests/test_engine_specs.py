"""Indexes and collection options are made equal on the target: unique, partial, TTL,
compound with directions, collation; validator, capped, collection collation. What
cannot change in place is refused with a clear message and nothing written."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import ASCENDING, DESCENDING, IndexModel

from tests.engine_kit import (
    Pair,
    collection_options,
    collection_uuid,
    index_specs,
    snapshot,
    syncd,
)

Capsys = pytest.CaptureFixture[str]
PUSH = ("sync", "to_production", "--yes")
VALIDATOR = {"$jsonSchema": {"bsonType": "object", "required": ["email"]}}
INDEXES = [
    IndexModel("email", unique=True),
    IndexModel(
        "reset_password_token",
        unique=True,
        partialFilterExpression={"reset_password_token": {"$type": "string"}},
    ),
    IndexModel("expires_at", expireAfterSeconds=3600),
    IndexModel([("organization_id", ASCENDING), ("created_at", DESCENDING)], name="by_org"),
    IndexModel("last_name", collation={"locale": "es", "strength": 2}, name="name_ci"),
    IndexModel("nickname", sparse=True),
]


def users(n: int = 10) -> list[dict[str, Any]]:
    return [
        {"_id": i, "email": f"u{i}@valkyria.com", "reset_password_token": None, "n": i}
        for i in range(n)
    ]


def push(pair: Pair, capsys: Capsys, *extra: str) -> str:
    result = syncd(capsys, pair.config, *PUSH, *extra)
    assert result.code == 0, result.err
    return result.out


def specs_equal(pair: Pair, name: str) -> None:
    assert index_specs(pair.production[name]) == index_specs(pair.local[name])
    assert collection_options(pair.production, name) == collection_options(pair.local, name)


def test_indexes_and_options_of_a_new_collection(pair: Pair, capsys: Capsys) -> None:
    pair.local.create_collection("users", validator=VALIDATOR)
    pair.local.users.insert_many(users())
    pair.local.users.create_indexes(INDEXES)
    pair.local.create_collection("events", capped=True, size=64 * 1024, max=500)
    pair.local.events.insert_many([{"_id": i} for i in range(20)])
    pair.local.create_collection("contracts", collation={"locale": "es"})
    pair.local.contracts.insert_one({"_id": 1, "title": "Árbol"})

    push(pair, capsys)

    for name in ("users", "events", "contracts"):
        specs_equal(pair, name)
    assert collection_options(pair.production, "events")["capped"] is True
    assert snapshot(pair.production) == snapshot(pair.local)


def test_index_and_validator_changes_on_an_existing_collection(pair: Pair, capsys: Capsys) -> None:
    pair.local.create_collection("users", validator=VALIDATOR)
    pair.local.users.insert_many(users())
    pair.local.users.create_indexes(INDEXES)
    push(pair, capsys)
    uuid = collection_uuid(pair.production, "users")

    pair.local.users.drop_index("email_1")  # removed on the source
    pair.local.users.drop_index("expires_at_1")
    pair.local.users.create_index("expires_at", expireAfterSeconds=60)  # TTL changed
    pair.local.users.create_index([("n", DESCENDING), ("email", ASCENDING)], name="n_email")
    pair.local.users.drop_index("by_org")  # the same keys under another name
    pair.local.users.create_index(
        [("organization_id", ASCENDING), ("created_at", DESCENDING)], name="org_recent"
    )
    new_validator = {"$jsonSchema": {"bsonType": "object", "required": ["email", "n"]}}
    pair.local.command({"collMod": "users", "validator": new_validator})
    pair.local.users.insert_one({"_id": 99, "email": "u1@valkyria.com", "n": 99})  # dup email

    out = push(pair, capsys)

    specs_equal(pair, "users")
    assert "email_1" not in index_specs(pair.production.users)
    assert "by_org" not in index_specs(pair.production.users)
    assert index_specs(pair.production.users)["expires_at_1"]["expireAfterSeconds"] == 60
    assert snapshot(pair.production) == snapshot(pair.local)
    assert collection_uuid(pair.production, "users") == uuid  # changed in place, not rebuilt
    assert "1 to insert" in out


def test_an_index_only_the_target_has_is_dropped(pair: Pair, capsys: Capsys) -> None:
    pair.local.users.insert_many(users())
    push(pair, capsys)
    pair.production.users.create_index("n", unique=True, name="someone_added_this")
    pair.local.users.update_many({}, {"$set": {"n": 0}})  # would break that unique index

    push(pair, capsys)

    specs_equal(pair, "users")
    assert snapshot(pair.production) == snapshot(pair.local)


def test_a_unique_value_moving_between_documents_is_written(pair: Pair, capsys: Capsys) -> None:
    pair.local.users.insert_many(users(3))
    pair.local.users.create_index("email", unique=True)
    push(pair, capsys)
    # u0 takes u1's address and u1 takes a new one: order inside a batch must not matter.
    pair.local.users.update_one({"_id": 1}, {"$set": {"email": "new@valkyria.com"}})
    pair.local.users.update_one({"_id": 0}, {"$set": {"email": "u1@valkyria.com"}})
    pair.local.users.delete_one({"_id": 2})
    pair.local.users.insert_one({"_id": 3, "email": "u2@valkyria.com"})

    push(pair, capsys)

    assert snapshot(pair.production) == snapshot(pair.local)


@pytest.mark.parametrize(
    ("on_local", "on_production", "option"),
    [
        ({}, {"capped": True, "size": 64 * 1024}, "capped"),
        ({"collation": {"locale": "fr"}}, {}, "collation"),
    ],
)
def test_an_option_that_cannot_change_in_place_is_refused(
    pair: Pair,
    capsys: Capsys,
    on_local: dict[str, Any],
    on_production: dict[str, Any],
    option: str,
) -> None:
    pair.local.create_collection("events", **on_local)
    pair.local.events.insert_many([{"_id": i} for i in range(5)])
    pair.local.other.insert_one({"_id": 1})
    pair.production.create_collection("events", **on_production)
    before = snapshot(pair.production), index_specs(pair.production.events)

    result = syncd(capsys, pair.config, *PUSH)

    assert result.code == 3
    assert "events" in result.err and option in result.err
    assert "cannot be changed in place" in result.err
    assert (snapshot(pair.production), index_specs(pair.production.events)) == before
    assert "other" not in pair.production.list_collection_names()
