"""The reset_passwords hook after a push: Devise-compatible bcrypt, remembered, never silent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bcrypt
import pytest
from pymongo.database import Database

from tests.safety_cli import (
    PROD_URI_ENV,
    RESET_PASSWORD_ENV,
    basic_config,
    run_syncd,
    snapshot,
)

DB = Database[dict[str, Any]]
PASSWORD = "Reset-me-4-prod!"  # noqa: S105 - a test value
LISTED = ["admin@valkyria.com", "legal@valkyria.com"]
MISSING = "ghost@valkyria.com"
COST = 5  # low for speed; the hash must carry it


def _hook(**secret: str) -> dict[str, Any]:
    return {
        "reset_passwords": {
            "collection": "users",
            "match_field": "email",
            "password_field": "encrypted_password",
            "scheme": "bcrypt",
            "cost": COST,
            **secret,
            "users": [*LISTED, MISSING],
        }
    }


@pytest.fixture
def local_users(local_db: DB) -> None:
    local_db.users.insert_many(
        [
            {"_id": i, "email": email, "encrypted_password": "$2a$04$local-dev-hash"}
            for i, email in enumerate([*LISTED, "dev@valkyria.com"], start=1)
        ]
    )
    local_db.items.insert_one({"_id": 1, "title": "contract"})


def _config(tmp_path: Path, local_uri: str, **secret: str) -> Path:
    return basic_config(tmp_path, local_uri, hooks=_hook(**secret), after=("reset_passwords",))


def _assert_reset(production_db: DB, password: str) -> None:
    for email in LISTED:
        user = production_db.users.find_one({"email": email})
        assert user is not None
        hashed = user["encrypted_password"]
        assert hashed.startswith(f"$2a${COST:02d}$"), hashed
        assert bcrypt.checkpw(password.encode(), hashed.encode())
    untouched = production_db.users.find_one({"email": "dev@valkyria.com"})
    assert untouched is not None
    assert untouched["encrypted_password"] == "$2a$04$local-dev-hash"


@pytest.mark.usefixtures("local_users")
def test_push_resets_listed_passwords_from_password_env(
    tmp_path: Path, local_uri: str, production_uri: str, production_db: DB
) -> None:
    config = _config(tmp_path, local_uri, password_env=RESET_PASSWORD_ENV)
    env = {PROD_URI_ENV: production_uri, RESET_PASSWORD_ENV: PASSWORD}

    ran = run_syncd(config, "sync", "to_production", "--yes", env=env)

    assert ran.code == 0, ran
    _assert_reset(production_db, PASSWORD)
    assert "reset the password of 2 of 3 users" in ran.stdout
    assert f"user {MISSING} not found in users" in ran.stderr  # the warning, on stderr
    assert "WARNING" in ran.stderr
    assert PASSWORD not in ran.output


@pytest.mark.usefixtures("local_users")
def test_push_resets_passwords_from_password_file(
    tmp_path: Path, local_uri: str, production_uri: str, production_db: DB
) -> None:
    secret = tmp_path / "reset-password"
    secret.write_text(PASSWORD + "\n", encoding="utf-8")
    config = _config(tmp_path, local_uri, password_file=str(secret))

    ran = run_syncd(config, "sync", "to_production", "--yes", env={PROD_URI_ENV: production_uri})

    assert ran.code == 0, ran
    _assert_reset(production_db, PASSWORD)


@pytest.mark.usefixtures("local_users")
def test_second_push_right_after_finds_no_drift(
    tmp_path: Path, local_uri: str, production_uri: str, production_db: DB
) -> None:
    config = _config(tmp_path, local_uri, password_env=RESET_PASSWORD_ENV)
    env = {PROD_URI_ENV: production_uri, RESET_PASSWORD_ENV: PASSWORD}
    first = run_syncd(config, "sync", "to_production", "--yes", env=env)
    assert first.code == 0, first

    # No --drift: the default policy is abort, so hook writes seen as drift would exit 3.
    second = run_syncd(config, "sync", "to_production", "--yes", env=env)

    assert second.code == 0, second
    assert "0 drifted" in second.stdout
    _assert_reset(production_db, PASSWORD)
    status = run_syncd(config, "status", "to_production", "--json", env=env)
    assert '"drift": 0' in status.stdout or '"drift": null' in status.stdout, status


@pytest.mark.usefixtures("local_users")
def test_missing_hook_password_fails_the_run_before_any_write(
    tmp_path: Path, local_uri: str, production_uri: str, production_db: DB
) -> None:
    config = _config(tmp_path, local_uri, password_env=RESET_PASSWORD_ENV)
    before = snapshot(production_db)

    ran = run_syncd(config, "sync", "to_production", "--yes", env={PROD_URI_ENV: production_uri})

    assert ran.code == 1, ran
    assert f"environment variable {RESET_PASSWORD_ENV} is not set" in ran.stderr
    assert "reset_passwords" in ran.stderr
    assert "Traceback" not in ran.output
    # Local users (with local passwords) must not reach production without the reset.
    assert snapshot(production_db) == before


@pytest.mark.usefixtures("local_users")
def test_missing_password_file_fails_the_run(
    tmp_path: Path, local_uri: str, production_uri: str, production_db: DB
) -> None:
    config = _config(tmp_path, local_uri, password_file=str(tmp_path / "no-such-file"))

    ran = run_syncd(config, "sync", "to_production", "--yes", env={PROD_URI_ENV: production_uri})

    assert ran.code == 1, ran
    assert "no-such-file does not exist" in ran.stderr
    assert "Traceback" not in ran.output
