"""Drift: someone changed the target since the last sync. `abort` refuses before any write,
`overwrite` replaces after a backup, `merge` keeps target-only changes and refuses only
documents changed on both sides; `--drift` overrides the config for one run."""

from __future__ import annotations

from typing import Any

import bson
import pytest
from pymongo.database import Database

from tests.engine_kit import (
    Pair,
    backup_contents,
    backup_names,
    snapshot,
    syncd,
    tree,
)

Capsys = pytest.CaptureFixture[str]
PUSH = ("sync", "to_production", "--yes")


def contracts(n: int = 20) -> list[dict[str, Any]]:
    return [{"_id": i, "number": f"CTR-{i:03d}", "status": "draft"} for i in range(n)]


@pytest.fixture
def in_step(pair: Pair, capsys: Capsys) -> Pair:
    """contracts and templates on local, pushed once: both sides equal and remembered."""
    pair.local.contracts.insert_many(contracts())
    pair.local.templates.insert_many([{"_id": f"t{i}", "name": f"T{i}"} for i in range(5)])
    first = syncd(capsys, pair.config, *PUSH)
    assert first.code == 0, first.err
    return pair


def edit(db: Database[Any], _id: Any, status: str) -> None:
    assert db.contracts.update_one({"_id": _id}, {"$set": {"status": status}}).matched_count


def test_abort_refuses_before_any_write_and_names_the_documents(
    in_step: Pair, capsys: Capsys
) -> None:
    pair = in_step
    edit(pair.production, 3, "signed in production")
    edit(pair.local, 5, "reviewed locally")
    pair.local.templates.delete_many({})
    before = snapshot(pair.production), snapshot(pair.local)
    state = tree(pair.state_dir / "backups")

    result = syncd(capsys, pair.config, *PUSH)

    assert result.code == 3
    assert "contracts: changed on production since the last sync: 3" in result.err
    assert "Nothing was written" in result.err
    assert (snapshot(pair.production), snapshot(pair.local)) == before
    assert backup_names(pair) == [] and tree(pair.state_dir / "backups") == state


def test_overwrite_replaces_the_drift_after_a_backup(in_step: Pair, capsys: Capsys) -> None:
    pair = in_step
    pair.configure(hook=False, drift="overwrite")
    edit(pair.production, 3, "signed in production")
    pair.production.contracts.insert_one({"_id": 99, "number": "only in production"})
    edit(pair.local, 5, "reviewed locally")
    before = snapshot(pair.production, ["contracts"])["contracts"]

    result = syncd(capsys, pair.config, *PUSH)

    assert result.code == 0, result.err
    assert snapshot(pair.production) == snapshot(pair.local)
    backups = backup_contents(pair)
    assert len(backups) == 1
    (saved,) = backups.values()
    assert saved["contracts"] == before  # the drifted versions can be restored
    assert f"backup before sync: {next(iter(backups))}" in result.out


def test_merge_keeps_target_changes_and_applies_source_changes(
    in_step: Pair, capsys: Capsys
) -> None:
    pair = in_step
    pair.configure(hook=False, drift="merge")
    edit(pair.production, 3, "signed in production")
    pair.production.contracts.insert_one({"_id": 99, "number": "only in production"})
    pair.production.contracts.delete_one({"_id": 4})
    edit(pair.local, 5, "reviewed locally")
    pair.local.contracts.insert_one({"_id": 50, "number": "new locally"})

    result = syncd(capsys, pair.config, *PUSH)

    assert result.code == 0, result.err
    production = {d["_id"]: d for d in pair.production.contracts.find()}
    assert production[3]["status"] == "signed in production"
    assert production[99]["number"] == "only in production"
    assert 4 not in production
    assert production[5]["status"] == "reviewed locally"
    assert production[50]["number"] == "new locally"
    assert len(production) == 20 + 1 - 1 + 1


def test_merge_refuses_a_document_changed_on_both_sides_with_nothing_written(
    in_step: Pair, capsys: Capsys
) -> None:
    pair = in_step
    pair.configure(hook=False, drift="merge")
    edit(pair.production, 3, "production's version")
    edit(pair.local, 3, "local's version")
    edit(pair.production, 7, "only production changed this one")
    edit(pair.local, 8, "only local changed this one")
    before = snapshot(pair.production), snapshot(pair.local)

    result = syncd(capsys, pair.config, *PUSH)

    assert result.code == 3
    assert "contracts: changed on both sides: 3" in result.err
    assert (snapshot(pair.production), snapshot(pair.local)) == before
    assert backup_names(pair) == []


def test_drift_option_overrides_the_config_for_one_run(in_step: Pair, capsys: Capsys) -> None:
    pair = in_step  # config: drift: abort
    edit(pair.production, 3, "signed in production")
    edit(pair.local, 5, "reviewed locally")

    merged = syncd(capsys, pair.config, *PUSH, "--drift", "merge")
    assert merged.code == 0, merged.err
    assert pair.production.contracts.find_one({"_id": 3})["status"] == "signed in production"
    assert pair.production.contracts.find_one({"_id": 5})["status"] == "reviewed locally"

    edit(pair.local, 6, "another local edit")
    again = syncd(capsys, pair.config, *PUSH)  # back to the config's abort: 3 is still drift
    assert again.code == 3
    assert "contracts: changed on production since the last sync: 3" in again.err

    overwritten = syncd(capsys, pair.config, *PUSH, "--drift", "overwrite")
    assert overwritten.code == 0, overwritten.err
    assert snapshot(pair.production) == snapshot(pair.local)

    pair.configure(hook=False, drift="overwrite")
    edit(pair.production, 9, "edited again")
    refused = syncd(capsys, pair.config, *PUSH, "--drift", "abort")
    assert refused.code == 3


def test_a_collection_rule_sets_its_own_drift_policy(in_step: Pair, capsys: Capsys) -> None:
    pair = in_step
    pair.configure(
        hook=False,
        drift="abort",
        collections="""
            - name: contracts
              drift: overwrite
            - name: "*"
        """,
    )
    edit(pair.production, 3, "signed in production")
    assert syncd(capsys, pair.config, *PUSH).code == 0
    assert snapshot(pair.production) == snapshot(pair.local)

    pair.production.templates.update_one({"_id": "t1"}, {"$set": {"name": "renamed"}})
    refused = syncd(capsys, pair.config, *PUSH)
    assert refused.code == 3
    assert "templates: changed on production since the last sync: t1" in refused.err


def test_first_sync_into_a_non_empty_target_counts_differences_as_drift(
    pair: Pair, capsys: Capsys
) -> None:
    pair.local.contracts.insert_many(contracts(10))
    pair.production.contracts.insert_many(contracts(6))  # 0-5 equal: not drift
    pair.production.contracts.update_one({"_id": 2}, {"$set": {"status": "other"}})
    pair.production.contracts.insert_many([{"_id": 100 + i} for i in range(3)])
    before = snapshot(pair.production)

    result = syncd(capsys, pair.config, *PUSH)

    assert result.code == 3
    assert "contracts: 4 document(s) changed on the target" in result.err
    assert "2, 100, 101, 102" in result.err
    assert snapshot(pair.production) == before

    overwritten = syncd(capsys, pair.config, *PUSH, "--drift", "overwrite")
    assert overwritten.code == 0, overwritten.err
    assert snapshot(pair.production) == snapshot(pair.local)


def test_a_changes_backup_holds_exactly_what_the_sync_replaces_or_deletes(
    in_step: Pair, capsys: Capsys
) -> None:
    pair = in_step
    pair.configure(hook=False, drift="overwrite", before_sync="changes")
    edit(pair.production, 3, "signed in production")  # drift, overwritten
    edit(pair.local, 5, "reviewed locally")  # replaced
    pair.local.contracts.delete_one({"_id": 6})  # deleted
    pair.local.contracts.insert_one({"_id": 70})  # inserted: no before-image
    before = snapshot(pair.production, ["contracts"])["contracts"]

    result = syncd(capsys, pair.config, *PUSH)

    assert result.code == 0, result.err
    (saved,) = backup_contents(pair).values()
    wanted = {k: v for k, v in before.items() if bson.decode(k)["_id"] in (3, 5, 6)}
    assert saved == {"contracts": wanted}
    assert snapshot(pair.production) == snapshot(pair.local)
