"""Masking personal data on the way to development (SPEC §4 "Collection policy"), on real
servers with the seed-shaped data set: a pull of `users` and `hr_employees` leaves no
original value of a masked field on the target; links between collections and unique
indexes hold; drift, the memory and change streams work on the masked result; a new key
masks every document anew without calling it drift; `mask_except` documents travel as
they are.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import bson
import pytest
from pymongo.errors import DuplicateKeyError

from tests.engine_kit import (
    Outcome,
    Pair,
    collection_state,
    index_specs,
    raw_collection,
    syncd,
    user_collections,
)
from tests.support.dataset import COLLECTIONS, load_seed_dataset

Capsys = pytest.CaptureFixture[str]
PULL = ("sync", "from_production")
KEY_ENV = "SYNCD_MASK_KEY"
KEY = "a-masking-key-for-tests-7f3c9b"  # noqa: S105 - a test's own key
ADMIN = "admin@valkyria.com"
RULES = f"""
- name: users
  flows: [from_production]
  mask: {{email: email, first_name: name, last_name: name, current_sign_in_ip: hash}}
  mask_except: {{field: email, values: [{ADMIN}]}}
- name: hr_employees
  flows: [from_production]
  mask:
    email: email
    full_name: name
    emergency_contact.name: name
    emergency_contact.phone: digits
    address.street: redact
    salary: null
"""
# rule -> (collection, path) of the seed's masked fields
ANYWHERE = [  # long, distinctive values: none may appear anywhere, not even inside a string
    ("users", "email"),
    ("users", "current_sign_in_ip"),
    ("hr_employees", "email"),
    ("hr_employees", "emergency_contact.phone"),
    ("hr_employees", "address.street"),
]
WHOLE = [  # names: a fake name may share a first name with a real one, never a whole value
    ("users", "first_name"),
    ("users", "last_name"),
    ("hr_employees", "full_name"),
    ("hr_employees", "emergency_contact.name"),
]


def configure(pair: Pair, monkeypatch: pytest.MonkeyPatch, key: str = KEY) -> None:
    pair.configure(collections=RULES, hook=False)
    with pair.config.open("a", encoding="utf-8") as config:
        config.write(f"masking:\n  key_env: {KEY_ENV}\n")
    monkeypatch.setenv(KEY_ENV, key)


@pytest.fixture
def seeded(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> Pair:
    load_seed_dataset(pair.production)
    configure(pair, monkeypatch)
    return pair


def pull(capsys: Capsys, pair: Pair, *args: str) -> Outcome:
    result = syncd(capsys, pair.config, *PULL, *args)
    assert result.code == 0, result.text
    return result


def plan_json(capsys: Capsys, pair: Pair, *args: str) -> dict[str, dict[str, Any]]:
    result = pull(capsys, pair, *args, "--dry-run", "--json")
    return {c["collection"]: c for c in json.loads(result.out)["collections"]}


def at(doc: Any, path: str) -> Any:
    for part in path.split("."):
        doc = doc.get(part) if isinstance(doc, dict) else None
    return doc


def originals(pair: Pair, fields: list[tuple[str, str]]) -> set[str]:
    """The production values of masked fields, but not the exempt user's (who travels
    unmasked in users)."""
    exempt = pair.production.users.find_one({"email": ADMIN}) or {}
    kept = {str(v) for v in exempt.values() if isinstance(v, str)}
    values = {
        str(at(doc, path))
        for name, path in fields
        for doc in pair.production[name].find()
        if isinstance(at(doc, path), str)
    }
    return values - kept - {ADMIN}


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def test_a_masked_pull_leaves_no_original_value_on_the_target(seeded: Pair, capsys: Capsys) -> None:
    pair = seeded
    anywhere, whole = originals(pair, ANYWHERE), originals(pair, WHOLE)
    assert len(anywhere) > 100 and len(whole) > 50  # the data set holds what we look for

    pull(capsys, pair)

    assert pair.local.users.count_documents({}) == pair.production.users.count_documents({})
    leaks = []
    for name in pair.local.list_collection_names():
        for raw in raw_collection(pair.local[name]).find():
            data = bytes(raw.raw)
            leaks += [(name, v) for v in anywhere if v.encode() in data]
            leaks += [(name, v) for v in set(strings(bson.decode(data))) & whole]
    assert not leaks, leaks[:5]
    assert pair.local.hr_employees.count_documents({"salary": {"$ne": None}}) == 0
    assert {e["address"]["street"] for e in pair.local.hr_employees.find()} == {"***"}


def test_the_same_email_masks_alike_in_every_collection_and_unique_indexes_hold(
    seeded: Pair, capsys: Capsys
) -> None:
    pair = seeded

    pull(capsys, pair)

    users = {u["_id"]: u for u in pair.local.users.find()}
    employees = list(pair.local.hr_employees.find())
    assert len(employees) == pair.production.hr_employees.count_documents({})
    for employee in employees:
        email = users[employee["user_id"]]["email"]
        if email != ADMIN:
            assert employee["email"] == email
            assert email.startswith("user.") and email.endswith("@example.invalid")
    emails = [u["email"] for u in users.values()]
    assert len(set(emails)) == len(emails)
    assert index_specs(pair.local.users)["email_1"].get("unique") is True
    with pytest.raises(DuplicateKeyError):
        pair.local.users.insert_one({"email": emails[5]})
    phones = [e["emergency_contact"]["phone"] for e in employees]
    originals_ = [e["emergency_contact"]["phone"] for e in pair.production.hr_employees.find()]
    assert len(set(phones)) == len(phones)  # digits: distinct stay distinct, length kept
    assert sorted(map(len, phones)) == sorted(map(len, originals_))


def test_mask_except_documents_travel_unmasked(seeded: Pair, capsys: Capsys) -> None:
    pair = seeded

    pull(capsys, pair)

    local, production = collection_state(pair.local.users), collection_state(pair.production.users)
    same = [key for key, raw in local.items() if production[key] == raw]
    assert len(same) == 1
    assert bson.decode(local[same[0]])["email"] == ADMIN


def test_a_second_masked_pull_writes_nothing_and_follows_change_streams(
    seeded: Pair, capsys: Capsys
) -> None:
    pair = seeded
    pull(capsys, pair)
    masked = {name: collection_state(pair.local[name]) for name in ("users", "hr_employees")}

    again = pull(capsys, pair)
    plan = plan_json(capsys, pair)
    full = pull(capsys, pair, "--full")

    assert "nothing to do" in again.out, again.out
    assert {c["mode"] for c in plan.values()} == {"changes"}
    assert all(c["inserts"] + c["updates"] + c["deletes"] + c["drift"] == 0 for c in plan.values())
    assert "nothing to do" in full.out, full.out
    assert {name: collection_state(pair.local[name]) for name in masked} == masked


def test_changes_found_by_change_streams_are_masked_too(seeded: Pair, capsys: Capsys) -> None:
    pair = seeded
    pull(capsys, pair)
    user = pair.production.users.find_one({"email": {"$ne": ADMIN}, "last_name": {"$exists": 1}})
    assert user is not None
    new = "nueva.direccion@valkyria.com"
    pair.production.users.update_one({"_id": user["_id"]}, {"$set": {"email": new}})
    pair.production.hr_employees.update_one({"user_id": user["_id"]}, {"$set": {"email": new}})

    plan = plan_json(capsys, pair)
    pull(capsys, pair)

    assert {name: (c["mode"], c["updates"]) for name, c in plan.items()} == {
        "users": ("changes", 1),
        "hr_employees": ("changes", 1),
    }
    local_user = pair.local.users.find_one({"_id": user["_id"]}) or {}
    local_employee = pair.local.hr_employees.find_one({"user_id": user["_id"]}) or {}
    assert local_user["email"] == local_employee["email"] != new
    assert local_user["email"].endswith("@example.invalid")
    for name in ("users", "hr_employees"):
        assert all(new.encode() not in raw for raw in collection_state(pair.local[name]).values())


def test_a_new_masking_key_masks_every_document_anew_without_drift(
    seeded: Pair, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    pair = seeded
    pull(capsys, pair)
    before = {u["_id"]: u["email"] for u in pair.local.users.find()}
    monkeypatch.setenv(KEY_ENV, "another-key-for-tests-1d2e")

    plan = plan_json(capsys, pair)
    result = pull(capsys, pair)
    after = {u["_id"]: u["email"] for u in pair.local.users.find()}
    settled = plan_json(capsys, pair)

    employees = pair.production.hr_employees.count_documents({})
    assert {name: (c["updates"], c["drift"]) for name, c in plan.items()} == {
        "users": (len(before) - 1, 0),  # all but the exempt user
        "hr_employees": (employees, 0),
    }
    assert all("the masking key changed" in c["full_read_reason"] for c in plan.values())
    assert "the masking key changed since the last sync" in result.text
    assert [k for k in before if before[k] == after[k]] == [
        u["_id"] for u in pair.local.users.find({"email": ADMIN})
    ]
    assert {c["mode"] for c in settled.values()} == {"changes"}
    assert all(c["updates"] == 0 for c in settled.values())


def test_the_masking_key_is_read_only_when_needed_and_never_shown(
    seeded: Pair, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    pair = seeded
    monkeypatch.delenv(KEY_ENV)
    missing = syncd(capsys, pair.config, *PULL)
    nothing_written = user_collections(pair.local) == []
    monkeypatch.setenv(KEY_ENV, KEY)
    pushed = syncd(capsys, pair.config, "sync", "to_production", "--dry-run")  # nothing masked
    pulled = pull(capsys, pair)
    status = syncd(capsys, pair.config, "status", "--json")

    assert missing.code == 1
    assert f"masking key: environment variable {KEY_ENV} is not set" in missing.err
    assert nothing_written
    assert pushed.code == 0, pushed.text
    for text in (missing.text, pushed.text, pulled.text, status.text):
        assert KEY not in text
    for path in pair.state_dir.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def test_every_collection_of_the_seed_still_travels_unmasked_when_not_named(
    seeded: Pair, capsys: Capsys
) -> None:
    """The policy touches only the collections it names: with a catch-all entry, the rest
    of the seed travels byte for byte."""
    pair = seeded
    pair.configure(collections=RULES + '- name: "*"\n  flows: [from_production]\n', hook=False)
    with pair.config.open("a", encoding="utf-8") as config:
        config.write(f"masking:\n  key_env: {KEY_ENV}\n")

    pull(capsys, pair)

    for name in set(COLLECTIONS) - {"users", "hr_employees"}:
        assert collection_state(pair.local[name]) == collection_state(pair.production[name]), name


def test_masking_a_collection_that_travelled_unmasked_rewrites_it_without_drift(
    pair: Pair, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_seed_dataset(pair.production)
    pair.configure(collections="- name: users\n  flows: [from_production]\n", hook=False)
    pull(capsys, pair)
    configure(pair, monkeypatch)

    plan = plan_json(capsys, pair, "-C", "users")
    result = pull(capsys, pair, "-C", "users")

    users = plan["users"]
    expected = ("full", users["source_docs"] - 1, 0)  # all but the exempt user
    assert (users["mode"], users["updates"], users["drift"]) == expected
    assert "the mask rules and the masking key changed" in users["full_read_reason"]
    assert "backup before sync" in result.out  # the unmasked copy is kept in the backup
    emails = {u["email"] for u in pair.local.users.find()}
    assert emails & originals(pair, [("users", "email")]) == set()


def test_a_masked_and_filtered_collection_follows_documents_out_of_the_filter(
    seeded: Pair, capsys: Capsys
) -> None:
    pair = seeded
    pair.configure(
        collections=RULES.replace(
            "- name: hr_employees\n",
            "- name: hr_employees\n  filter: {contract_type: indefinido}\n",
        ),
        hook=False,
    )
    with pair.config.open("a", encoding="utf-8") as config:
        config.write(f"masking:\n  key_env: {KEY_ENV}\n")
    production = pair.production.hr_employees
    matching = {e["_id"] for e in production.find({"contract_type": "indefinido"})}
    pull(capsys, pair, "-C", "hr_employees")
    leaving = sorted(matching)[0]
    production.update_one({"_id": leaving}, {"$set": {"contract_type": "honorarios"}})
    production.update_one({"_id": sorted(matching)[1]}, {"$set": {"email": "otra@valkyria.com"}})

    plan = plan_json(capsys, pair, "-C", "hr_employees")["hr_employees"]
    pull(capsys, pair, "-C", "hr_employees")

    assert (plan["mode"], plan["updates"], plan["deletes"]) == ("changes", 1, 1)
    local = {e["_id"]: e for e in pair.local.hr_employees.find()}
    assert set(local) == matching - {leaving}
    assert all(e["email"].endswith("@example.invalid") for e in local.values())


def test_verify_and_diff_compare_the_masked_result(seeded: Pair, capsys: Capsys) -> None:
    """`syncd verify` and `syncd diff` read both sides as the sync does: a masked pull
    verifies equal, and a pending change shows the masked value, never the original."""
    pair = seeded
    pull(capsys, pair)
    user = pair.production.users.find_one({"email": {"$ne": ADMIN}})
    assert user is not None
    new = "cambiada@valkyria.com"

    equal = syncd(capsys, pair.config, "verify", "from_production")
    pair.production.users.update_one({"_id": user["_id"]}, {"$set": {"email": new}})
    different = syncd(capsys, pair.config, "verify", "from_production", "--json")
    diff = syncd(capsys, pair.config, "diff", "from_production", "-C", "users", "--json")

    assert equal.code == 0, equal.text
    assert different.code == 1, different.text
    report = {c["name"]: c for c in json.loads(different.out)["collections"]}
    assert (report["users"]["different"], report["hr_employees"]["equal"]) == (1, True)
    assert new not in diff.text and diff.code == 0, diff.text
    (document,) = json.loads(diff.out)["collections"][0]["documents"]
    (changed,) = document["fields"]
    assert changed["path"] == "email" and "@example.invalid" in changed["source"]
