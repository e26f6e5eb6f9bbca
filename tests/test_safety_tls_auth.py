"""TLS and SCRAM auth on the production endpoint, with the URI from `uri_env`."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest
from pymongo.database import Database

from tests.conftest import AuthServer
from tests.safety_cli import PROD_URI_ENV, basic_config, run_syncd, snapshot
from tests.support.servers import Credentials, MongoServer

DB = Database[dict[str, Any]]


@pytest.fixture
def seeded_local(local_db: DB) -> DB:
    local_db.users.insert_many([{"_id": i, "email": f"u{i}@example.com"} for i in range(5)])
    local_db.items.insert_one({"_id": "a", "n": 1})
    return local_db


@pytest.fixture
def auth_database(auth_server: AuthServer) -> Iterator[str]:
    name = f"prod_auth_{secrets.token_hex(3)}"
    with auth_server.server.client(credentials=auth_server.users.admin) as client:
        yield name
        client.drop_database(name)


def test_sync_into_an_auth_server_with_scram_credentials(
    tmp_path: Path, local_uri: str, seeded_local: DB, auth_server: AuthServer, auth_database: str
) -> None:
    admin = auth_server.users.admin
    uri = auth_server.server.uri_for(auth_database, credentials=admin)
    assert "authSource=admin" in uri and "directConnection=true" in uri
    config = basic_config(tmp_path, local_uri)

    ran = run_syncd(config, "sync", "to_production", "--yes", env={PROD_URI_ENV: uri})

    assert ran.code == 0, ran
    with auth_server.server.client(credentials=admin) as client:
        assert snapshot(client[auth_database]) == snapshot(seeded_local)
    assert admin.password not in ran.output


def test_wrong_password_fails_clearly_without_showing_it(
    tmp_path: Path, local_uri: str, seeded_local: DB, auth_server: AuthServer, auth_database: str
) -> None:
    wrong = Credentials(auth_server.users.admin.username, "Wr0ng-" + secrets.token_urlsafe(12))
    uri = auth_server.server.uri_for(auth_database, credentials=wrong)
    config = basic_config(tmp_path, local_uri)

    ran = run_syncd(config, "sync", "to_production", "--yes", env={PROD_URI_ENV: uri})

    assert ran.code == 1, ran
    assert ran.stderr.splitlines() == [
        f"syncd: endpoint 'production' (mongodb://***@127.0.0.1:{auth_server.server.port}/"
        f"{auth_database}?directConnection=true&authSource=admin) is unreachable: "
        "authentication failed; check the user name and password in the URI "
        f"(from environment variable {PROD_URI_ENV})"
    ], ran
    for secret in (wrong.password, quote_plus(wrong.password), uri):
        assert secret not in ran.output
    assert "Traceback" not in ran.output


def test_missing_credentials_on_an_auth_server_fail_clearly(
    tmp_path: Path, local_uri: str, seeded_local: DB, auth_server: AuthServer, auth_database: str
) -> None:
    uri = auth_server.server.uri_for(auth_database)
    config = basic_config(tmp_path, local_uri)

    ran = run_syncd(config, "sync", "to_production", "--yes", env={PROD_URI_ENV: uri})

    assert ran.code == 1, ran
    assert "Traceback" not in ran.output
    assert "requires authentication" in ran.stderr
    assert "check the endpoint's credentials" in ran.stderr


def test_sync_over_tls_with_the_test_ca(
    tmp_path: Path, local_uri: str, seeded_local: DB, tls_server: MongoServer
) -> None:
    database = f"prod_tls_{secrets.token_hex(3)}"
    uri = tls_server.uri_for(database)
    assert "tls=true" in uri and "tlsCAFile=" in uri
    config = basic_config(tmp_path, local_uri)

    ran = run_syncd(config, "sync", "to_production", "--yes", env={PROD_URI_ENV: uri})

    assert ran.code == 0, ran
    with tls_server.client() as client:
        try:
            assert snapshot(client[database]) == snapshot(seeded_local)
        finally:
            client.drop_database(database)


def test_tls_without_the_ca_fails_cleanly(
    tmp_path: Path, local_uri: str, seeded_local: DB, tls_server: MongoServer
) -> None:
    uri = (
        f"mongodb://{tls_server.host}:{tls_server.port}/prod_tls_noca"
        "?directConnection=true&tls=true&serverSelectionTimeoutMS=2000"
    )
    config = basic_config(tmp_path, local_uri)

    ran = run_syncd(config, "sync", "to_production", "--yes", env={PROD_URI_ENV: uri})

    assert ran.code == 1, ran
    assert ran.stderr.startswith(f"syncd: endpoint 'production' ({uri}) is unreachable: ")
    assert "TLS handshake failed: certificate verify failed" in ran.stderr
    assert f"({tls_server.host}:{tls_server.port}); check that the server has TLS on" in ran.stderr
    assert "Traceback" not in ran.output
