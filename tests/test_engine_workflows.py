"""The seed's workflows A-D end to end through `syncd sync` on two real servers: push with
the password reset, pull, a production edit that stops the push until pulled, one collection."""

from __future__ import annotations

from typing import Any

import bcrypt
import pytest
from bson import ObjectId, decode
from pymongo.database import Database

from tests.engine_kit import (
    HOOK_USERS,
    RESET_PASSWORD,
    Pair,
    backup_names,
    snapshot,
    syncd,
)
from tests.support.dataset import COLLECTIONS, load_seed_dataset

Capsys = pytest.CaptureFixture[str]
PAIR_RESET_PASSWORDS = True  # the `pair` fixture pushes with the password hook
PUSHED = [c for c in COLLECTIONS if c != "audit_events"]  # audit_events is pull-only


def push_seed(pair: Pair, capsys: Capsys) -> None:
    """The seed data on local, pushed once: production in step, the sync memory in place."""
    load_seed_dataset(pair.local)
    first = syncd(capsys, pair.config, "sync", "to_production", "--yes")
    assert first.code == 0, first.err


def both_seeded(pair: Pair, capsys: Capsys) -> None:
    """Local and production equal (the team kept them in step by hand), then a first pull:
    nothing to copy, but syncd now knows both sides."""
    load_seed_dataset(pair.local)
    load_seed_dataset(pair.production)
    first = syncd(capsys, pair.config, "sync", "from_production")
    assert first.code == 0, first.err
    assert "nothing to do" in first.out


def pull_seed(pair: Pair, capsys: Capsys) -> None:
    """The seed data on production, pulled once by a new developer."""
    load_seed_dataset(pair.production)
    first = syncd(capsys, pair.config, "sync", "from_production")
    assert first.code == 0, first.err


def password_of(db: Database[Any], email: str) -> str:
    user = db.users.find_one({"email": email})
    assert user is not None, email
    return str(user["encrypted_password"])


def without_hook_fields(state: dict[bytes, bytes], db: Database[Any]) -> dict[bytes, bytes]:
    """users minus the documents the password hook rewrites."""
    reset_ids = {u["_id"] for u in db.users.find({"email": {"$in": list(HOOK_USERS)}})}
    return {k: v for k, v in state.items() if decode(k)["_id"] not in reset_ids}


def test_workflow_a_push_after_local_edits_then_passwords_are_reset(
    pair: Pair, capsys: Capsys
) -> None:
    push_seed(pair, capsys)
    template = pair.local.templates.find_one(sort=[("_id", 1)])
    assert template is not None
    pair.local.templates.update_one({"_id": template["_id"]}, {"$set": {"version": 99}})
    pair.local.departments.insert_one({"_id": ObjectId(), "name": "Compliance", "code": "COM-9"})
    gone = pair.local.content_documents.find_one(sort=[("_id", -1)])
    assert gone is not None
    pair.local.content_documents.delete_one({"_id": gone["_id"]})
    local_hash = password_of(pair.local, HOOK_USERS[0])

    result = syncd(capsys, pair.config, "sync", "to_production", "--yes")

    assert result.code == 0, result.err
    assert "0 drifted" in result.out
    assert "reset the password of 3 of 3 users" in result.out
    local, production = snapshot(pair.local, PUSHED), snapshot(pair.production, PUSHED)
    for name in PUSHED:
        if name != "users":
            assert production[name] == local[name], name
    assert without_hook_fields(production["users"], pair.production) == without_hook_fields(
        local["users"], pair.local
    )
    assert pair.production.templates.find_one({"_id": template["_id"]})["version"] == 99
    assert pair.production.departments.find_one({"name": "Compliance"}) is not None
    assert pair.production.content_documents.find_one({"_id": gone["_id"]}) is None
    assert "audit_events" not in pair.production.list_collection_names()
    for email in HOOK_USERS:
        hashed = password_of(pair.production, email)
        assert hashed.startswith("$2a$"), "Devise needs the $2a$ prefix"
        assert bcrypt.checkpw(RESET_PASSWORD.encode(), hashed.encode())
    assert password_of(pair.local, HOOK_USERS[0]) == local_hash  # the hook writes the target


def test_workflow_b_pull_makes_local_equal_to_production(pair: Pair, capsys: Capsys) -> None:
    pull_seed(pair, capsys)
    assert snapshot(pair.local) == snapshot(pair.production)
    pair.production.users.insert_one({"_id": ObjectId(), "email": "nuevo@valkyria.com"})
    pair.production.audit_events.insert_one({"_id": ObjectId(), "action": "create"})
    pair.production.legal_contracts.update_many({}, {"$set": {"status": "signed"}})
    pair.production.roles.delete_one({"name": "manager"})

    result = syncd(capsys, pair.config, "sync", "from_production")

    assert result.code == 0, result.err
    assert "0 drifted" in result.out
    assert snapshot(pair.local) == snapshot(pair.production)
    assert pair.local.users.find_one({"email": "nuevo@valkyria.com"}) is not None
    assert pair.local.roles.find_one({"name": "manager"}) is None


def test_workflow_c_production_edit_refuses_the_push_until_pulled(
    pair: Pair, capsys: Capsys
) -> None:
    both_seeded(pair, capsys)
    edited = pair.production.users.find_one({"email": {"$nin": list(HOOK_USERS)}})
    assert edited is not None
    pair.production.users.update_one({"_id": edited["_id"]}, {"$set": {"first_name": "Admin"}})
    before = snapshot(pair.production)
    backups_before = backup_names(pair)

    refused = syncd(capsys, pair.config, "sync", "to_production", "--yes")

    assert refused.code == 3
    assert "users" in refused.err
    assert str(edited["_id"]) in refused.err
    assert snapshot(pair.production) == before
    assert backup_names(pair) == backups_before

    pulled = syncd(capsys, pair.config, "sync", "from_production")
    assert pulled.code == 0, pulled.err
    assert pair.local.users.find_one({"_id": edited["_id"]})["first_name"] == "Admin"
    pair.local.templates.update_many({}, {"$set": {"category": "legal"}})
    pushed = syncd(capsys, pair.config, "sync", "to_production", "--yes")

    assert pushed.code == 0, pushed.err
    assert pair.production.users.find_one({"_id": edited["_id"]})["first_name"] == "Admin"
    assert pair.production.templates.count_documents({"category": {"$ne": "legal"}}) == 0


def test_workflow_d_one_collection_only(pair: Pair, capsys: Capsys) -> None:
    pull_seed(pair, capsys)
    pair.production.users.update_many({}, {"$set": {"locale": "en"}})
    pair.local.templates.update_many({}, {"$set": {"active": False}})
    local_templates = snapshot(pair.local, ["templates"])

    pull = syncd(capsys, pair.config, "sync", "from_production", "-C", "users")

    assert pull.code == 0, pull.err
    assert "1 collections" in pull.out
    assert snapshot(pair.local, ["users"]) == snapshot(pair.production, ["users"])
    assert snapshot(pair.local, ["templates"]) == local_templates
    production_users = snapshot(pair.production, ["users"])

    push = syncd(capsys, pair.config, "sync", "to_production", "-C", "templates", "--yes")

    assert push.code == 0, push.err
    assert snapshot(pair.production, ["templates"]) == local_templates
    after = snapshot(pair.production, ["users"])["users"]
    # users did not travel; only the flow's password hook touched its three accounts
    assert without_hook_fields(after, pair.production) == without_hook_fields(
        production_users["users"], pair.production
    )


def test_a_sync_with_nothing_to_copy_still_remembers_both_sides(pair: Pair, capsys: Capsys) -> None:
    both_seeded(pair, capsys)
    pair.local.templates.update_many({}, {"$set": {"category": "rrhh"}})

    result = syncd(capsys, pair.config, "sync", "to_production", "--yes")

    assert result.code == 0, result.err
    assert "0 drifted" in result.out
    assert snapshot(pair.production, ["templates"]) == snapshot(pair.local, ["templates"])


def test_second_push_after_the_password_hook_finds_no_drift(pair: Pair, capsys: Capsys) -> None:
    load_seed_dataset(pair.local)
    assert syncd(capsys, pair.config, "sync", "to_production", "--yes").code == 0

    again = syncd(capsys, pair.config, "sync", "to_production", "--yes")
    pulled = syncd(capsys, pair.config, "sync", "from_production", "--dry-run")

    assert again.code == 0, again.err
    assert "0 drifted" in again.out
    assert pulled.code == 0, pulled.err
    assert "0 drifted" in pulled.out
    for email in HOOK_USERS:
        assert bcrypt.checkpw(RESET_PASSWORD.encode(), password_of(pair.production, email).encode())
