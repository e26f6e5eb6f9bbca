"""The test harness itself: real servers, clean databases, the data set, the fault proxy,
auth and TLS. If these fail, every other test's verdict is suspect."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from gridfs import GridFSBucket
from pymongo import MongoClient
from pymongo.errors import (
    AutoReconnect,
    NetworkTimeout,
    OperationFailure,
    ServerSelectionTimeoutError,
)

from tests.conftest import AuthServer, DbNames, ServerPair
from tests.support.dataset import COLLECTIONS, load_seed_dataset
from tests.support.external import ExternalServer
from tests.support.faultproxy import FaultProxy
from tests.support.servers import MongoServer, ServerStartError, uri_with_database

Client = MongoClient[dict[str, Any]]
FAST_FAIL: dict[str, Any] = {"serverSelectionTimeoutMS": 400, "connectTimeoutMS": 400}


def test_two_servers_answer_ping_and_are_distinct(
    mongo_servers: ServerPair, local_client: Client, production_client: Client, dbnames: DbNames
) -> None:
    assert local_client.admin.command("ping")["ok"] == 1
    assert production_client.admin.command("ping")["ok"] == 1
    if mongo_servers.local is mongo_servers.production:
        pytest.skip("only SYNCD_TEST_MONGODB_URI is set: both roles share one server")
    local_client[dbnames.local].marker.insert_one({"_id": "only-local"})
    assert production_client[dbnames.local].marker.find_one({"_id": "only-local"}) is None


_seen: list[DbNames] = []


@pytest.mark.parametrize("round_", [1, 2])
def test_every_test_gets_empty_databases_dropped_afterwards(
    round_: int, dbnames: DbNames, local_db: Any, production_db: Any, local_client: Client
) -> None:
    assert dbnames.local != dbnames.production
    assert local_db.list_collection_names() == []
    assert production_db.list_collection_names() == []
    for earlier in _seen:
        assert earlier.local not in local_client.list_database_names()
    local_db.users.insert_one({"email": "admin@valkyria.com"})
    production_db.users.insert_one({"email": "admin@valkyria.com"})
    _seen.append(dbnames)


def test_uris_name_the_per_test_database(
    local_uri: str, production_uri: str, dbnames: DbNames, local_db: Any
) -> None:
    local_db.probe.insert_one({"_id": 1})
    client: Client
    with MongoClient(local_uri) as client:
        assert client.get_default_database().name == dbnames.local
        assert client.get_default_database().probe.find_one() == {"_id": 1}
    with MongoClient(production_uri) as client:
        assert client.get_default_database().name == dbnames.production


def test_restart_keeps_data_and_port(mongo_server_factory: Any) -> None:
    server: MongoServer = mongo_server_factory()
    port, pid = server.port, server.pid
    with server.client() as client:
        client.app.users.insert_one({"email": "legal@valkyria.com"})
    server.restart()
    assert (server.port, server.is_running) == (port, True)
    assert server.pid != pid
    with server.client() as client:
        assert client.app.users.find_one({}, {"_id": 0}) == {"email": "legal@valkyria.com"}


def test_killed_server_is_unreachable_until_restarted(mongo_server_factory: Any) -> None:
    server: MongoServer = mongo_server_factory()
    server.kill()
    assert not server.is_running
    with server.client(**FAST_FAIL) as client, pytest.raises(ServerSelectionTimeoutError):
        client.admin.command("ping")
    server.restart()
    with server.client() as client:
        assert client.admin.command("ping")["ok"] == 1


def test_start_failure_reports_the_server_log(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        server = MongoServer(tmp_path / "clash", port=busy.getsockname()[1])
        with pytest.raises(ServerStartError, match="(?i)address already in use"):
            server.start(timeout=15)
    assert not server.is_running


def test_seed_dataset_has_every_collection_indexes_and_gridfs(
    local_db: Any, production_db: Any
) -> None:
    summary = load_seed_dataset(local_db)

    assert set(local_db.list_collection_names()) == set(COLLECTIONS)
    assert len(COLLECTIONS) == 21
    assert all(summary.counts[name] > 0 for name in COLLECTIONS), summary.counts
    assert summary.counts == {n: local_db[n].count_documents({}) for n in COLLECTIONS}

    users = local_db.users
    for email in summary.reset_users:
        user = users.find_one({"email": email})
        assert user is not None, email
        assert user["encrypted_password"].startswith("$2a$")
        assert bcrypt.checkpw(summary.user_password.encode(), user["encrypted_password"].encode())
    with pytest.raises(OperationFailure):  # unique email
        users.insert_one({"email": "admin@valkyria.com", "encrypted_password": "x"})

    info = {name: local_db[name].index_information() for name in COLLECTIONS}
    assert info["users"]["email_1"]["unique"] is True
    assert "partialFilterExpression" in info["users"]["reset_password_token_1"]
    assert "partialFilterExpression" in info["hr_vacation_requests"]["pending_by_approver"]
    assert info["generated_documents"]["expires_at_1"]["expireAfterSeconds"] == 0
    assert len(info["audit_events"]["subject_type_1_subject_id_1_created_at_-1"]["key"]) == 3
    assert info["fs.chunks"]["files_id_1_n_1"]["unique"] is True

    bucket = GridFSBucket(local_db)
    assert local_db["fs.chunks"].count_documents({"files_id": summary.large_file_id}) >= 3
    for file_id, sha in summary.file_sha256.items():
        content = bucket.open_download_stream(file_id).read()
        assert hashlib.sha256(content).hexdigest() == sha, file_id

    # Same seed, same bytes: a second load elsewhere is identical, document for document.
    load_seed_dataset(production_db)
    for name in COLLECTIONS:
        local_docs = list(local_db[name].find().sort("_id", 1))
        assert local_docs == list(production_db[name].find().sort("_id", 1)), name


@pytest.fixture
def proxy(server_local: Any) -> Iterator[FaultProxy]:
    if isinstance(server_local, ExternalServer):
        pytest.skip("the fault proxy forwards plain TCP; not wired for an external URI")
    with FaultProxy(server_local.host, server_local.port) as running:
        yield running


def _proxied_client(
    proxy: FaultProxy, database: str, *, fail_fast: bool = False, **options: str
) -> Client:
    # Polling monitor and no retries: the test sees exactly what each operation hits.
    # A client that must recover needs more than the monitor's 500 ms minimum re-check.
    defaults = {"serverMonitoringMode": "poll", "retryReads": "false", "retryWrites": "false"}
    timeouts = FAST_FAIL if fail_fast else {"serverSelectionTimeoutMS": 10_000}
    return MongoClient(proxy.uri_for(database, **defaults, **options), **timeouts)


def test_proxy_forwards_to_the_server(proxy: FaultProxy, local_db: Any) -> None:
    local_db.users.insert_one({"_id": 1, "email": "legal@valkyria.com"})
    with _proxied_client(proxy, local_db.name) as client:
        db = client.get_default_database()
        assert db.users.find_one({"_id": 1}) == {"_id": 1, "email": "legal@valkyria.com"}
        db.users.insert_one({"_id": 2})
    assert local_db.users.count_documents({}) == 2
    assert proxy.total_connections >= 1


def test_dropped_connections_fail_the_next_operation_then_recover(
    proxy: FaultProxy, local_db: Any
) -> None:
    with _proxied_client(proxy, local_db.name) as client:
        db = client.get_default_database()
        db.command("ping")
        assert proxy.drop_connections() >= 1
        with pytest.raises(AutoReconnect):
            db.command("ping")
        assert db.command("ping")["ok"] == 1


def test_stalled_proxy_times_out_operations_and_resume_recovers(
    proxy: FaultProxy, local_db: Any
) -> None:
    with _proxied_client(proxy, local_db.name, socketTimeoutMS="300") as client:
        db = client.get_default_database()
        db.command("ping")
        proxy.stall()
        with pytest.raises(NetworkTimeout):
            db.command("ping")
        proxy.resume()
        assert db.command("ping")["ok"] == 1


def test_slow_proxy_delays_past_a_short_socket_timeout(proxy: FaultProxy, local_db: Any) -> None:
    with _proxied_client(proxy, local_db.name, socketTimeoutMS="300") as client:
        db = client.get_default_database()
        db.command("ping")
        proxy.set_delay(3.0)
        with pytest.raises(NetworkTimeout):
            db.command("ping")
        proxy.set_delay(0)
        assert db.command("ping")["ok"] == 1


def test_refusing_proxy_rejects_new_connections_only(proxy: FaultProxy, local_db: Any) -> None:
    with _proxied_client(proxy, local_db.name) as old:
        old.get_default_database().command("ping")
        proxy.refuse(True)
        with (
            _proxied_client(proxy, local_db.name, fail_fast=True) as new,
            pytest.raises(AutoReconnect),
        ):
            new.get_default_database().command("ping")
        assert old.get_default_database().command("ping")["ok"] == 1
        proxy.refuse(False)
        with _proxied_client(proxy, local_db.name) as new:
            assert new.get_default_database().command("ping")["ok"] == 1


def test_auth_server_requires_scram_credentials(auth_server: AuthServer) -> None:
    server, users = auth_server.server, auth_server.users
    with server.client() as anonymous:
        with pytest.raises(OperationFailure) as refused:
            anonymous[users.app_database].users.find_one()
        assert refused.value.code == 13  # Unauthorized
    with server.client(credentials=users.app) as app:
        app[users.app_database].users.insert_one({"email": "admin@valkyria.com"})
        assert app[users.app_database].users.count_documents({}) >= 1
    with server.client(credentials=users.admin) as admin:
        assert users.app_database in admin.list_database_names()
    wrong = type(users.app)(users.app.username, "not-the-password", users.app.auth_source)
    with server.client(credentials=wrong) as intruder, pytest.raises(OperationFailure) as bad:
        intruder[users.app_database].users.find_one()
    assert bad.value.code == 18  # AuthenticationFailed
    assert users.app.password not in repr(users)


def test_tls_server_needs_the_test_ca(tls_server: MongoServer) -> None:
    assert "tls=true" in tls_server.uri
    with tls_server.client() as trusted:
        assert trusted.admin.command("ping")["ok"] == 1
    untrusted: Client
    plaintext: Client
    bare = f"mongodb://{tls_server.host}:{tls_server.port}/?directConnection=true"
    with MongoClient(bare + "&tls=true", **FAST_FAIL) as untrusted:
        with pytest.raises(ServerSelectionTimeoutError, match="(?i)certificate verify failed"):
            untrusted.admin.command("ping")
    with MongoClient(bare, **FAST_FAIL) as plaintext, pytest.raises(ServerSelectionTimeoutError):
        plaintext.admin.command("ping")


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("mongodb://h:1/?directConnection=true", "mongodb://h:1/db?directConnection=true"),
        ("mongodb://h:1", "mongodb://h:1/db"),
        ("mongodb://u:p%2F@h:1,h2:2/old?tls=true", "mongodb://u:p%2F@h:1,h2:2/db?tls=true"),
        ("mongodb+srv://u:p@cluster0.example.net/x", "mongodb+srv://u:p@cluster0.example.net/db"),
    ],
)
def test_uri_with_database_replaces_only_the_path(uri: str, expected: str) -> None:
    assert uri_with_database(uri, "db") == expected


def test_external_server_parses_host_and_refuses_to_be_killed() -> None:
    server = ExternalServer("mongodb://user:secret@db1.example:27018,db2/app?tls=true")
    assert (server.host, server.port) == ("db1.example", 27018)
    assert "secret" not in repr(server)
    with pytest.raises(pytest.skip.Exception):
        server.kill()
