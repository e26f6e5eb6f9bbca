"""One writer per target across machines: the lease document in the target database.

Two "machines" share nothing but production: each has its own state directory, its own
local database and its own config, and runs the real `syncd` command as a process. A run
is held right after it took its lease (a pause point, `syncd/pause.py`) and frozen there
with SIGSTOP, so the other machine meets a live lease deterministically, whatever the speed
of the machine; SIGCONT lets it go on.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from syncd.backup import list_backups
from syncd.config import load_config
from syncd.endpoints import open_endpoint
from syncd.lease import LeaseLost, target_lease, write_lease
from syncd.state.statedir import StateDir
from tests.conftest import AuthServer, DbNames
from tests.engine_kit import Pair, backup_contents, config_text, snapshot, syncd
from tests.safety_cli import SYNCD, Ran, run_syncd, syncd_env
from tests.support.daemon import SyncdDaemon, wait_until
from tests.support.pause import DEADLINE, Holds, stop_at
from tests.support.servers import FAIL_FAST, Credentials, Server

Capsys = pytest.CaptureFixture[str]

pytestmark = pytest.mark.slow

Db = Database[dict[str, Any]]
LEASES = "_syncd_leases"
HOST = socket.gethostname()
SHORT_EXPIRY = {"SYNCD_LEASE_SECONDS": "3"}
CONTRACTS = 3000
LEASE_TAKEN = "lease.taken"  # where a held run waits (syncd/pause.py)


@dataclass
class Machine:
    """One set-up: its own config, state directory and local database; production shared."""

    name: str
    local: Db
    config: Path
    root: Path
    procs: list[subprocess.Popen[bytes]]
    holds: dict[int, Holds] = field(default_factory=dict)  # pid -> its pause points

    def run(self, *args: str, env: dict[str, str] | None = None) -> Ran:
        return run_syncd(self.config, *args, env=env)

    def start(
        self, *args: str, env: dict[str, str] | None = None, hold: bool = False
    ) -> subprocess.Popen[bytes]:
        """`hold`: the run waits once it took its lease, for `stopped_holding`."""
        log = self.log(len(self.procs))
        holds = Holds.at(self.root, LEASE_TAKEN) if hold else None
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(SYNCD), "-c", str(self.config), *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=syncd_env({**(env or {}), **(holds.env if holds else {})}),
            )
        self.procs.append(proc)
        if holds is not None:
            self.holds[proc.pid] = holds
        return proc

    def log(self, index: int) -> Path:
        return self.root / f"{self.name}-{index}.log"

    def output(self, proc: subprocess.Popen[bytes]) -> str:
        return self.log(self.procs.index(proc)).read_text(errors="replace")


@pytest.fixture
def machines(
    pair: Pair,
    server_local: Server,
    local_client: MongoClient[dict[str, Any]],
    dbnames: DbNames,
) -> Iterator[tuple[Machine, Machine]]:
    """Machine a uses the pair's local database and state; machine b gets its own of both."""
    b_name = f"{dbnames.local}_b"
    local_client.drop_database(b_name)
    b_root = pair.root / "b"
    b_root.mkdir()
    b_config = b_root / "syncd.yaml"
    b_config.write_text(
        config_text(
            b_root / "state", server_local.uri_for(b_name), pair.production_uri, hook=False
        ),
        encoding="utf-8",
    )
    pair.configure(hook=False)
    a = Machine("a", pair.local, pair.config, pair.root, [])
    b = Machine("b", local_client[b_name], b_config, b_root, [])
    try:
        yield a, b
    finally:
        for proc in a.procs + b.procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
            proc.wait()
        local_client.drop_database(b_name)


def lease_of(production: Db, pid: int | None = None) -> dict[str, Any] | None:
    query: dict[str, Any] = {"_id": "writer"}
    if pid is not None:
        query["pid"] = pid
    return production[LEASES].find_one(query)


def stopped_holding(
    machine: Machine, proc: subprocess.Popen[bytes], production: Db
) -> dict[str, Any]:
    """Freeze `proc` (started with `hold`) with SIGSTOP right after it took production's
    lease; its lease document."""
    stop_at(proc, machine.holds[proc.pid], LEASE_TAKEN)
    held = lease_of(production, proc.pid)
    assert held is not None, "the run holds the lease where it is stopped"
    return held


def finished(proc: subprocess.Popen[bytes]) -> int:
    os.kill(proc.pid, signal.SIGCONT)
    return proc.wait(timeout=DEADLINE)


def waiting_for(machine: Machine, proc: subprocess.Popen[bytes], holder_pid: int) -> str:
    """The waiting line `proc` printed about `holder_pid`."""
    marker = f"waiting for the write lease of 'production': being written by pid {holder_pid}"

    def line() -> str | None:
        assert proc.poll() is None, machine.output(proc)
        return next((x for x in machine.output(proc).splitlines() if marker in x), None)

    found: str = wait_until(line, timeout=DEADLINE, what="the waiting line")
    return found


def add_contracts(db: Db, value: str) -> None:
    db.contracts.insert_many(
        [
            {"_id": i, "title": f"contract {i}", "v": value, "body": "x" * 200}
            for i in range(CONTRACTS)
        ]
    )


# -- two machines push at once ---------------------------------------------------------------


def test_concurrent_pushes_are_serialized_and_the_second_plans_after_the_first(
    machines: tuple[Machine, Machine], pair: Pair, capsys: Capsys
) -> None:
    """Both machines start from the same production; both edit the same contracts. Had
    b planned while a was writing, it would have found production as it last left it (no
    drift) and replaced a's edits with its own."""
    a, b = machines
    add_contracts(pair.production, "v0")
    for machine in (a, b):
        assert syncd(capsys, machine.config, "sync", "from_production").code == 0
    a.local.contracts.update_many({}, {"$set": {"v": "edited on a"}})
    b.local.contracts.update_many({"_id": {"$lt": 10}}, {"$set": {"v": "edited on b"}})

    push_a = a.start("sync", "to_production", "--yes", hold=True)
    held = stopped_holding(a, push_a, pair.production)
    push_b = b.start("sync", "to_production", "--yes")
    line = waiting_for(b, push_b, push_a.pid)

    assert finished(push_a) == 0, a.output(push_a)
    assert push_b.wait(timeout=DEADLINE) == 3, b.output(push_b)
    assert f"on host {HOST}" in line and "job 'manual sync', flow to_production" in line
    assert f"since {held['acquired']:%Y-%m-%d %H:%M:%S} UTC" in line
    assert "drift" in b.output(push_b)  # b saw a's writes: it planned after a finished
    assert pair.production.contracts.count_documents({"v": "edited on a"}) == CONTRACTS
    assert lease_of(pair.production) is None  # both gave it back


def test_a_killed_holder_is_taken_over_once_its_lease_expires(
    machines: tuple[Machine, Machine], pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = machines
    add_contracts(a.local, "from a")
    b.local.templates.insert_many([{"_id": i, "name": f"template {i}"} for i in range(5)])

    push_a = a.start("sync", "to_production", "--yes", env=SHORT_EXPIRY, hold=True)
    held = stopped_holding(a, push_a, pair.production)
    push_a.kill()  # kill -9: no release
    push_a.wait()
    assert lease_of(pair.production, push_a.pid) is not None

    push_b = b.run("sync", "to_production", "-C", "templates", "--yes", env=SHORT_EXPIRY)

    assert push_b.code == 0, push_b
    assert f"being written by pid {push_a.pid} on host {HOST}" in push_b.stderr
    assert f"took over the write lease of 'production' from pid {push_a.pid}" in push_b.stderr
    assert f"expired {held['expires']:%Y-%m-%d %H:%M:%S} UTC" in push_b.stderr
    assert snapshot(pair.production, ["templates"]) == snapshot(b.local, ["templates"])
    assert lease_of(pair.production) is None


def test_no_wait_refuses_naming_the_holder_and_status_shows_it(
    machines: tuple[Machine, Machine], pair: Pair
) -> None:
    a, b = machines
    add_contracts(a.local, "from a")
    b.local.templates.insert_one({"_id": 1, "name": "offer letter"})

    push_a = a.start("sync", "to_production", "--yes", hold=True)
    stopped_holding(a, push_a, pair.production)
    refused = b.run("sync", "to_production", "--yes", "--no-wait")
    status = b.run("status")
    status_json = b.run("status", "--json")
    assert finished(push_a) == 0, a.output(push_a)
    after = json.loads(b.run("status", "--json").stdout)

    assert refused.code == 3, refused
    assert f"'production' is being written by pid {push_a.pid} on host {HOST}" in refused.stderr
    assert "job 'manual sync', flow to_production) since" in refused.stderr
    assert "templates" not in pair.production.list_collection_names()
    shown = f"  production: being written by pid {push_a.pid} on host {HOST} ("
    assert shown in status.stdout, status
    holder = json.loads(status_json.stdout)["endpoints"]["production"]["lease"]["holder"]
    assert holder["pid"] == push_a.pid and holder["host"] == HOST
    assert holder["job"] == "manual sync" and holder["flow"] == "to_production"
    assert holder["expired"] is False
    assert after["endpoints"]["production"]["lease"]["holder"] is None


def test_scheduled_runs_skip_and_count_while_another_machine_writes_and_manual_runs_wait(
    machines: tuple[Machine, Machine], pair: Pair, tmp_path: Path
) -> None:
    """Machine a runs the daemon with the CI's on_signal push; machine b pushes by hand."""
    a, b = machines
    add_contracts(a.local, "from a")
    b.local.templates.insert_one({"_id": 1, "name": "offer letter"})
    schedules = (
        "schedules:\n"
        "  - {name: deploy-push, flow: to_production, collections: [contracts], "
        "on_signal: true, unattended: true}\n"
        "metrics: {listen: '127.0.0.1:0'}\n"
    )
    a.config.write_text(a.config.read_text() + schedules, encoding="utf-8")
    daemon_holds = Holds.at(tmp_path, LEASE_TAKEN)  # the first run that takes the lease
    daemon = SyncdDaemon(a.config, tmp_path / "daemon.log", env=daemon_holds.env).start()
    try:
        daemon.wait_msg("syncd started")
        push_b = b.start("sync", "to_production", "-C", "templates", "--yes", hold=True)
        holder = stopped_holding(b, push_b, pair.production)
        mark = daemon.mark()
        daemon.send(signal.SIGUSR1)
        skipped = daemon.wait_msg("sync skipped", start=mark, job="deploy-push")
        count = daemon.metric("syncd_sync_runs_total", flow="to_production", result="skipped")
        assert finished(push_b) == 0, b.output(push_b)

        assert f"being written by pid {holder['pid']} on host {HOST}" in skipped["msg"]
        assert count == 1
        assert "contracts" not in pair.production.list_collection_names()

        b.local.templates.insert_one({"_id": 2, "name": "nda"})
        mark = daemon.mark()
        daemon.send(signal.SIGUSR1)
        stop_at(daemon.proc, daemon_holds, LEASE_TAKEN)  # type: ignore[arg-type]
        push_b = b.start("sync", "to_production", "-C", "templates", "--yes")
        line = waiting_for(b, push_b, daemon.pid)
        os.kill(daemon.pid, signal.SIGCONT)
        daemon.wait_msg("sync done", start=mark, job="deploy-push")

        assert push_b.wait(timeout=DEADLINE) == 0, b.output(push_b)
        assert "job 'deploy-push', flow to_production" in line
        assert pair.production.contracts.count_documents({}) == CONTRACTS
        assert pair.production.templates.count_documents({}) == 2
    finally:
        os.kill(daemon.pid, signal.SIGCONT)
        daemon.stop()


def test_a_run_that_lost_its_lease_stops_before_the_next_batch_and_a_rerun_converges(
    machines: tuple[Machine, Machine], pair: Pair
) -> None:
    """The holder froze for longer than the expiry (a suspended VM) and another machine took
    the lease over meanwhile; woken up, the holder must not write on."""
    a, _ = machines
    add_contracts(a.local, "from a")
    push_a = a.start("sync", "to_production", "--yes", env=SHORT_EXPIRY, hold=True)
    held = stopped_holding(a, push_a, pair.production)

    def expired() -> bool:
        now = pair.production.client.admin.command("hello")["localTime"]
        return bool(now > held["expires"])

    wait_until(expired, timeout=DEADLINE, what="the lease to expire")
    taken = {"token": "other", "pid": 1, "host": "ci-runner", "job": "deploy-push"}
    later = held["expires"] + timedelta(hours=1)
    pair.production[LEASES].update_one({"_id": "writer"}, {"$set": {**taken, "expires": later}})
    code = finished(push_a)

    output = a.output(push_a)
    assert code == 1, output
    assert "lost the write lease of 'production'" in output
    assert "Stopped before the next batch" in output and "running it again converges" in output
    assert lease_of(pair.production)["host"] == "ci-runner"  # type: ignore[index]
    pair.production[LEASES].delete_one({"_id": "writer"})
    rerun = a.run("sync", "to_production", "--yes", "--drift", "overwrite")
    assert rerun.code == 0, rerun
    assert snapshot(pair.production, ["contracts"]) == snapshot(a.local, ["contracts"])


def test_sigterm_gives_the_lease_back(machines: tuple[Machine, Machine], pair: Pair) -> None:
    a, _ = machines
    add_contracts(a.local, "from a")
    push_a = a.start("sync", "to_production", "--yes", hold=True)
    stopped_holding(a, push_a, pair.production)
    push_a.send_signal(signal.SIGTERM)  # delivered when it goes on

    assert finished(push_a) == 1
    assert "stopped by SIGTERM; the write lease was given back" in a.output(push_a)
    assert lease_of(pair.production) is None


# -- what is and is not in the target ------------------------------------------------------


def test_lease_local_writes_no_lease_collection(pair: Pair, capsys: Capsys) -> None:
    pair.configure(hook=False)
    text = pair.config.read_text().replace("protected: true", "protected: true\n    lease: local")
    pair.config.write_text(text, encoding="utf-8")
    pair.local.contracts.insert_many([{"_id": i} for i in range(5)])

    assert syncd(capsys, pair.config, "sync", "to_production", "--yes").code == 0
    shown = json.loads(syncd(capsys, pair.config, "status", "--json").out)

    assert LEASES not in pair.production.list_collection_names()
    assert shown["endpoints"]["production"]["lease"] == {
        "kind": "local",
        "holder": None,
        "summary": None,
    }


def test_syncd_collections_never_travel_are_never_backed_up_nor_shown(
    pair: Pair, capsys: Capsys
) -> None:
    pair.configure(hook=False, drift="overwrite")
    pair.local.contracts.insert_many([{"_id": i, "v": "local"} for i in range(5)])
    pair.local["_syncd_notes"].insert_one({"_id": 1, "note": "a local syncd collection"})
    pair.production.contracts.insert_many([{"_id": i, "v": "production"} for i in range(5)])

    push = syncd(capsys, pair.config, "sync", "to_production", "--yes")
    assert push.code == 0, push.text
    assert syncd(capsys, pair.config, "sync", "from_production").code == 0
    assert syncd(capsys, pair.config, "backup", "create", "production").code == 0
    assert syncd(capsys, pair.config, "backup", "create", "local").code == 0
    named = syncd(capsys, pair.config, "sync", "to_production", "-C", "_syncd_notes", "--yes")
    shown = json.loads(syncd(capsys, pair.config, "status", "--json").out)

    assert LEASES in pair.production.list_collection_names()  # the lease was taken there
    assert "_syncd_notes" not in pair.production.list_collection_names()
    assert len(list_backups(pair.backups)) == 3  # before the push, then one per endpoint
    for contents in backup_contents(pair).values():
        assert [name for name in contents if name.startswith("_syncd")] == []
    assert named.code == 3 and "_syncd_notes: syncd's own collection" in named.err
    for flow in shown["flows"].values():
        assert [c["collection"] for c in flow["collections"]] == ["contracts"]
    assert "_syncd" not in push.text


def test_config_naming_a_syncd_collection_is_an_error(pair: Pair, capsys: Capsys) -> None:
    pair.configure(hook=False, collections="- name: _syncd_leases\n- name: '*'")

    result = syncd(capsys, pair.config, "validate")

    assert result.code == 2
    assert "collections[0].name: '_syncd_leases': collections named _syncd* are syncd's own" in (
        result.err
    )


def test_a_target_that_refuses_the_lease_says_to_set_lease_local(
    auth_server: AuthServer, write_config: Callable[..., Path], local_uri: str, tmp_path: Path
) -> None:
    server, users = auth_server.server, auth_server.users
    reader = Credentials(f"reader-{os.getpid()}", "reader-password-1", users.app_database)
    with server.client(credentials=users.admin) as admin:
        admin[users.app_database].command(
            "createUser", reader.username, pwd=reader.password, roles=["read"]
        )
    try:
        config = write_config(
            f"""
            version: 1
            state_dir: {tmp_path / "state"}
            endpoints:
              local: {{uri: "{local_uri}"}}
              production:
                uri_env: PROD_URI
            flows:
              to_production: {{source: local, target: production}}
            collections:
              - name: "*"
            """
        )
        prod_uri = server.uri_for(users.app_database, credentials=reader)
        result = run_syncd(config, "sync", "to_production", "--yes", env={"PROD_URI": prod_uri})
    finally:
        with server.client(credentials=users.admin) as admin:
            admin[users.app_database].command("dropUser", reader.username)

    assert result.code == 1, result
    assert "cannot take the write lease in 'production'" in result.stderr
    assert "set `lease: local` on endpoint 'production'" in result.stderr
    assert "check the endpoint's credentials and the user's roles" in result.stderr
    assert result.stderr.rstrip().endswith("; nothing was written")
    assert reader.password not in result.output


# -- same machine, restores, a lease left behind ----------------------------------------------


def another_machine_holds(production: Db, *, expires_in: float) -> dict[str, Any]:
    """A lease document as a run on host ci-runner leaves it (server times)."""
    now = production.client.admin.command("hello")["localTime"]
    lease = {
        "_id": "writer",
        "token": "ci",
        "host": "ci-runner",
        "pid": 4242,
        "user": "deploy",
        "job": "deploy-push",
        "flow": "to_production",
        "acquired": now,
        "renewed": now,
        "expires": now + timedelta(seconds=expires_in),
    }
    production[LEASES].replace_one({"_id": "writer"}, lease, upsert=True)
    return lease


def test_restores_take_the_lease_and_take_over_one_left_behind(pair: Pair, capsys: Capsys) -> None:
    pair.configure(hook=False)
    pair.production.contracts.insert_many([{"_id": i, "v": "before"} for i in range(5)])
    assert syncd(capsys, pair.config, "backup", "create", "production").code == 0
    (backup,) = list_backups(pair.backups)
    pair.production.contracts.update_many({}, {"$set": {"v": "after"}})
    another_machine_holds(pair.production, expires_in=600)

    refused = syncd(capsys, pair.config, "backup", "restore", backup.name, "--yes", "--no-wait")
    untouched = pair.production.contracts.count_documents({"v": "after"})
    held = syncd(capsys, pair.config, "status").out
    left = another_machine_holds(pair.production, expires_in=-5)  # its holder died
    stale = syncd(capsys, pair.config, "status").out
    restored = syncd(capsys, pair.config, "backup", "restore", backup.name, "--yes", "--no-wait")

    assert refused.code == 3, refused.text
    assert "'production' is being written by pid 4242 on host ci-runner" in refused.err
    assert untouched == 5
    assert "production: being written by pid 4242 on host ci-runner (user deploy, job " in held
    assert (
        "production: the write lease of pid 4242 on host ci-runner (user deploy, job "
        "'deploy-push', flow to_production) since "
    ) in stale
    assert f"expired at {left['expires']:%Y-%m-%d %H:%M:%S} UTC" in stale
    assert restored.code == 0, restored.text
    assert "took over the write lease of 'production' from pid 4242 on host ci-runner" in (
        restored.err
    )
    assert pair.production.contracts.count_documents({"v": "before"}) == 5
    assert lease_of(pair.production) is None


def test_a_manual_run_waits_for_a_writer_on_this_machine_and_says_so(
    pair: Pair, tmp_path: Path
) -> None:
    pair.configure(hook=False)
    pair.local.templates.insert_one({"_id": 1, "name": "offer letter"})
    machine = Machine("a", pair.local, pair.config, pair.root, [])
    with target_lease(
        StateDir(pair.state_dir), "production", job="nightly-pull", flow="from_production"
    ):
        push = machine.start("sync", "to_production", "--yes")
        try:
            line = wait_until(
                lambda: (
                    "waiting for the write lease of 'production'" in machine.output(push)
                    or push.poll() is not None
                ),
                timeout=DEADLINE,
                what="the waiting line",
            )
            assert push.poll() is None and line, machine.output(push)
            assert "templates" not in pair.production.list_collection_names()
        except BaseException:
            push.kill()
            push.wait()
            raise

    assert push.wait(timeout=DEADLINE) == 0, machine.output(push)
    assert (
        f"being written by pid {os.getpid()} on this machine (user {getpass.getuser()}, "
        "job 'nightly-pull', flow from_production) since "
    ) in machine.output(push)
    assert pair.production.templates.count_documents({}) == 1


def test_a_held_lease_is_renewed_and_check_fails_once_it_cannot_be(
    mongo_server_factory: Callable[..., Any],
    write_config: Callable[..., Path],
    local_uri: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = mongo_server_factory()
    config = load_config(
        write_config(
            f"""
            version: 1
            state_dir: {tmp_path / "state"}
            endpoints:
              local: {{uri: "{local_uri}"}}
              production: {{uri: "{server.uri_for("prod")}{FAIL_FAST}"}}
            flows:
              to_production: {{source: local, target: production}}
            collections:
              - name: "*"
            """
        )
    )
    monkeypatch.setenv("SYNCD_LEASE_SECONDS", "2")
    target = open_endpoint(config.endpoints["production"])
    try:
        with write_lease(config, target, job="deploy-push", flow="to_production") as lease:
            first = lease_of(target.db)
            assert first is not None
            wait_until(
                lambda: target.client.admin.command("hello")["localTime"] > first["expires"],
                what="the first expiry to pass",
            )
            lease.check()  # renewed meanwhile: still ours
            renewed = lease_of(target.db)
            assert renewed is not None and renewed["expires"] > first["expires"]
            assert renewed["token"] == first["token"]

            server.kill()
            wait_until(lambda: raises_lease_lost(lease.check), what="check() to fail")
        with pytest.raises(LeaseLost, match="lost the write lease of 'production': not renewed"):
            lease.check()
    finally:
        target.close()


def raises_lease_lost(check: Callable[[], None]) -> bool:
    try:
        check()
    except LeaseLost:
        return True
    return False
