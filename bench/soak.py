"""Soak: `syncd run` with frequent schedules while a writer mutates both sides and a chaos
loop kills and restarts the servers and signals the daemon. Not part of `make test`.

Usage: bench/soak.py [--minutes 10] [--seed N] [--keep]

At calm checkpoints (writer paused, chaos paused, a fresh successful pull and push seen in
the log) and at the end (chaos stopped, a final manual sync), local must equal production
byte for byte. The daemon's JSON log gives the figures: runs by result, retries, backups.
Memory: the daemon's RSS (from /proc) after warm-up and at the end.

The servers are SecantusDB processes run by a small class here: bench/ stays independent
of tests/ (a soak must not break when a test helper changes).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient
from pymongo.errors import PyMongoError

BIN = Path(sys.executable).parent
COLLECTIONS = {"orders": "from_production", "events": "from_production", "drafts": "to_production"}
TIMEOUTS = "serverSelectionTimeoutMS=2000&connectTimeoutMS=2000&socketTimeoutMS=15000"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """One SecantusDB process on a fixed port; kill -9 and restart keep port and storage."""

    def __init__(self, root: Path, name: str) -> None:
        self.name, self.port = name, free_port()
        self.data = root / name
        self.data.mkdir(parents=True)
        self.proc: subprocess.Popen[bytes] | None = None

    def uri(self, database: str, options: str = "") -> str:
        query = "&".join(o for o in ("directConnection=true", options) if o)
        return f"mongodb://127.0.0.1:{self.port}/{database}?{query}"

    def start(self) -> None:
        config = self.data / "secantusd.toml"
        config.write_text("# empty\n")
        with (self.data.parent / f"{self.name}.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "secantusd-py"), "--config", str(config), "--host", "127.0.0.1"]
                + ["--port", str(self.port), "--storage-path", str(self.data)]
                + ["--log-level", "WARNING", "--cache-size", "256M"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 60
        with MongoClient(self.uri("admin"), serverSelectionTimeoutMS=500) as probe:
            while True:
                try:
                    probe.admin.command("ping")
                    return
                except PyMongoError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"{self.name} did not start") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def config_text(state: Path, local: Server, production: Server, metrics_port: int) -> str:
    rules = "\n".join(f"  - name: {n}\n    flows: [{f}]" for n, f in COLLECTIONS.items())
    return (
        textwrap.dedent(
            f"""\
        version: 1
        state_dir: {state}
        endpoints:
          local:
            uri: "{local.uri("soak_local", TIMEOUTS)}"
          production:
            uri: "{production.uri("soak_prod", TIMEOUTS)}"
            protected: true
        flows:
          to_production: {{source: local, target: production}}
          from_production: {{source: production, target: local}}
        drift: abort
        backups: {{keep_last: 3, compress: gzip, before_sync: full}}
        metrics: {{listen: "127.0.0.1:{metrics_port}"}}
        schedules:
          - {{name: pull, flow: from_production, interval: 3s}}
          - {{name: pull-orders, flow: from_production, collections: [orders], interval: 2s}}
          - {{name: push, flow: to_production, interval: 4s, unattended: true}}
          - {{name: push-on-signal, flow: to_production, on_signal: true, unattended: true}}
          - {{name: backup-production, backup: production, interval: 5s}}
        """
        )
        + f"collections:\n{rules}\n"
    )


class Writer(threading.Thread):
    """Mutates production's orders/events and local's drafts: inserts, updates, deletes."""

    def __init__(self, local: Server, production: Server, rng: random.Random) -> None:
        super().__init__(name="writer", daemon=True)
        self.local, self.production, self.rng = local, production, rng
        self.stop_event, self.paused = threading.Event(), threading.Event()
        self.idle = threading.Event()
        self.writes = self.errors = 0

    def run(self) -> None:
        opts = {"serverSelectionTimeoutMS": 1000, "socketTimeoutMS": 5000}
        with (
            MongoClient(self.local.uri("soak_local"), **opts) as lc,
            MongoClient(self.production.uri("soak_prod"), **opts) as pc,
        ):
            targets = [pc.soak_prod.orders, pc.soak_prod.events, lc.soak_local.drafts]
            while not self.stop_event.is_set():
                if self.paused.is_set():
                    self.idle.set()
                    self.stop_event.wait(0.05)
                    continue
                self.idle.clear()
                try:
                    self.mutate(self.rng.choice(targets))
                    self.writes += 1
                except PyMongoError:
                    self.errors += 1
                    self.stop_event.wait(0.2)
                self.stop_event.wait(self.rng.uniform(0.005, 0.03))
        self.idle.set()

    def mutate(self, coll: Any) -> None:
        key = self.rng.randrange(3000)
        roll = self.rng.random()
        if roll < 0.5:
            doc = {"n": key, "v": self.rng.random(), "pad": os.urandom(self.rng.randrange(400))}
            coll.replace_one({"_id": key}, doc, upsert=True)
        elif roll < 0.8:
            coll.update_one({"_id": key}, {"$inc": {"edits": 1}, "$set": {"t": time.time()}})
        else:
            coll.delete_one({"_id": key})


class DaemonLog:
    """Reads the daemon's JSON log (stderr file) incrementally."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.events = path, 0, list[dict[str, Any]]()

    def poll(self) -> list[dict[str, Any]]:
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        new = []
        for line in data[:end].splitlines():
            with contextlib.suppress(ValueError):
                new.append(json.loads(line))
        self.events += new
        return new


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def snapshot(server: Server, database: str) -> dict[str, list[bytes]]:
    """Every document, raw BSON bytes (field order and numeric types count), sorted."""
    with MongoClient(server.uri(database), document_class=RawBSONDocument) as client:
        db = client[database]
        return {name: sorted(bytes(d.raw) for d in db[name].find()) for name in COLLECTIONS}


def equal(local: Server, production: Server) -> bool:
    return snapshot(local, "soak_local") == snapshot(production, "soak_prod")


def syncd(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "syncd"), "-c", str(config), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def wait_for_success(log: DaemonLog, job: str, after: float, deadline: float) -> bool:
    """A job that started after `after` (unix time) logged success before `deadline`."""
    while time.monotonic() < deadline:
        log.poll()
        for e in log.events:
            if e.get("job") == job and e.get("result") == "success":
                started = _unix(e["ts"]) - float(e.get("seconds", 0))
                if started > after:
                    return True
        time.sleep(0.2)
    return False


def _unix(ts: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(ts).timestamp()


def main() -> int:  # noqa: C901 - one linear script, read top to bottom
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="syncd-soak-"))
    local, production = Server(root, "local"), Server(root, "production")
    local.start()
    production.start()
    config = root / "syncd.yaml"
    config.write_text(config_text(root / "state", local, production, free_port()))
    writer = Writer(local, production, rng)
    chaos: Counter[str] = Counter()
    checkpoints: list[bool] = []
    log_path = root / "daemon.log"
    daemon: subprocess.Popen[bytes] | None = None
    try:
        with MongoClient(production.uri("soak_prod")) as seed:
            for _ in range(600):  # a starting data set
                writer.mutate(seed.soak_prod[rng.choice(["orders", "events"])])
        with log_path.open("wb") as err:
            daemon = subprocess.Popen(
                [str(BIN / "syncd"), "-c", str(config), "--log-format", "json", "run"],
                stdout=subprocess.DEVNULL,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )
        log = DaemonLog(log_path)
        ready_by = time.monotonic() + 60  # signals only once the handlers are in place
        while not any(e.get("msg") == "scheduled" for e in log.poll() + log.events):
            if daemon.poll() is not None or time.monotonic() > ready_by:
                raise RuntimeError("the daemon did not start; see " + str(log_path))
            time.sleep(0.1)
        writer.start()
        started = time.monotonic()
        end = started + args.minutes * 60
        next_checkpoint = started + 90
        rss_start = 0
        print(f"soak: {args.minutes} min, seed {args.seed}, work dir {root}", flush=True)
        while time.monotonic() < end:
            if daemon.poll() is not None:
                raise RuntimeError(f"the daemon exited with {daemon.returncode}")
            if not rss_start and time.monotonic() > started + 30:
                rss_start = rss_kib(daemon.pid)
            if time.monotonic() > next_checkpoint and time.monotonic() < end - 60:
                checkpoints.append(checkpoint(writer, log))
                eq = equal(local, production) if checkpoints[-1] else None
                print(f"  checkpoint {len(checkpoints)}: runs seen, equal={eq}", flush=True)
                checkpoints[-1] = bool(eq)
                writer.paused.clear()
                next_checkpoint = time.monotonic() + 120
            action = rng.choice(["kill-production", "kill-local", "sighup", "sigusr1", "none"])
            chaos[action] += 1
            if action.startswith("kill"):
                server = production if action == "kill-production" else local
                server.kill()
                time.sleep(rng.uniform(0.5, 4))  # down for a while
                server.start()
            elif action == "sighup":
                daemon.send_signal(signal.SIGHUP)
            elif action == "sigusr1":
                daemon.send_signal(signal.SIGUSR1)
            time.sleep(rng.uniform(3, 12))
        rss_end = rss_kib(daemon.pid)
        writer.stop_event.set()
        writer.join(30)
        daemon.send_signal(signal.SIGTERM)
        daemon_exit = daemon.wait(60)
        final = [
            syncd(config, "sync", flow, "--yes") for flow in ("from_production", "to_production")
        ]
        final_equal = equal(local, production)
        log.poll()
        report(log.events, chaos, writer, checkpoints, final, final_equal, daemon_exit)
        print(f"  daemon RSS: start {rss_start / 1024:.1f} MiB, end {rss_end / 1024:.1f} MiB")
        stable = rss_end <= rss_start * 1.5 + 20 * 1024
        ok = final_equal and all(checkpoints) and daemon_exit == 0 and stable
        ok = ok and all(r.returncode == 0 for r in final)
        print(f"soak: {'PASS' if ok else 'FAIL'} (memory {'stable' if stable else 'GREW'})")
        return 0 if ok else 1
    finally:
        writer.stop_event.set()
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
        local.stop()
        production.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(root, ignore_errors=True)


def checkpoint(writer: Writer, log: DaemonLog) -> bool:
    """Writer paused: a pull and a push that both started afterwards must succeed."""
    writer.paused.set()
    writer.idle.wait(10)
    calm = time.time()
    deadline = time.monotonic() + 90
    return wait_for_success(log, "pull", calm, deadline) and wait_for_success(
        log, "push", calm, deadline
    )


def report(
    events: list[dict[str, Any]],
    chaos: Counter[str],
    writer: Writer,
    checkpoints: list[bool],
    final: list[subprocess.CompletedProcess[str]],
    final_equal: bool,
    daemon_exit: int,
) -> None:
    runs: Counter[str] = Counter()
    backups: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for e in events:
        msg, result = str(e.get("msg", "")), e.get("result")
        if result and msg.startswith("sync "):
            runs[str(result)] += 1
        elif result and msg.startswith("backup "):
            backups[str(result)] += 1
        if result in ("failure", "refused") and ":" in msg:
            reasons[msg.split(":", 1)[1].strip()[-100:]] += 1
    retries = sum(1 for e in events if e.get("msg") == "transient error, retrying")
    reloads = sum(1 for e in events if "reload" in str(e.get("msg", "")).lower())
    print("soak figures")
    print(f"  sync runs: {sum(runs.values())} {dict(runs)}")
    print(f"  backups:   {sum(backups.values())} {dict(backups)}")
    print(f"  retries (transient errors retried): {retries}")
    print(f"  chaos: {dict(chaos)}; config reload log lines: {reloads}")
    print(f"  writer: {writer.writes} writes, {writer.errors} failed while a server was down")
    print(f"  calm checkpoints equal: {sum(checkpoints)}/{len(checkpoints)}")
    print(f"  daemon exit on SIGTERM: {daemon_exit}")
    for r in final:
        print(f"  final sync: exit {r.returncode} {r.stderr.strip().splitlines()[-1:]}")
    print(f"  final equality (local == production, byte for byte): {final_equal}")
    for reason, n in reasons.most_common(6):
        print(f"    {n} x {reason}")


if __name__ == "__main__":
    sys.exit(main())
