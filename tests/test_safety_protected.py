"""Protected endpoints: a manual write needs a confirmation on a terminal, --yes or FORCE=true.

Every test runs the real `syncd` command against two SecantusDB servers.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from tests.safety_cli import (
    PROD_URI_ENV,
    backup_names,
    basic_config,
    run_on_terminal,
    run_syncd,
    snapshot,
)

DB = Database[dict[str, Any]]
PROMPT = "Write these changes to protected endpoint 'production'? [y/N]"


@pytest.fixture
def scenario(
    tmp_path: Path, local_db: DB, production_db: DB, local_uri: str, production_uri: str
) -> tuple[Path, dict[str, str]]:
    """local has 3 users and 2 items; production has 1 stale user and 1 extra item."""
    local_db.users.insert_many(
        [{"_id": i, "email": f"user{i}@example.com", "name": f"User {i}"} for i in (1, 2, 3)]
    )
    local_db.items.insert_many([{"_id": "a", "n": 1}, {"_id": "b", "n": 2}])
    production_db.users.insert_one({"_id": 1, "email": "user1@example.com", "name": "Old"})
    production_db.items.insert_one({"_id": "z", "n": 26})
    config = basic_config(tmp_path, local_uri)
    return config, {PROD_URI_ENV: production_uri}


def _pull_first(config: Path, env: dict[str, str], production_db: DB) -> None:
    """A pull makes the memory agree with production, so a push afterwards has no drift."""
    pulled = run_syncd(config, "sync", "from_production", "--drift", "overwrite", env=env)
    assert pulled.code == 0, pulled


def test_push_to_protected_endpoint_without_terminal_is_refused(
    scenario: tuple[Path, dict[str, str]], production_db: DB
) -> None:
    config, env = scenario
    # --drift overwrite: the first push has no memory, so the refusal must come from protection.
    before = snapshot(production_db)

    ran = run_syncd(config, "sync", "to_production", "--drift", "overwrite", env=env)

    assert ran.code == 3, ran
    assert "'production' is protected" in ran.stderr
    assert "--yes" in ran.stderr and "FORCE=true" in ran.stderr
    assert "Traceback" not in ran.output
    assert snapshot(production_db) == before
    assert backup_names(config.parent / "state") == []


@pytest.mark.parametrize("answer", ["n", "\x04"], ids=["no", "ctrl-d"])
def test_declining_on_a_terminal_writes_nothing(
    scenario: tuple[Path, dict[str, str]], production_db: DB, answer: str
) -> None:
    """ "n", or end of input (Ctrl-D) at the question: refused, not an error."""
    config, env = scenario
    before = snapshot(production_db)

    ran = run_on_terminal(
        config,
        "sync",
        "to_production",
        "--drift",
        "overwrite",
        answer=answer,
        wait_for=PROMPT,
        env=env,
    )

    assert PROMPT in ran.stdout, ran
    # The plan summary comes before the question: what, how much, where.
    shown_before_prompt = ran.stdout.split(PROMPT)[0]
    assert "to_production: local -> production" in shown_before_prompt
    assert "4 to insert, 1 to update, 1 to delete" in shown_before_prompt
    for column in ("collection", "insert", "update", "delete", "users", "items"):
        assert column in shown_before_prompt
    assert ran.code == 3, ran
    assert "not confirmed; nothing was written to 'production'" in ran.stdout
    assert snapshot(production_db) == before
    assert backup_names(config.parent / "state") == []


def test_ctrl_c_at_the_question_stops_at_once_and_writes_nothing(
    scenario: tuple[Path, dict[str, str]], production_db: DB
) -> None:
    """SIGINT may reach any thread (pymongo's monitors have started by then); the question
    still ends at once, not at the next Enter."""
    config, env = scenario
    before = snapshot(production_db)

    ran = run_on_terminal(
        config,
        "sync",
        "to_production",
        "--drift",
        "overwrite",
        answer=signal.SIGINT,
        wait_for=PROMPT,
        env=env,
    )

    assert PROMPT in ran.stdout, ran
    assert ran.code == 1, ran
    assert "syncd: interrupted" in ran.stdout
    assert snapshot(production_db) == before
    assert backup_names(config.parent / "state") == []


def test_confirming_on_a_terminal_writes(
    scenario: tuple[Path, dict[str, str]], local_db: DB, production_db: DB
) -> None:
    config, env = scenario

    ran = run_on_terminal(
        config,
        "sync",
        "to_production",
        "--drift",
        "overwrite",
        answer="y",
        wait_for=PROMPT,
        env=env,
    )

    assert PROMPT in ran.stdout
    assert ran.code == 0, ran
    assert snapshot(production_db) == snapshot(local_db)
    assert len(backup_names(config.parent / "state")) == 1  # production backed up first


@pytest.mark.parametrize("force", ["true", "TRUE", "1"])
def test_force_true_in_the_environment_works_like_yes(
    scenario: tuple[Path, dict[str, str]], local_db: DB, production_db: DB, force: str
) -> None:
    config, env = scenario

    ran = run_syncd(
        config, "sync", "to_production", "--drift", "overwrite", env={**env, "FORCE": force}
    )

    assert ran.code == 0, ran
    assert snapshot(production_db) == snapshot(local_db)


def test_force_false_does_not_confirm(
    scenario: tuple[Path, dict[str, str]], production_db: DB
) -> None:
    config, env = scenario
    before = snapshot(production_db)

    ran = run_syncd(
        config, "sync", "to_production", "--drift", "overwrite", env={**env, "FORCE": "false"}
    )

    assert ran.code == 3, ran
    assert snapshot(production_db) == before


def test_yes_writes_to_protected_endpoint(
    scenario: tuple[Path, dict[str, str]], local_db: DB, production_db: DB
) -> None:
    config, env = scenario

    ran = run_syncd(config, "sync", "to_production", "--drift", "overwrite", "--yes", env=env)

    assert ran.code == 0, ran
    assert snapshot(production_db) == snapshot(local_db)


@pytest.mark.parametrize("how", ["--yes", "FORCE=true"])
def test_yes_never_silences_drift_protection(
    scenario: tuple[Path, dict[str, str]], local_db: DB, production_db: DB, how: str
) -> None:
    config, env = scenario
    _pull_first(config, env, production_db)
    local_db.items.insert_one({"_id": "c", "n": 3})  # a pending push ...
    production_db.users.update_one({"_id": 1}, {"$set": {"name": "edited in the UI"}})  # ... drift
    before = snapshot(production_db)
    args = ["sync", "to_production"] + (["--yes"] if how == "--yes" else [])
    extra = {"FORCE": "true"} if how == "FORCE=true" else {}

    ran = run_syncd(config, *args, env={**env, **extra})

    assert ran.code == 3, ran
    assert "users: changed on production since the last sync: 1" in ran.stderr
    assert "Nothing was written" in ran.stderr
    assert snapshot(production_db) == before


def test_dry_run_to_protected_endpoint_needs_no_confirmation(
    scenario: tuple[Path, dict[str, str]], production_db: DB
) -> None:
    config, env = scenario
    before = snapshot(production_db)

    ran = run_syncd(config, "sync", "to_production", "--dry-run", env=env)

    assert ran.code == 0, ran
    assert "dry run: nothing was written" in ran.stdout
    assert snapshot(production_db) == before


def test_unprotected_target_needs_no_confirmation(
    scenario: tuple[Path, dict[str, str]], local_db: DB, production_db: DB
) -> None:
    config, env = scenario

    ran = run_syncd(config, "sync", "from_production", "--drift", "overwrite", env=env)

    assert ran.code == 0, ran
    assert snapshot(local_db) == snapshot(production_db)


# -- restore into a protected endpoint ------------------------------------------------------


@pytest.fixture
def production_backup(
    scenario: tuple[Path, dict[str, str]], production_db: DB
) -> tuple[Path, dict[str, str], str]:
    """A backup of production, then production changed: a restore has something to undo."""
    config, env = scenario
    created = run_syncd(config, "backup", "create", "production", env=env)
    assert created.code == 0, created
    name = created.stdout.split(":", 1)[0]
    production_db.items.insert_one({"_id": "after-backup", "n": 99})
    production_db.users.delete_one({"_id": 1})
    return config, env, name


RESTORE_PROMPT = "into protected endpoint 'production'? Its current data is backed up first. [y/N]"


def test_restore_into_protected_endpoint_without_terminal_is_refused(
    production_backup: tuple[Path, dict[str, str], str], production_db: DB
) -> None:
    config, env, name = production_backup
    before = snapshot(production_db)
    backups_before = backup_names(config.parent / "state")

    ran = run_syncd(config, "backup", "restore", name, env=env)

    assert ran.code == 3, ran
    assert "'production' is protected" in ran.stderr and "--yes" in ran.stderr
    assert snapshot(production_db) == before
    assert backup_names(config.parent / "state") == backups_before


@pytest.mark.parametrize("answer", ["n", "\x04"], ids=["no", "ctrl-d"])
def test_restore_declined_on_a_terminal_writes_nothing(
    production_backup: tuple[Path, dict[str, str], str], production_db: DB, answer: str
) -> None:
    config, env, name = production_backup
    before = snapshot(production_db)
    backups_before = backup_names(config.parent / "state")

    ran = run_on_terminal(
        config, "backup", "restore", name, answer=answer, wait_for=RESTORE_PROMPT, env=env
    )

    # the prompt shows what the restore would write before asking
    assert f"restore {name}: backup:{name} -> production, 2 collections" in ran.stdout, ran
    assert f"Restore {name} (full backup) into protected endpoint" in ran.stdout, ran
    assert ran.code == 3, ran
    assert "nothing was written to 'production'" in ran.stdout
    assert snapshot(production_db) == before
    assert backup_names(config.parent / "state") == backups_before


def test_restore_confirmed_on_a_terminal_restores(
    production_backup: tuple[Path, dict[str, str], str], production_db: DB
) -> None:
    config, env, name = production_backup

    ran = run_on_terminal(
        config, "backup", "restore", name, answer="y", wait_for=RESTORE_PROMPT, env=env
    )

    assert ran.code == 0, ran
    assert production_db.items.find_one({"_id": "after-backup"}) is None
    assert production_db.users.find_one({"_id": 1}) == {
        "_id": 1,
        "email": "user1@example.com",
        "name": "Old",
    }
    assert f"restored {name} into production" in ran.stdout


def test_restore_with_force_true(
    production_backup: tuple[Path, dict[str, str], str], production_db: DB
) -> None:
    config, env, name = production_backup

    ran = run_syncd(config, "backup", "restore", name, env={**env, "FORCE": "true"})

    assert ran.code == 0, ran
    assert production_db.items.find_one({"_id": "after-backup"}) is None
