"""Secret hygiene: run a whole scenario with real secrets, then search every output and every
file it left in the state directory for them."""

from __future__ import annotations

import json
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest
import yaml
from pymongo.database import Database

from tests.conftest import AuthServer
from tests.safety_cli import PROD_URI_ENV, RESET_PASSWORD_ENV, Ran, run_syncd
from tests.support.servers import Credentials

DB = Database[dict[str, Any]]


@pytest.fixture
def auth_database(auth_server: AuthServer) -> Iterator[str]:
    name = f"prod_secret_{secrets.token_hex(3)}"
    with auth_server.server.client(credentials=auth_server.users.admin) as client:
        yield name
        client.drop_database(name)


def _token_script(directory: Path, token: str, uri: str, *, fail: bool = False) -> Path:
    """A stand-in for `heroku config:get`: chatters a token on stderr, the URI on stdout."""
    script = directory / ("failing-cli" if fail else "fake-cli")
    body = f"echo 'auth token: {token}' >&2\necho 'debug: {token}'\n"
    body += "exit 7\n" if fail else f"echo '{uri}'\n"
    script.write_text("#!/bin/sh\n" + body, encoding="utf-8")
    script.chmod(0o700)
    return script


def _config(directory: Path, local_uri: str, staging_command: str, *, reset_cost: int = 4) -> Path:
    doc = {
        "version": 1,
        "state_dir": str(directory / "state"),
        "endpoints": {
            "local": {"uri": local_uri},
            "production": {"uri_env": PROD_URI_ENV, "protected": True},
            "staging": {"uri_command": staging_command},
        },
        "flows": {
            "to_production": {
                "source": "local",
                "target": "production",
                "after": ["reset_passwords"],
            },
            "from_production": {"source": "production", "target": "local"},
            "to_staging": {"source": "local", "target": "staging"},
        },
        "collections": [{"name": "users"}, {"name": "items"}],
        "hooks": {
            "reset_passwords": {
                "collection": "users",
                "match_field": "email",
                "password_field": "encrypted_password",
                "cost": reset_cost,
                "password_env": RESET_PASSWORD_ENV,
                "users": ["admin@valkyria.com", "nobody@valkyria.com"],
            }
        },
    }
    path = directory / "syncd.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def _state_files(state_dir: Path) -> list[Path]:
    return [p for p in sorted(state_dir.rglob("*")) if p.is_file()]


def test_no_secret_in_any_output_or_state_file(
    tmp_path: Path,
    local_db: DB,
    local_uri: str,
    server_local: Any,
    auth_server: AuthServer,
    auth_database: str,
) -> None:
    admin = auth_server.users.admin
    prod_uri = auth_server.server.uri_for(auth_database, credentials=admin)
    wrong = Credentials(admin.username, "Wr0ng-" + secrets.token_urlsafe(12))
    wrong_uri = auth_server.server.uri_for(auth_database, credentials=wrong)
    reset_password = "Reset-" + secrets.token_urlsafe(12)
    token = "tok_" + secrets.token_hex(16)
    staging_uri = server_local.uri_for(f"staging_{secrets.token_hex(3)}")
    script = _token_script(tmp_path, token, staging_uri)
    failing = _token_script(tmp_path, token, staging_uri, fail=True)
    local_db.users.insert_many(
        [
            {"_id": 1, "email": "admin@valkyria.com", "encrypted_password": "$2a$04$x"},
            {"_id": 2, "email": "dev@valkyria.com", "encrypted_password": "$2a$04$y"},
        ]
    )
    local_db.items.insert_many([{"_id": i, "n": i} for i in range(20)])
    config = _config(tmp_path, local_uri, str(script))
    broken_config = _config(tmp_path / "broken", local_uri, str(failing))
    env = {PROD_URI_ENV: prod_uri, RESET_PASSWORD_ENV: reset_password}
    bad_env = {**env, PROD_URI_ENV: wrong_uri}

    runs: list[Ran] = [
        run_syncd(config, "validate", env=env),
        run_syncd(config, "status", env=env),
        run_syncd(
            config, "--log-format", "json", "--log-level", "DEBUG", "status", "--json", env=env
        ),
        run_syncd(config, "--log-level", "DEBUG", "sync", "to_production", "--yes", env=env),
        run_syncd(config, "--log-format", "json", "sync", "to_production", "--yes", env=env),
        run_syncd(config, "sync", "to_staging", env=env),
        run_syncd(config, "sync", "from_production", "--dry-run", env=env),
        run_syncd(config, "backup", "create", "production", env=env),
        run_syncd(config, "backup", "list", env=env),
        run_syncd(config, "backup", "list", "--json", "--verify", env=env),
    ]
    ok = {r.args: r.code for r in runs}
    assert all(code == 0 for code in ok.values()), "\n\n".join(str(r) for r in runs)
    failures = [
        run_syncd(config, "sync", "to_production", "--yes", env=bad_env),
        run_syncd(config, "--log-format", "json", "status", "--json", env=bad_env),
        run_syncd(config, "backup", "create", "production", env=bad_env),
        run_syncd(broken_config, "sync", "to_staging", env=env),
        run_syncd(broken_config, "status", "--json", env=env),
    ]
    assert [r.code for r in failures] == [1, 1, 1, 1, 1], "\n\n".join(str(r) for r in failures)
    runs += failures

    forbidden = {
        "production password": admin.password,
        "production password (URI-quoted)": quote_plus(admin.password),
        "credentialed production URI": prod_uri,
        "user:password": f"{quote_plus(admin.username)}:{quote_plus(admin.password)}",
        "wrong password": wrong.password,
        "credentialed wrong URI": wrong_uri,
        "reset password": reset_password,
        "uri_command token": token,
    }
    for ran in runs:
        for what, value in forbidden.items():
            assert value not in ran.output, f"{what} in the output of syncd {' '.join(ran.args)}"
    files = _state_files(tmp_path / "state") + _state_files(tmp_path / "broken" / "state")
    assert any(p.name == "memory.sqlite" for p in files)
    assert any(p.name == "manifest.json" for p in files)
    for path in files:
        data = path.read_bytes()
        for what, value in forbidden.items():
            assert value.encode() not in data, f"{what} in {path}"


def test_status_json_and_errors_show_the_uri_redacted(
    tmp_path: Path, local_uri: str, auth_server: AuthServer, auth_database: str
) -> None:
    wrong = Credentials(auth_server.users.admin.username, "Wr0ng-" + secrets.token_urlsafe(12))
    wrong_uri = auth_server.server.uri_for(auth_database, credentials=wrong)
    script = _token_script(tmp_path, "tok_unused", local_uri)
    config = _config(tmp_path, local_uri, str(script))
    env = {PROD_URI_ENV: wrong_uri, RESET_PASSWORD_ENV: "unused"}
    redacted = f"mongodb://***@127.0.0.1:{auth_server.server.port}/{auth_database}"

    status = run_syncd(config, "status", "--json", env=env)
    sync = run_syncd(config, "sync", "to_production", "--yes", env=env)

    assert status.code == 1, status
    report = json.loads(status.stdout)
    production = report["endpoints"]["production"]
    assert production["reachable"] is False
    assert redacted in production["error"]
    assert sync.code == 1, sync
    assert redacted in sync.stderr
    assert wrong.password not in status.output + sync.output


def test_state_files_are_private(
    tmp_path: Path, local_db: DB, local_uri: str, auth_server: AuthServer, auth_database: str
) -> None:
    """Backups and the sync memory hold production data: owner-only, like the secrets."""
    local_db.items.insert_many([{"_id": i} for i in range(3)])
    uri = auth_server.server.uri_for(auth_database, credentials=auth_server.users.admin)
    config = _config(tmp_path, local_uri, "true")
    env = {PROD_URI_ENV: uri, RESET_PASSWORD_ENV: "x"}
    assert run_syncd(config, "backup", "create", "production", env=env).code == 0

    backups = tmp_path / "state" / "backups"
    for path in [backups, *backups.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}"
