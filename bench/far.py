"""Production far away: syncd against a production behind an 80 ms link (issue 23).

Usage: bench/far.py [--delay 0.040] [--idle 60] [--local standalone,replset] [--log DIR]
                    [--trace DIR]

Starts two SecantusDB servers per local topology (production a one-node replica set; the
local a standalone, or a one-node replica set), loads the Valkyria-shaped data set into
production (21 collections of 200 documents, 5,000 more contracts, GridFS files: ~8 MB)
and puts production behind a delaying proxy of our own (tests/support/delayproxy.py:
`--delay` each way, counting requests and bytes). Every syncd figure is a real `syncd`
process. Measured, per local topology:

- `mongodump --archive | mongorestore --archive --drop` through the same link when both
  are installed, else its equivalent in pymongo (each collection read whole, 4 at once as
  mongorestore does, inserted into the emptied local);
- the first `syncd sync from_production`; the same again with nothing changed; after one
  document changed in production; `syncd status`; a push of one document changed locally;
- a continuous mirror (`continuous: true`, target_scan 1m) into the local: what it reads
  from production in `--idle` seconds with nothing written (scaled to a minute), and for
  one changed document.

Wall times are also given in round trips of the link (wall / (2 x delay)). `--trace DIR`
writes, per step, every message that crossed the proxy (when, connection, command).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gridfs
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
from bench_sync import BIN, contract, free_port, start_server  # noqa: E402

from tests.support.delayproxy import DelayProxy  # noqa: E402

DB = "valkyria"
EXTRA_CONTRACTS = 5000
TARGETS = {  # issue 23, at 80 ms a round trip
    "noop": ("<= 20 RT, <= 2% bytes", 20),
    "one": ("<= 25 RT, <= 2% bytes", 25),
    "status": ("<= 20 RT", 20),
    "push": ("<= 25 RT", 25),
}


def load(uri: str) -> int:
    """The data set; returns its size in bytes (BSON)."""
    rng = random.Random(23)
    with MongoClient(uri) as client:
        db = client[DB]
        for k in range(20):
            db[f"coll_{k:02d}"].insert_many(
                [
                    {"n": i, "name": f"item {i}", "body": "b" * rng.randrange(200, 600)}
                    for i in range(200)
                ]
            )
        db.contracts.insert_many([contract(rng, i) for i in range(200 + EXTRA_CONTRACTS)])
        fs = gridfs.GridFS(db)
        for i in range(8):
            fs.put(rng.randbytes(300_000), filename=f"scan_{i}.pdf")
        return int(db.command("dbStats")["dataSize"])


def config(path: Path, state: Path, local: str, production: str, *, mirror: bool = False) -> Path:
    schedules = (
        "schedules:\n  - {name: mirror, flow: from_production, continuous: true}\n"
        if mirror
        else ""
    )
    path.write_text(
        "version: 1\n"
        f"state_dir: {state}\n"
        "endpoints:\n"
        f"  local: {{uri: '{with_db(local)}'}}\n"
        f"  production: {{uri: '{with_db(production)}'}}\n"
        "flows:\n"
        "  to_production: {source: local, target: production}\n"
        "  from_production: {source: production, target: local}\n"
        "collections:\n  - name: '*'\n"
        "backups: {before_sync: changes}\n"
        f"{schedules}"
        f"metrics: {{listen: '127.0.0.1:{free_port()}'}}\n",
        encoding="utf-8",
    )
    return path


def with_db(uri: str) -> str:
    base, _, query = uri.partition("?")
    return f"{base.rstrip('/')}/{DB}?{query}"


class Row:
    def __init__(self, step: str, wall: float, requests: int, down: int, note: str = "") -> None:
        self.step, self.wall, self.requests, self.down, self.note = step, wall, requests, down, note


# syncd's own modules compiled once, as an installed syncd has them (pip compiles them at
# install; this checkout is installed editable, and PYTHONDONTWRITEBYTECODE may be set):
# without, every command compiles ~50 modules first, ~0.2 s of its wall time.
PYC = Path(tempfile.mkdtemp(prefix="far-pyc-"))
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
ENV["PYTHONPYCACHEPREFIX"] = str(PYC)


def syncd(cfg: Path, *args: str, log: Path | None = None) -> float:
    started = time.monotonic()
    done = subprocess.run(  # noqa: S603
        [str(BIN / "syncd"), "-c", str(cfg), *args],
        capture_output=True,
        text=True,
        check=False,
        env=ENV,
    )
    wall = time.monotonic() - started
    if log is not None:
        with log.open("a", encoding="utf-8") as out:
            out.write(f"$ syncd {' '.join(args)}\n{done.stderr}{done.stdout}\n")
    if done.returncode != 0:
        raise RuntimeError(f"syncd {' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return wall


TRACES: Path | None = None  # --trace: each step's messages, one file per topology and step
KIND = ""  # the local topology being measured


def measured(proxy: DelayProxy, step: str, run: Any, note: str = "") -> Row:
    proxy.reset()
    proxy.take_trace()
    started = time.time()
    wall = run()
    counts = proxy.reset()
    if TRACES is not None:
        name = step.replace(" ", "-").replace("|", "")
        write_trace(TRACES / f"{KIND}-{name}.trace", proxy, started)
    return Row(step, wall, counts.requests, counts.bytes_down, note)


def write_trace(path: Path, proxy: DelayProxy, started: float) -> None:
    """One line per wire message: seconds since the step began (as it reached the proxy),
    the connection, > a request (its command) or < a reply, its length."""
    with path.open("a", encoding="utf-8") as out:
        for m in proxy.take_trace():
            out.write(
                f"{m.at - started:8.3f} c{m.connection:<3} {'>' if m.up else '<'} "
                f"{m.length:8d} {m.command}\n"
            )


def dump_restore(production: str, local: str) -> tuple[float, str]:
    """mongodump | mongorestore --drop when installed, else the same in pymongo."""
    if shutil.which("mongodump") and shutil.which("mongorestore"):
        started = time.monotonic()
        dump = subprocess.Popen(  # noqa: S603
            ["mongodump", f"--uri={with_db(production)}", "--archive"], stdout=subprocess.PIPE
        )
        subprocess.run(  # noqa: S603
            ["mongorestore", f"--uri={with_db(local)}", "--archive", "--drop"],
            stdin=dump.stdout,
            check=True,
            capture_output=True,
        )
        dump.wait()
        return time.monotonic() - started, "mongodump | mongorestore --drop"
    started = time.monotonic()
    with MongoClient(production) as far, MongoClient(local) as near:
        names = far[DB].list_collection_names()
        raw = far[DB].with_options(
            codec_options=far[DB].codec_options.with_options(document_class=RawBSONDocument)
        )

        def copy(name: str) -> None:
            near[DB].drop_collection(name)
            batch = []
            for doc in raw[name].find():
                batch.append(doc)
                if len(batch) >= 1000:
                    near[DB][name].insert_many(batch)
                    batch = []
            if batch:
                near[DB][name].insert_many(batch)

        pending = list(names)
        lock = threading.Lock()

        def worker() -> None:
            while True:
                with lock:
                    if not pending:
                        return
                    name = pending.pop()
                copy(name)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return time.monotonic() - started, "dump|restore equivalent (pymongo, 4 collections at once)"


def change(uri: str, coll: str, key: dict[str, Any], value: str) -> None:
    with MongoClient(uri) as client:
        client[DB][coll].update_one(key, {"$set": {"status": value}})


@contextmanager
def daemon(cfg: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    out = log.open("ab")
    proc = subprocess.Popen(  # noqa: S603
        [str(BIN / "syncd"), "-c", str(cfg), "run"], stdout=out, stderr=subprocess.STDOUT, env=ENV
    )
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            proc.kill()
        out.close()


def wait_for(check: Any, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        time.sleep(0.1)


def run_topology(local_kind: str, args: argparse.Namespace, logdir: Path) -> tuple[list[Row], int]:
    global KIND  # noqa: PLW0603
    KIND = local_kind
    tmp = Path(tempfile.mkdtemp(prefix=f"far-{local_kind}-"))
    procs = []
    try:
        p1, production = start_server(tmp, "production")
        procs.append(p1)
        extra = ("--standalone",) if local_kind == "standalone" else ()
        p2, local = start_server(tmp, "local", *extra)
        procs.append(p2)
        size = load(production)
        with DelayProxy(
            "127.0.0.1",
            int(production.split(":")[2].split("/")[0]),
            delay=args.delay,
            trace=TRACES is not None,
        ) as proxy:
            far = proxy.uri_for()
            log = logdir / f"far-{local_kind}.log"
            cfg = config(tmp / "syncd.yaml", tmp / "state", local, far)
            rows = []
            how = ""

            def dumped() -> float:
                nonlocal how
                seconds, how = dump_restore(far, local)
                return seconds

            rows.append(measured(proxy, "dump|restore", dumped))
            rows[-1].note = how
            with MongoClient(local) as client:
                client.drop_database(DB)
            rows.append(
                measured(
                    proxy, "first pull", lambda: syncd(cfg, "sync", "from_production", log=log)
                )
            )
            rows.append(
                measured(
                    proxy, "no-op pull", lambda: syncd(cfg, "sync", "from_production", log=log)
                )
            )
            change(production, "contracts", {"number": "CT-00000007"}, "signed")
            rows.append(
                measured(
                    proxy,
                    "one changed doc pull",
                    lambda: syncd(cfg, "sync", "from_production", log=log),
                )
            )
            rows.append(measured(proxy, "status", lambda: syncd(cfg, "status", log=log)))
            change(local, "contracts", {"number": "CT-00000009"}, "edited locally")
            rows.append(
                measured(
                    proxy,
                    "push of one changed doc",
                    lambda: syncd(cfg, "sync", "to_production", "--yes", log=log),
                )
            )
            mcfg = config(tmp / "mirror.yaml", tmp / "state", local, far, mirror=True)
            with daemon(mcfg, log), MongoClient(local) as near:
                time.sleep(args.settle)
                proxy.reset()
                time.sleep(args.idle)
                idle = proxy.reset()
                rows.append(
                    Row(
                        "mirror: idle minute",
                        0.0,
                        idle.requests * 60 / args.idle,
                        idle.bytes_down * 60 / args.idle,
                    )
                )
                change(production, "contracts", {"number": "CT-00000011"}, "mirrored")
                started = time.monotonic()
                wait_for(
                    lambda: (
                        (near[DB].contracts.find_one({"number": "CT-00000011"}) or {}).get("status")
                        == "mirrored"
                    )
                )
                arrived = time.monotonic() - started
                time.sleep(max(0.0, 5.0 - arrived))
                one = proxy.reset()
                rows.append(
                    Row(
                        "mirror: one changed doc (5 s)",
                        arrived,
                        one.requests,
                        one.bytes_down,
                        "wall: until it arrived",
                    )
                )
            return rows, size
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def print_table(kind: str, rows: list[Row], size: int, delay: float) -> None:
    rt = 2 * delay
    print(
        f"\nlocal: {kind}; production: one-node replica set behind {delay * 1000:.0f} ms "
        f"each way; data set {size / 1e6:.1f} MB"
    )
    print(
        f"{'step':34} {'wall s':>7} {'RT':>6} {'requests':>9} {'read MB':>8} {'% prod':>7}  target"
    )
    dump = rows[0].wall
    for r in rows:
        target = ""
        key = {
            "no-op pull": "noop",
            "one changed doc pull": "one",
            "status": "status",
            "push of one changed doc": "push",
        }.get(r.step)
        if key:
            text, limit = TARGETS[key]
            ok = r.wall / rt <= limit and ("bytes" not in text or r.down <= 0.02 * size)
            target = f"{text} {'ok' if ok else 'MISS'}"
        elif r.step == "first pull":
            target = f"<= dump|restore ({dump:.2f} s) {'ok' if r.wall <= dump else 'MISS'}"
        elif r.step == "mirror: idle minute":
            target = f"< 0.1 MB {'ok' if r.down < 100_000 else 'MISS'}"
        elif r.step.startswith("mirror: one"):
            target = f"< 0.2 MB {'ok' if r.down < 200_000 else 'MISS'}"
        print(
            f"{r.step:34} {r.wall:7.2f} {r.wall / rt:6.0f} {r.requests:9.0f} {r.down / 1e6:8.3f} "
            f"{100 * r.down / size:6.1f}%  {target}{'  (' + r.note + ')' if r.note else ''}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--delay", type=float, default=0.040, help="seconds each way")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of the idle mirror")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds before the idle one")
    parser.add_argument("--local", default="standalone,replset")
    parser.add_argument("--log", type=Path, default=None, help="keep syncd's logs here")
    parser.add_argument("--trace", type=Path, default=None, help="each step's messages, here")
    args = parser.parse_args()
    global TRACES  # noqa: PLW0603 - the measuring helpers' one setting
    if args.trace is not None:
        TRACES = args.trace
        TRACES.mkdir(parents=True, exist_ok=True)
    logdir = args.log or Path(tempfile.mkdtemp(prefix="far-logs-"))
    logdir.mkdir(parents=True, exist_ok=True)
    results = {kind: run_topology(kind, args, logdir) for kind in args.local.split(",")}
    for kind, (rows, size) in results.items():
        print_table(kind, rows, size, args.delay)
    print(f"\nsyncd's logs: {logdir}")
    shutil.rmtree(PYC, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
