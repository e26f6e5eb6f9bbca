"""What `syncd sync` refuses or only shows, with nothing written: a collection outside the
flow's policy, the same database on both sides, a busy target with `--no-wait`, and
`--dry-run`."""

from __future__ import annotations

import json

import pytest

from syncd.lease import target_lease
from syncd.state.statedir import StateDir
from tests.conftest import DbNames
from tests.engine_kit import (
    Pair,
    backup_names,
    config_text,
    snapshot,
    syncd,
    tree,
)
from tests.support.dataset import load_seed_dataset
from tests.support.servers import Server

Capsys = pytest.CaptureFixture[str]
PAIR_RESET_PASSWORDS = True  # the `pair` fixture pushes with the password hook


def push_seed(pair: Pair, capsys: Capsys) -> None:
    load_seed_dataset(pair.local)
    first = syncd(capsys, pair.config, "sync", "to_production", "--yes")
    assert first.code == 0, first.err


def test_collection_outside_the_flow_policy_is_refused_with_nothing_written(
    pair: Pair, capsys: Capsys
) -> None:
    push_seed(pair, capsys)
    pair.local.audit_events.delete_many({})
    pair.local.users.update_many({}, {"$set": {"locale": "fr"}})
    before = snapshot(pair.production), snapshot(pair.local)

    result = syncd(
        capsys, pair.config, "sync", "to_production", "-C", "audit_events", "-C", "users", "--yes"
    )

    assert result.code == 3
    assert "audit_events" in result.err
    assert "to_production" in result.err
    assert (snapshot(pair.production), snapshot(pair.local)) == before
    assert backup_names(pair) == []


def test_dry_run_prints_the_plan_and_writes_nothing_anywhere(pair: Pair, capsys: Capsys) -> None:
    load_seed_dataset(pair.local)

    first = syncd(capsys, pair.config, "sync", "to_production", "--dry-run")

    assert first.code == 0, first.err
    assert "dry run: nothing was written" in first.out
    users_row = next(line for line in first.out.splitlines() if line.startswith("users "))
    assert users_row.split()[1:4] == ["40", "0", "40"]  # local, production, insert
    assert pair.production.list_collection_names() == []
    assert not pair.state_dir.exists()
    as_json = syncd(capsys, pair.config, "sync", "to_production", "--dry-run", "--json")
    assert as_json.code == 0, as_json.err
    plan = json.loads(as_json.out)
    assert plan["dry_run"] is True and plan["applied"] is False
    assert plan["totals"]["inserts"] == sum(c["source_docs"] for c in plan["collections"])
    assert not pair.state_dir.exists()

    assert syncd(capsys, pair.config, "sync", "to_production", "--yes").code == 0
    pair.production.users.update_one({"email": "admin@valkyria.com"}, {"$set": {"locale": "x"}})
    pair.local.templates.delete_many({})
    state, production = tree(pair.state_dir), snapshot(pair.production)

    second = syncd(capsys, pair.config, "sync", "to_production", "--dry-run")

    assert second.code == 0, second.err
    templates_row = next(line for line in second.out.splitlines() if line.startswith("templates"))
    assert templates_row.split()[1:6] == ["0", "8", "0", "0", "8"]  # ..., delete 8
    users_row = next(line for line in second.out.splitlines() if line.startswith("users "))
    assert users_row.split()[6] == "1"  # one drifted document shown
    assert snapshot(pair.production) == production
    assert tree(pair.state_dir) == state


def test_same_database_on_both_sides_is_refused(pair: Pair, capsys: Capsys) -> None:
    load_seed_dataset(pair.local)
    before = snapshot(pair.local)
    same = pair.root / "same.yaml"
    same.write_text(config_text(pair.state_dir, pair.local_uri, pair.local_uri), encoding="utf-8")

    result = syncd(capsys, same, "sync", "to_production", "--yes")

    assert result.code == 3
    assert "same database" in result.err
    assert snapshot(pair.local) == before


def test_same_database_is_recognised_through_localhost_and_127_0_0_1(
    pair: Pair, capsys: Capsys, server_local: Server, dbnames: DbNames
) -> None:
    if server_local.host != "127.0.0.1":
        pytest.skip("needs a loopback test server to spell its address two ways")
    load_seed_dataset(pair.local)
    pair.local.users.update_many({}, {"$set": {"locale": "de"}})
    before = snapshot(pair.local)
    by_name = f"mongodb://localhost:{server_local.port}/{dbnames.local}?directConnection=true"
    same = pair.root / "same.yaml"
    same.write_text(config_text(pair.state_dir, pair.local_uri, by_name), encoding="utf-8")

    for flow in ("to_production", "from_production"):
        result = syncd(capsys, same, "sync", flow, "--yes", "--drift", "overwrite")
        assert result.code == 3, flow
        assert "same database" in result.err
    assert snapshot(pair.local) == before


def test_no_wait_refuses_while_another_run_writes_the_target(pair: Pair, capsys: Capsys) -> None:
    pair.local.contracts.insert_many([{"_id": i} for i in range(5)])
    with target_lease(StateDir(pair.state_dir), "production", job="nightly-pull"):
        result = syncd(capsys, pair.config, "sync", "to_production", "--yes", "--no-wait")

    assert result.code == 3
    assert "being written by" in result.err and "nightly-pull" in result.err
    assert "contracts" not in pair.production.list_collection_names()
