"""`syncd diff FLOW`: per document a sync would touch, and per drifted document, the
operation and the fields that differ with both sides' values (relaxed Extended JSON,
shortened); hook password fields hidden; `--id`, `--limit`, `-C`, `--json`; nothing
written anywhere."""

from __future__ import annotations

import json
from typing import Any

import pytest
from bson import Int64, ObjectId

from tests.engine_kit import Pair, snapshot, syncd, tree

Capsys = pytest.CaptureFixture[str]
PUSH = ("sync", "to_production", "--yes")
OID = ObjectId("65a0f1c2e4b0a1b2c3d4e5f6")


def contracts() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = [
        {
            "_id": i,
            "number": f"CTR-{i:03d}",
            "status": "draft",
            "address": {"lines": ["Av. Larco 101", "Miraflores"], "city": "Lima"},
        }
        for i in range(10)
    ]
    docs.append({"_id": OID, "number": "by object id", "status": "draft"})
    docs.append({"_id": "ctr-x", "number": "by string id", "status": "draft"})
    return docs


@pytest.fixture
def pushed(pair: Pair, capsys: Capsys) -> Pair:
    pair.configure(hook=False)
    pair.local.contracts.insert_many(contracts())
    first = syncd(capsys, pair.config, *PUSH)
    assert first.code == 0, first.err
    return pair


def untouched(pair: Pair) -> tuple[Any, ...]:
    return snapshot(pair.local), snapshot(pair.production), tree(pair.state_dir)


def test_a_drifted_document_shows_its_differing_fields_from_both_sides(
    pushed: Pair, capsys: Capsys
) -> None:
    pair = pushed
    pair.production.contracts.update_one(
        {"_id": 3},
        {"$set": {"status": "signed in production", "address.lines.1": "San Isidro"}},
    )
    pair.local.contracts.update_one({"_id": 5}, {"$set": {"status": "reviewed", "n": Int64(7)}})
    pair.local.contracts.insert_one({"_id": 70, "number": "new"})
    pair.local.contracts.delete_one({"_id": 6})
    before = untouched(pair)

    result = syncd(capsys, pair.config, "diff", "to_production")

    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].startswith("to_production: local -> production, 1 collections: 1 to insert")
    drifted = lines.index(
        "contracts 3: update, drifted: changed on production since the last sync "
        "(drift: abort refuses the run)"
    )
    assert lines[drifted + 1 : drifted + 3] == [
        '    status: local "draft" | production "signed in production"',
        '    address.lines[1]: local "Miraflores" | production "San Isidro"',
    ]
    assert drifted == 1  # drifted documents come first
    replaced = lines.index("contracts 5: update, differs")
    assert lines[replaced + 1 : replaced + 3] == [
        '    status: local "reviewed" | production "draft"',
        "    n: local 7 | production (absent)",
    ]
    assert "contracts 70: insert, not on production" in lines
    assert "contracts 6: delete, only on production" in lines
    assert untouched(pair) == before


def test_ids_as_object_id_number_or_string_and_the_limit(pushed: Pair, capsys: Capsys) -> None:
    pair = pushed
    pair.local.contracts.update_many({}, {"$set": {"status": "x" * 200}})

    picked = syncd(
        capsys,
        pair.config,
        "diff",
        "to_production",
        "--id",
        str(OID),
        "--id",
        "4",
        "--id",
        "ctr-x",
        "--id",
        "404",
    )
    limited = syncd(capsys, pair.config, "diff", "to_production", "--limit", "2")

    assert picked.code == 0, picked.err
    heads = [line for line in picked.out.splitlines() if line.startswith("contracts ")]
    assert sorted(heads) == [
        "contracts 4: update, differs",
        f"contracts {OID}: update, differs",
        "contracts ctr-x: update, differs",
    ]
    assert "--id 404: not among the documents this sync would change or found drifted" in picked.out
    status = next(line for line in picked.out.splitlines() if line.startswith("    status"))
    assert status == f'    status: local "{"x" * 78}… | production "draft"'
    assert limited.code == 0
    assert sum(line.startswith("contracts ") for line in limited.out.splitlines()) == 2
    assert "contracts: 10 more document(s) not shown" in limited.out
    assert "2 document(s) shown, 10 more: --limit N shows more" in limited.out


def test_hook_password_fields_are_hidden(pair: Pair, capsys: Capsys) -> None:
    pair.configure(hook=True)  # reset_passwords: users.encrypted_password
    hashes = ("$2a$12$local.secret.hash.value", "$2a$12$production.secret.hash")
    pair.local.users.insert_one({"_id": 1, "email": "a@x.com", "encrypted_password": hashes[0]})
    pair.production.users.insert_one(
        {"_id": 1, "email": "a@x.com", "encrypted_password": hashes[1], "name": "Ada"}
    )

    result = syncd(capsys, pair.config, "diff", "to_production", "--json")

    assert result.code == 0, result.err
    assert not any(h in result.text for h in hashes)
    (users,) = json.loads(result.out)["collections"]
    (doc,) = users["documents"]
    assert doc["op"] == "update" and doc["drifted"] is True  # no memory yet: drift
    assert doc["fields"] == [
        {"path": "encrypted_password", "source": "<hidden>", "target": "<hidden>", "what": "value"},
        {"path": "name", "source": None, "target": '"Ada"', "what": "value"},
    ]


def test_a_first_copy_lists_the_inserts_it_would_make(pair: Pair, capsys: Capsys) -> None:
    pair.configure(hook=False)
    pair.local.templates.insert_many([{"_id": f"t{i}"} for i in range(5)])

    result = syncd(capsys, pair.config, "diff", "to_production", "--limit", "3")

    assert result.code == 0, result.err
    inserts = [line for line in result.out.splitlines() if line.startswith("templates ")]
    assert len(inserts) == 3 and all(
        line.endswith(": insert, not on production") for line in inserts
    )
    assert "templates: 2 more document(s) not shown" in result.out
    assert pair.production.list_collection_names() == []


def test_a_drift_refusal_ends_with_the_diff_command(pushed: Pair, capsys: Capsys) -> None:
    pair = pushed
    pair.production.contracts.update_one({"_id": 3}, {"$set": {"status": "signed"}})

    refused = syncd(capsys, pair.config, *PUSH)

    assert refused.code == 3
    assert refused.err.rstrip().splitlines()[-1] == (
        "See what changed: syncd diff to_production -C contracts"
    )
