"""`syncd run` as systemd and an operator see it: a real daemon process, two real servers,
a notify socket, signals, the log and the metrics port."""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest
from pymongo.database import Database

from syncd.backup import list_backups
from syncd.lease import target_lease
from syncd.state.statedir import StateDir
from tests.conftest import AuthServer
from tests.support.daemon import NotifySocket, SyncdDaemon, syncd_command, wait_until
from tests.support.dataset import COLLECTIONS, load_seed_dataset
from tests.support.servers import FAIL_FAST, Credentials

pytestmark = pytest.mark.slow

Db = Database[dict[str, Any]]
StartDaemon = Callable[..., SyncdDaemon]


def daemon_config(
    state_dir: Path,
    local_uri: str,
    production_uri: str,
    schedules: str,
    *,
    protected: bool = False,
    collections: tuple[str, ...] = ("users", "audit_events"),
    extra: str = "",
) -> str:
    """A config in the seed's shape; `schedules` is the YAML list under `schedules:`."""
    policy = "\n".join(f"  - name: {name}" for name in collections)
    return (
        "version: 1\n"
        f"state_dir: {state_dir}\n"
        "endpoints:\n"
        f"  local: {{uri: '{local_uri}'}}\n"
        f"  production: {{uri: '{production_uri}', protected: {str(protected).lower()}}}\n"
        "flows:\n"
        "  to_production: {source: local, target: production}\n"
        "  from_production: {source: production, target: local}\n"
        f"collections:\n{policy}\n"
        f"schedules:\n{schedules}"
        "metrics: {listen: '127.0.0.1:0'}\n"
        f"{extra}"
    )


PULL_EVERY_SECOND = "  - {name: pull, flow: from_production, interval: 1s}\n"
PUSH_ON_SIGNAL = "  - {name: deploy-push, flow: to_production, on_signal: true, unattended: true}\n"


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def silent_uri() -> Iterator[str]:
    """A port that accepts TCP connections and never answers: a job pointed there hangs in
    server selection, deaf to a stop, for as long as a test lasts (not syncd's 10 s, which
    a loaded machine can spend before the test's first signal lands). The test holds the
    port, so nothing else can take it (a port that was merely free could be reused by the
    daemon's own metrics listener)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        port = sock.getsockname()[1]
        yield (
            f"mongodb://127.0.0.1:{port}/prod?directConnection=true"
            "&serverSelectionTimeoutMS=300000&connectTimeoutMS=300000"
        )


def is_ready(message: dict[str, str]) -> bool:
    return message.get("READY") == "1"


def emails(db: Db) -> list[str]:
    return sorted(doc["email"] for doc in db.users.find())


def add_users(db: Db, *names: str) -> None:
    db.users.insert_many([{"email": f"{name}@valkyria.com", "name": name} for name in names])


# -- start, interval schedule ------------------------------------------------------------


def test_interval_pull_brings_production_data_after_ready(
    write_config: Callable[..., Path],
    start_daemon: StartDaemon,
    notify: NotifySocket,
    state_dir: Path,
    local_uri: str,
    production_uri: str,
    local_db: Db,
    production_db: Db,
) -> None:
    seed = load_seed_dataset(production_db)
    config = write_config(
        daemon_config(
            state_dir, local_uri, production_uri, PULL_EVERY_SECOND, collections=COLLECTIONS
        )
    )
    daemon = start_daemon(config)

    ready = notify.messages[notify.wait_for(is_ready)]
    assert ready["STATUS"].startswith("ready: 1 timed schedule(s)")
    done = daemon.wait_msg("sync done", job="pull")

    assert done["flow"] == "from_production" and done["trigger"] == "interval"
    assert done["collections"] == len(COLLECTIONS)
    assert done["inserted"] == seed.total_documents
    assert done["updated"] == done["deleted"] == 0 and done["seconds"] > 0
    assert {name: local_db[name].count_documents({}) for name in COLLECTIONS} == seed.counts
    notify.wait_for(lambda m: m.get("STATUS", "").startswith("last job pull: success"))
    runs = daemon.metric("syncd_sync_runs_total", flow="from_production", result="success")
    assert runs is not None and runs >= 1
    wait_until(
        lambda: daemon.metric("syncd_endpoint_up", endpoint="production") == 1,
        what="endpoint_up{production} == 1",
    )


# -- SIGUSR1 -----------------------------------------------------------------------------


def test_sigusr1_runs_the_on_signal_push_with_journal_style_lines(
    write_config: Callable[..., Path],
    start_daemon: StartDaemon,
    notify: NotifySocket,
    state_dir: Path,
    local_uri: str,
    production_uri: str,
    local_db: Db,
    production_db: Db,
) -> None:
    add_users(local_db, "admin", "legal", "hector")
    config = write_config(
        daemon_config(state_dir, local_uri, production_uri, PUSH_ON_SIGNAL, protected=True)
    )
    # Under systemd, JOURNAL_STREAM is set and journald adds the timestamps.
    daemon = start_daemon(config, log_format="text", env={"JOURNAL_STREAM": "8:12345"})
    notify.wait_for(is_ready)
    assert production_db.users.count_documents({}) == 0  # on_signal only: nothing ran yet

    daemon.send(signal.SIGUSR1)
    done = daemon.wait_log(lambda e: "sync done" in e.get("raw", ""))["raw"]

    assert emails(production_db) == emails(local_db)
    # journald reads the `<6>` prefix as the priority (info), so `journalctl -p` filters work
    assert re.fullmatch(
        r"<6>INFO syncd\.daemon: sync done job=deploy-push trigger=signal flow=to_production "
        r"result=success collections=1 inserted=3 updated=0 deleted=0 seconds=[0-9.]+",
        done,
    ), done
    lines = daemon.lines()
    assert (
        "<6>INFO syncd.daemon: SIGUSR1: running the on_signal schedules jobs=deploy-push" in lines
    )
    assert not any(re.match(r"\d{4}-\d\d-\d\d", line) for line in lines)
    notify.wait_for(lambda m: m.get("STATUS", "").startswith("last job deploy-push: success"))


def test_signal_push_to_a_protected_endpoint_needs_unattended(
    write_config: Callable[..., Path],
    start_daemon: StartDaemon,
    notify: NotifySocket,
    state_dir: Path,
    local_uri: str,
    production_uri: str,
    local_db: Db,
    production_db: Db,
) -> None:
    add_users(local_db, "admin")
    attended = "  - {name: deploy-push, flow: to_production, on_signal: true}\n"
    config = write_config(
        daemon_config(state_dir, local_uri, production_uri, attended, protected=True)
    )
    daemon = start_daemon(config)
    notify.wait_for(is_ready)

    daemon.send(signal.SIGUSR1)
    refused = daemon.wait_msg("sync refused", job="deploy-push")

    assert refused["level"] == "warning" and refused["result"] == "refused"
    assert "unattended: true" in refused["msg"]
    assert production_db.users.count_documents({}) == 0
    assert daemon.metric("syncd_sync_runs_total", flow="to_production", result="refused") == 1


# -- SIGHUP ------------------------------------------------------------------------------


def test_sighup_with_a_valid_config_starts_the_new_schedule(
    write_config: Callable[..., Path],
    start_daemon: StartDaemon,
    notify: NotifySocket,
    state_dir: Path,
    local_uri: str,
    production_uri: str,
    local_db: Db,
    production_db: Db,
) -> None:
    add_users(production_db, "admin", "legal")
    config = write_config(daemon_config(state_dir, local_uri, production_uri, PUSH_ON_SIGNAL))
    daemon = start_daemon(config)
    first_ready = notify.wait_for(is_ready)

    write_config(
        daemon_config(state_dir, local_uri, production_uri, PUSH_ON_SIGNAL + PULL_EVERY_SECOND)
    )
    mark = daemon.mark()
    daemon.send(signal.SIGHUP)

    reloading = notify.wait_for(
        lambda m: m.get("RELOADING") == "1" and m.get("MONOTONIC_USEC", "").isdigit(),
        start=first_ready + 1,
    )
    notify.wait_for(is_ready, start=reloading + 1)
    reloaded = daemon.wait_msg("config reloaded", start=mark)
    assert reloaded["added"] == "pull" and reloaded["removed"] == "-"
    daemon.wait_msg("sync done", start=mark, job="pull")
    assert emails(local_db) == emails(production_db)
    assert daemon.metric("syncd_config_last_reload_successful") == 1


def test_sighup_with_an_invalid_config_keeps_running_the_old_one(
    write_config: Callable[..., Path],
    start_daemon: StartDaemon,
    notify: NotifySocket,
    state_dir: Path,
    local_uri: str,
    production_uri: str,
    local_db: Db,
    production_db: Db,
) -> None:
    good = daemon_config(state_dir, local_uri, production_uri, PULL_EVERY_SECOND)
    config = write_config(good)
    daemon = start_daemon(config)
    daemon.wait_msg("sync done", job="pull")

    broken = good.replace("interval: 1s", "interval: 1 fortnight") + "bogus: true\n"
    write_config(broken)
    mark = daemon.mark()
    daemon.send(signal.SIGHUP)

    failed = daemon.wait_msg("config reload failed", start=mark)
    assert failed["level"] == "error"
    errors = [
        e["msg"] for e in daemon.events()[mark:] if e.get("msg", "").startswith("config error")
    ]
    assert any(
        re.search(rf"{re.escape(str(config))}:\d+:\d+: bogus: unknown key", e) for e in errors
    )
    assert any("schedules[0].interval: invalid interval" in e for e in errors)
    assert daemon.metric("syncd_config_last_reload_successful") == 0
    reloading = notify.wait_for(lambda m: m.get("RELOADING") == "1")
    notify.wait_for(is_ready, start=reloading + 1)

    # The old config goes on: the pull still runs and still brings new production data.
    after_failure = daemon.mark()
    add_users(production_db, "newcomer")
    wait_until(lambda: "newcomer@valkyria.com" in emails(local_db), what="pull after reload")
    daemon.wait_msg("sync done", start=after_failure, job="pull")

    write_config(good)
    daemon.send(signal.SIGHUP)
    daemon.wait_msg("config reloaded", start=after_failure)
    assert daemon.metric("syncd_config_last_reload_successful") == 1


# -- stopping ----------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_exits_zero_and_says_stopping(
    signum: signal.Signals,
    write_config: Callable[..., Path],
    start_daemon: StartDaemon,
    notify: NotifySocket,
    state_dir: Path,
    local_uri: str,
    production_uri: str,
) -> None:
    config = write_config(daemon_config(state_dir, local_uri, production_uri, PUSH_ON_SIGNAL))
    daemon = start_daemon(config)
    notify.wait_for(is_ready)

    daemon.send(signum)

    assert daemon.wait_exit(30) == 0
    notify.wait_for(lambda m: m.get("STOPPING") == "1")
    assert any(e.get("msg") == "stopped" for e in daemon.events())


def test_sigterm_during_a_long_sync_leaves_the_target_consistent_and_a_rerun_converges(
    write_config: Callable[..., Path],
    start_daemon: StartDaemon,
    notify: NotifySocket,
    state_dir: Path,
    local_uri: str,
    production_uri: str,
    local_db: Db,
    production_db: Db,
) -> None:
    total = 8000
    for start in range(0, total, 2000):
        production_db.events.insert_many(
            [{"_id": i, "kind": "audit", "payload": "x" * 1000} for i in range(start, start + 2000)]
        )
    config = write_config(
        daemon_config(
            state_dir, local_uri, production_uri, PULL_EVERY_SECOND, collections=("events",)
        )
    )
    daemon = start_daemon(config)
    daemon.wait_msg("sync started", job="pull")
    wait_until(lambda: local_db.events.count_documents({}) > 0, what="first batch")

    daemon.send(signal.SIGTERM)

    assert daemon.wait_exit(30) == 0
    ends = [e for e in daemon.events() if e.get("job") == "pull" and "result" in e]
    assert ends and ends[-1]["msg"].startswith(("sync abandoned", "sync done")), ends
    # Old or new documents only: whatever arrived is exactly the production document.
    for doc in local_db.events.find():
        assert doc == {"_id": doc["_id"], "kind": "audit", "payload": "x" * 1000}
    rerun = subprocess.run(
        syncd_command("-c", str(config), "sync", "from_production", "--no-wait"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert local_db.events.count_documents({}) == total


def test_second_sigterm_stops_at_once(
    write_config: Callable[..., Path],
    start_daemon: StartDaemon,
    notify: NotifySocket,
    state_dir: Path,
    local_uri: str,
    silent_uri: str,
) -> None:
    # The pull hangs in server selection, deaf to the first SIGTERM.
    config = write_config(daemon_config(state_dir, local_uri, silent_uri, PULL_EVERY_SECOND))
    daemon = start_daemon(config)
    daemon.wait_msg("sync started", job="pull")

    daemon.send(signal.SIGTERM)
    stopping = daemon.wait_msg("SIGTERM: stopping")
    assert stopping["running"] == "pull"
    daemon.send(signal.SIGTERM)

    assert daemon.wait_exit(30) == 0
    assert any(e.get("msg", "").startswith("second SIGTERM: stopping now") for e in daemon.events())


def test_a_job_deaf_to_the_stop_is_abandoned_after_the_grace_time(
    write_config: Callable[..., Path],
    start_daemon: StartDaemon,
    state_dir: Path,
    local_uri: str,
    silent_uri: str,
) -> None:
    config = write_config(daemon_config(state_dir, local_uri, silent_uri, PULL_EVERY_SECOND))
    # The same daemon with a 1 s grace instead of 25 s, so the test does not wait that long.
    short_grace = [
        sys.executable,
        "-c",
        "import sys; from syncd.daemon import service; service.STOP_GRACE_SECONDS = 1.0; "
        "from syncd.cli import main; sys.exit(main(sys.argv[1:]))",
    ]
    daemon = start_daemon(config, command=short_grace)
    daemon.wait_msg("sync started", job="pull")

    daemon.send(signal.SIGTERM)

    assert daemon.wait_exit(30) == 0
    abandon = [e for e in daemon.events() if e.get("msg", "").startswith("still running after")]
    assert abandon, daemon.tail()
    assert abandon[0]["running"] == "pull" and abandon[0]["level"] == "warning"


# -- lease, outage, backups, watchdog --------------------------------------------------------


def test_busy_target_skips_the_scheduled_run_and_refuses_a_no_wait_sync(
    write_config: Callable[..., Path],
    start_daemon: StartDaemon,
    state_dir: Path,
    local_uri: str,
    production_uri: str,
    local_db: Db,
    production_db: Db,
) -> None:
    add_users(production_db, "admin")
    config = write_config(daemon_config(state_dir, local_uri, production_uri, PULL_EVERY_SECOND))
    with target_lease(StateDir(state_dir), "local", job="test holder"):
        daemon = start_daemon(config)
        skipped = daemon.wait_msg("sync skipped", job="pull")
        assert f"pid {os.getpid()} on this machine" in skipped["msg"]
        assert "job 'test holder'" in skipped["msg"]
        assert skipped["level"] == "warning"
        manual = subprocess.run(
            syncd_command("-c", str(config), "sync", "from_production", "--no-wait"),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert manual.returncode == 3, manual.stderr
        assert "is being written by" in manual.stderr
        assert local_db.users.count_documents({}) == 0
        runs = daemon.metric("syncd_sync_runs_total", flow="from_production", result="skipped")
        assert runs is not None and runs >= 1
        mark = daemon.mark()

    daemon.wait_msg("sync done", start=mark, job="pull")
    assert emails(local_db) == ["admin@valkyria.com"]


def test_production_outage_is_logged_and_the_daemon_recovers(
    write_config: Callable[..., Path],
    start_daemon: StartDaemon,
    mongo_server_factory: Callable[..., Any],
    state_dir: Path,
    local_uri: str,
    local_db: Db,
) -> None:
    production = mongo_server_factory()
    with production.client() as client:
        add_users(client.valkyria, "admin")
    config = write_config(
        daemon_config(
            state_dir, local_uri, production.uri_for("valkyria") + FAIL_FAST, PULL_EVERY_SECOND
        )
    )
    daemon = start_daemon(config)
    daemon.wait_msg("sync done", job="pull")

    production.kill()
    mark = daemon.mark()
    failed = daemon.wait_msg("sync failed", start=mark, job="pull")
    assert "production" in failed["msg"] and "unreachable" in failed["msg"]
    assert failed["level"] == "error"

    production.restart()
    with production.client() as client:
        add_users(client.valkyria, "after-outage")
    mark = daemon.mark()
    wait_until(lambda: "after-outage@valkyria.com" in emails(local_db), what="pull after restart")
    daemon.wait_msg("sync done", start=mark, job="pull")
    failures = daemon.metric("syncd_sync_runs_total", flow="from_production", result="failure")
    assert failures is not None and failures >= 1
    daemon.send(signal.SIGTERM)
    assert daemon.wait_exit() == 0


def test_failing_credentials_never_reach_the_log(
    write_config: Callable[..., Path],
    start_daemon: StartDaemon,
    auth_server: AuthServer,
    state_dir: Path,
    local_uri: str,
) -> None:
    secret = "Wr0ng-" + secrets.token_hex(8)
    wrong = Credentials(auth_server.users.app.username, secret, auth_server.users.app_database)
    uri = auth_server.server.uri_for(auth_server.users.app_database, credentials=wrong)
    text = daemon_config(state_dir, local_uri, "unused", PULL_EVERY_SECOND, protected=True)
    text = text.replace("{uri: 'unused', protected: true}", "{uri_env: PROD_URI, protected: true}")
    daemon = start_daemon(write_config(text), env={"PROD_URI": uri})

    failed = daemon.wait_msg("sync failed", job="pull")
    down = daemon.wait_msg("endpoint is down", endpoint="production")

    # The ping and the job say it in the words of `syncd status`: cause, then what to do.
    said = "authentication failed; check the user name and password in the URI"
    assert down["msg"] == f"endpoint is down: {said} (from environment variable PROD_URI)"
    assert f"is unreachable: {said} (from environment variable PROD_URI)" in failed["msg"]
    log = "\n".join(daemon.lines())
    assert secret not in log and quote_plus(secret) not in log


def test_backup_schedule_keeps_the_last_n(
    write_config: Callable[..., Path],
    start_daemon: StartDaemon,
    state_dir: Path,
    local_uri: str,
    production_uri: str,
    local_db: Db,
) -> None:
    add_users(local_db, "admin", "legal")
    schedules = "  - {name: local-backup, backup: local, interval: 1s}\n"
    config = write_config(
        daemon_config(
            state_dir, local_uri, production_uri, schedules, extra="backups: {keep_last: 2}\n"
        )
    )
    daemon = start_daemon(config)

    def backups_done() -> int:
        return sum(1 for e in daemon.events() if e.get("msg") == "backup done")

    wait_until(lambda: backups_done() >= 3, what="three backups")
    done = daemon.wait_msg("backup done")
    assert done["endpoint"] == "local" and done["documents"] == 2
    assert daemon.metric("syncd_backups", endpoint="local") == 2
    daemon.send(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    kept = [b for b in list_backups(state_dir / "backups") if b.endpoint == "local"]
    assert len(kept) == 2 and all(b.verified for b in kept)


def test_watchdog_pings_when_systemd_asks(
    write_config: Callable[..., Path],
    start_daemon: StartDaemon,
    notify: NotifySocket,
    state_dir: Path,
    local_uri: str,
    production_uri: str,
) -> None:
    config = write_config(daemon_config(state_dir, local_uri, production_uri, PUSH_ON_SIGNAL))
    start_daemon(config, env={"WATCHDOG_USEC": "200000"})

    index = notify.wait_for(is_ready)
    for _ in range(3):
        index = notify.wait_for(lambda m: m.get("WATCHDOG") == "1", start=index + 1)


def test_verify_schedule_counts_its_result_and_writes_nothing(
    write_config: Callable[..., Path],
    start_daemon: StartDaemon,
    state_dir: Path,
    local_uri: str,
    production_uri: str,
    local_db: Db,
    production_db: Db,
) -> None:
    add_users(local_db, "admin", "legal", "hector")
    add_users(production_db, "admin")
    schedules = "  - {name: weekly-verify, verify: to_production, interval: 1s}\n"
    config = write_config(daemon_config(state_dir, local_uri, production_uri, schedules))
    daemon = start_daemon(config)
    before = emails(local_db), emails(production_db)

    found = daemon.wait_msg("verify found differences", job="weekly-verify")

    assert found["flow"] == "to_production" and found["result"] == "different"
    assert found["mismatched"] == 4  # 3 local users missing, 1 production user extra (own _id)
    assert "users: 3 missing, 1 extra, 0 different" in found["msg"]
    different = daemon.metric("syncd_verify_runs_total", flow="to_production", result="different")
    assert different is not None and different >= 1
    mismatched = "syncd_verify_mismatched_documents"
    assert daemon.metric(mismatched, flow="to_production", collection="users") == 4
    assert (emails(local_db), emails(production_db)) == before

    production_db.users.delete_many({})
    production_db.users.insert_many(list(local_db.users.find()))
    mark = daemon.mark()
    done = daemon.wait_msg("verify done", start=mark, job="weekly-verify")

    assert done["result"] == "equal" and done["mismatched"] == 0
    wait_until(
        lambda: daemon.metric(mismatched, flow="to_production", collection="users") == 0,
        what="mismatched documents back to 0",
    )
    assert daemon.metric("syncd_verify_runs_total", flow="to_production", result="failure") == 0
