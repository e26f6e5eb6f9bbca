"""`continuous: true` with a real `syncd run` on two SecantusDB servers (SPEC §6): edits on
the source reach the target within seconds; drift under abort stops only its collection;
SIGTERM, writes while stopped, restart: all arrive; the source killed and restarted
mid-stream; a manual sync while the job runs."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from tests.engine_kit import snapshot
from tests.support.daemon import NotifySocket, SyncdDaemon, syncd_command, wait_until
from tests.support.servers import MongoServer

Db = Database[dict[str, Any]]
StartDaemon = Callable[..., SyncdDaemon]
MIRROR = "  - {name: mirror, flow: from_production, continuous: true}\n"
SHORT = "&serverSelectionTimeoutMS=1000&connectTimeoutMS=1000"  # a dead server fails fast


def config_text(state_dir: Path, local_uri: str, production_uri: str, extra: str = "") -> str:
    return (
        "version: 1\n"
        f"state_dir: {state_dir}\n"
        "endpoints:\n"
        f"  local: {{uri: '{local_uri}'}}\n"
        f"  production: {{uri: '{production_uri}'}}\n"
        "flows:\n"
        "  to_production: {source: local, target: production}\n"
        "  from_production: {source: production, target: local}\n"
        "collections:\n  - name: contracts\n  - name: users\n"
        "backups: {before_sync: changes}\n"
        f"schedules:\n{MIRROR}"
        "metrics: {listen: '127.0.0.1:0'}\n"
        f"{extra}"
    )


@pytest.fixture
def config(tmp_path: Path, local_uri: str, production_uri: str, production_db: Db) -> Path:
    production_db.contracts.insert_many([{"_id": i, "status": "draft"} for i in range(30)])
    production_db.users.insert_many([{"_id": i, "email": f"u{i}@x"} for i in range(5)])
    return config_file(tmp_path, local_uri, production_uri)


def config_file(tmp_path: Path, local_uri: str, production_uri: str) -> Path:
    path = tmp_path / "syncd.yaml"
    path.write_text(config_text(tmp_path / "state", local_uri, production_uri), encoding="utf-8")
    return path


def mirrored(local: Db, production: Db) -> bool:
    return snapshot(local) == snapshot(production)


def test_source_edits_reach_the_target_within_seconds(
    config: Path,
    start_daemon: StartDaemon,
    local_db: Db,
    production_db: Db,
    notify: NotifySocket,
) -> None:
    daemon = start_daemon(config)
    wait_until(lambda: mirrored(local_db, production_db), what="the initial sync")

    production_db.contracts.update_one({"_id": 3}, {"$set": {"status": "signed"}})
    production_db.contracts.insert_one({"_id": 100, "status": "new"})
    production_db.contracts.delete_one({"_id": 4})
    production_db.users.update_one({"_id": 1}, {"$set": {"email": "changed@x"}})

    wait_until(lambda: mirrored(local_db, production_db), timeout=15, what="the edits")
    assert daemon.metric("syncd_sync_lag_seconds", flow="from_production") is not None
    wait_until(
        lambda: daemon.metric("syncd_sync_lag_seconds", flow="from_production") == 0,
        what="lag back to 0",
    )
    # batches found their changes by streams (counted when the batch ends, which may be
    # after its writes are visible and the lag is back to 0)
    wait_until(
        lambda: (
            (
                daemon.metric(
                    "syncd_sync_collections_total", flow="from_production", mode="changes"
                )
                or 0
            )
            >= 2
        ),
        what="the batch counted",
    )
    notify.wait_for(lambda m: "mirror: following" in m.get("STATUS", ""))
    state = json.loads(fetch_text(f"{daemon.metrics_url()}/healthz"))["continuous"]["mirror"]
    assert state["state"] == "following"

    opened = connections_made(production_db)
    for round_ in range(3):
        production_db.contracts.update_one({"_id": 3}, {"$set": {"round": round_}})
        wait_until(lambda: mirrored(local_db, production_db), timeout=15, what="one more batch")
    assert connections_made(production_db) - opened <= 2, "batches reconnect to the source"


def connections_made(db: Db) -> int:
    """How many connections the server has accepted since it started."""
    return int(db.client.admin.command("serverStatus")["connections"]["totalCreated"])


def fetch_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310
        return str(response.read().decode())


def test_drift_under_abort_stops_only_that_collection(
    config: Path, start_daemon: StartDaemon, local_db: Db, production_db: Db
) -> None:
    daemon = start_daemon(config)
    wait_until(lambda: mirrored(local_db, production_db), what="the initial sync")

    local_db.users.update_one({"_id": 2}, {"$set": {"email": "edited-locally@x"}})
    production_db.users.update_one({"_id": 2}, {"$set": {"email": "edited-in-production@x"}})
    stopped = daemon.wait_msg("continuous job mirror: users stopped applying")
    production_db.contracts.update_one({"_id": 5}, {"$set": {"status": "still flowing"}})

    wait_until(
        lambda: (local_db.contracts.find_one({"_id": 5}) or {}).get("status") == "still flowing",
        what="contracts still applied",
    )
    assert "users" in stopped["msg"]
    assert local_db.users.find_one({"_id": 2})["email"] == "edited-locally@x"
    wait_until(
        lambda: (
            daemon.metric("syncd_drift_documents", flow="from_production", collection="users") == 1
        ),
        what="drift of users in the metrics",
    )


def test_sigterm_then_writes_while_stopped_then_restart_miss_nothing(
    config: Path, start_daemon: StartDaemon, local_db: Db, production_db: Db
) -> None:
    first = start_daemon(config)
    wait_until(lambda: mirrored(local_db, production_db), what="the initial sync")
    production_db.contracts.update_one({"_id": 1}, {"$set": {"status": "before stop"}})
    wait_until(lambda: mirrored(local_db, production_db), what="an edit before the stop")
    first.send(signal.SIGTERM)
    assert first.wait_exit() == 0

    production_db.contracts.update_many({"_id": {"$lt": 10}}, {"$set": {"status": "while down"}})
    production_db.contracts.insert_one({"_id": 200, "status": "while down"})
    production_db.users.delete_one({"_id": 0})

    second = start_daemon(config)
    wait_until(lambda: mirrored(local_db, production_db), what="the writes made while down")
    resumed = second.wait_msg("sync done", job="mirror")
    assert resumed["updated"] + resumed["inserted"] + resumed["deleted"] >= 12
    assert not any("reading both sides whole" in str(e.get("msg", "")) for e in second.events()), (
        second.tail()
    )


def test_a_manual_sync_runs_while_the_job_follows(
    config: Path, start_daemon: StartDaemon, local_db: Db, production_db: Db
) -> None:
    daemon = start_daemon(config)
    wait_until(lambda: mirrored(local_db, production_db), what="the initial sync")
    local_db.contracts.insert_one({"_id": 500, "status": "made locally"})

    push = subprocess.run(
        [*syncd_command("-c", str(config), "sync", "to_production", "--yes")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert push.returncode == 0, push.stderr
    assert production_db.contracts.find_one({"_id": 500}) is not None
    # The local insert is a local edit to the mirror (from production): a batch that sees
    # it before the push has run stops `contracts` as drifted; the push resolves that, and
    # the collection it touched is tried again at once, not at the next half-minute check.
    production_db.users.update_one({"_id": 1}, {"$set": {"email": "back again"}})
    production_db.contracts.update_one({"_id": 5}, {"$set": {"status": "after the push"}})
    wait_until(
        lambda: (local_db.users.find_one({"_id": 1}) or {}).get("email") == "back again",
        what="the job going on after the manual push",
    )
    wait_until(
        lambda: (local_db.contracts.find_one({"_id": 5}) or {}).get("status") == "after the push",
        timeout=15,
        what="contracts applied again after the push resolved its drift",
    )
    assert daemon.proc is not None and daemon.proc.poll() is None


def test_the_source_killed_and_restarted_mid_stream_catches_up(
    tmp_path: Path,
    local_uri: str,
    local_db: Db,
    mongo_server_factory: Callable[..., MongoServer],
    start_daemon: StartDaemon,
) -> None:
    server = mongo_server_factory()
    with MongoClient(server.uri, directConnection=True) as client:
        production = client["prod"]
        production.contracts.insert_many([{"_id": i, "status": "draft"} for i in range(30)])
        daemon = start_daemon(config_file(tmp_path, local_uri, server.uri_for("prod") + SHORT))
        wait_until(lambda: mirrored(local_db, production), what="the initial sync")

        server.kill()
        daemon.wait_msg("sync failed", job="mirror", timeout=60)
        server.restart()
        production.contracts.update_one({"_id": 7}, {"$set": {"status": "after the crash"}})

        wait_until(lambda: mirrored(local_db, production), timeout=60, what="catching up")


def test_sighup_restarts_a_changed_follower_and_keeps_an_unchanged_one(
    config: Path, start_daemon: StartDaemon, local_db: Db, production_db: Db
) -> None:
    daemon = start_daemon(config)
    wait_until(lambda: mirrored(local_db, production_db), what="the initial sync")

    mark = daemon.mark()
    daemon.send(signal.SIGHUP)
    reloaded = daemon.wait_msg("config reloaded", start=mark)
    assert reloaded["changed"] == "-"
    production_db.contracts.update_one({"_id": 2}, {"$set": {"status": "after reload"}})
    wait_until(lambda: mirrored(local_db, production_db), what="following after the reload")
    assert not any(e.get("msg") == "continuous sync stopped" for e in daemon.events()[mark:]), (
        daemon.tail()
    )

    text = config.read_text(encoding="utf-8").replace(
        "continuous: true}", "continuous: true, collections: [contracts]}"
    )
    config.write_text(text, encoding="utf-8")
    mark = daemon.mark()
    daemon.send(signal.SIGHUP)
    changed = daemon.wait_msg("config reloaded", start=mark)
    assert changed["changed"] == "mirror"
    daemon.wait_msg("continuous sync stopped", start=mark)
    daemon.wait_msg("continuous sync started", start=mark)
    production_db.contracts.update_one({"_id": 3}, {"$set": {"status": "new follower"}})
    wait_until(
        lambda: (local_db.contracts.find_one({"_id": 3}) or {}).get("status") == "new follower",
        what="the restarted follower applying",
    )


def test_a_source_without_change_streams_is_said_and_synced_every_minute(
    tmp_path: Path,
    local_uri: str,
    local_db: Db,
    mongo_server_factory: Callable[..., MongoServer],
    start_daemon: StartDaemon,
) -> None:
    server = mongo_server_factory(extra_args=("--standalone",))
    with MongoClient(server.uri, directConnection=True) as client:
        client["prod"].contracts.insert_many([{"_id": i} for i in range(10)])
        daemon = start_daemon(config_file(tmp_path, local_uri, server.uri_for("prod")))

        said = daemon.wait_msg("production: a standalone server has no change streams")
        assert "syncs every minute instead" in said["msg"]
        wait_until(lambda: local_db.contracts.count_documents({}) == 10, what="the first sync")


def test_a_target_without_change_streams_follows_the_source_and_checks_writes_by_id(
    tmp_path: Path,
    production_uri: str,
    production_db: Db,
    mongo_server_factory: Callable[..., MongoServer],
    start_daemon: StartDaemon,
) -> None:
    """A standalone local: the source's stream is followed, never the source read whole
    (no batch after the first copy is a full read); the documents a batch writes are
    checked for drift by _id; the target is not watched (it is no activity)."""
    production_db.contracts.insert_many([{"_id": i, "status": "draft"} for i in range(30)])
    production_db.users.insert_many([{"_id": i, "email": f"u{i}@x"} for i in range(5)])
    server = mongo_server_factory(extra_args=("--standalone",))
    path = tmp_path / "syncd.yaml"
    text = config_text(tmp_path / "state", server.uri_for("loc"), production_uri)
    path.write_text(
        text.replace(
            MIRROR, MIRROR.replace("continuous: true", "continuous: true, target_scan: 1h")
        ),
        encoding="utf-8",
    )
    with MongoClient(server.uri, directConnection=True) as client:
        local = client["loc"]
        daemon = start_daemon(path)
        said = daemon.wait_msg("local: a standalone server has no change streams")
        assert "checks the documents it writes there by _id" in said["msg"], said
        wait_until(lambda: mirrored(local, production_db), what="the initial sync")

        production_db.contracts.update_one({"_id": 3}, {"$set": {"status": "signed"}})
        production_db.contracts.insert_one({"_id": 100, "status": "new"})
        production_db.contracts.delete_one({"_id": 4})
        wait_until(lambda: mirrored(local, production_db), timeout=15, what="the edits")

        local.users.update_one({"_id": 2}, {"$set": {"email": "edited-locally@x"}})
        production_db.users.update_one({"_id": 2}, {"$set": {"email": "edited-in-production@x"}})
        daemon.wait_msg("continuous job mirror: users stopped applying")
        assert local.users.find_one({"_id": 2}) == {"_id": 2, "email": "edited-locally@x"}

        def metric(mode: str) -> float:
            return (
                daemon.metric("syncd_sync_collections_total", flow="from_production", mode=mode)
                or 0
            )

        assert metric("source-changes") >= 2  # batches: the source's stream, the target by _id
        assert metric("full") == 2  # the first copy of each collection only
        assert metric("changes") == 0
