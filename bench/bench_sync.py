"""syncd against the raw-copy floor: full sync, incremental sync, no-op, backup/restore, RSS.

Usage: bench/bench_sync.py [--n 100000] [--runs 3]
Starts two SecantusDB servers (or uses SYNCD_BENCH_URI_SOURCE / SYNCD_BENCH_URI_TARGET),
prints a table of medians, docs/s and ratios against the raw copy.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gridfs
from bson import ObjectId
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient

BIN = Path(sys.executable).parent
TARGETS = {"full": 1.2, "changed": 0.6, "noop": 0.55}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(tmp: Path, name: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    data = tmp / name
    data.mkdir()
    log = (tmp / f"{name}.log").open("wb")
    proc = subprocess.Popen(
        [
            str(BIN / "secantusd-py"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--storage-path",
            str(data),
            "--log-level",
            "WARNING",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            MongoClient(uri, serverSelectionTimeoutMS=500).admin.command("ping")
            return proc, uri
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.1)
    raise RuntimeError(f"{name} server did not start")


def contract(rng: random.Random, i: int) -> dict[str, Any]:
    return {
        "_id": ObjectId(),
        "number": f"CT-{i:08d}",
        "title": f"Service agreement {i}",
        "status": rng.choice(["draft", "active", "expired", "terminated"]),
        "third_party": {
            "name": f"Supplier {rng.randrange(5000)}",
            "tax_id": f"{rng.randrange(10**9):09d}",
            "address": {
                "city": rng.choice(["Bogotá", "Medellín", "Cali"]),
                "line": "Calle 1 # 2-3",
            },
        },
        "value": {"amount": rng.randrange(10**8) / 100, "currency": "COP"},
        "clauses": [{"n": k, "text": "x" * rng.randrange(40, 120)} for k in range(6)],
        "signatories": [
            {"user_id": ObjectId(), "role": "legal", "signed": rng.random() < 0.5} for _ in range(2)
        ],
        "notes": "n" * 150,
        "version": 1,
    }


def load(uri: str, db: str, n: int) -> None:
    client = MongoClient(uri)
    client.drop_database(db)
    rng = random.Random(7)
    batch = []
    for i in range(n):
        batch.append(contract(rng, i))
        if len(batch) == 5000:
            client[db].legal_contracts.insert_many(batch)
            batch = []
    if batch:
        client[db].legal_contracts.insert_many(batch)
    client[db].legal_contracts.create_index("number", unique=True)
    fs = gridfs.GridFS(client[db])
    for k in range(20):
        fs.put(rng.randbytes(300_000), filename=f"template-{k}.docx")


def raw_copy(src: str, dst: str, db: str) -> float:
    s, t = MongoClient(src), MongoClient(dst)
    t.drop_database(db)
    started = time.monotonic()
    for coll in ("legal_contracts", "fs.files", "fs.chunks"):
        for batch in s[db][coll].find_raw_batches(batch_size=2000):
            docs, off = [], 0
            while off < len(batch):
                size = int.from_bytes(batch[off : off + 4], "little")
                docs.append(RawBSONDocument(batch[off : off + size]))
                off += size
            t[db][coll].insert_many(docs, ordered=False)
    return time.monotonic() - started


def write_config(path: Path, src: str, dst: str, db: str, state: Path, before: str) -> None:
    path.write_text(f"""version: 1
state_dir: {state}
endpoints:
  production: {{uri: "{src.replace("/?", f"/{db}?")}"}}
  local: {{uri: "{dst.replace("/?", f"/{db}?")}"}}
flows:
  from_production: {{source: production, target: local}}
collections:
  - name: "*"
drift: overwrite
backups: {{keep_last: 2, compress: none, before_sync: {before}}}
""")


def run_syncd(config: Path, *args: str) -> tuple[float, int]:
    """Wall time and peak RSS (KiB) of one `syncd` process."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(BIN / "syncd"), "-c", str(config), "--log-level", "WARNING", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(
            f"syncd {' '.join(args)} failed: {proc.stderr.read().decode() if proc.stderr else ''}"
        )
    return elapsed, usage.ru_maxrss


def mutate(uri: str, db: str, n: int, seed: int) -> None:
    client = MongoClient(uri)
    coll = client[db].legal_contracts
    rng = random.Random(seed)
    ids = [d["_id"] for d in coll.find({}, {"_id": 1})]
    rng.shuffle(ids)
    updates, inserts, deletes = n // 100, n // 1000, n // 1000
    for i in range(0, updates, 1000):
        coll.update_many(
            {"_id": {"$in": ids[i : min(i + 1000, updates)]}}, {"$inc": {"version": 1}}
        )
    coll.delete_many({"_id": {"$in": ids[updates : updates + deletes]}})
    coll.insert_many([contract(rng, n + seed * 10_000 + k) for k in range(inserts)])


def median(runs: int, fn: Callable[[], float]) -> float:
    return statistics.median(fn() for _ in range(runs))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="syncd-bench-"))
    procs = []
    try:
        src = os.environ.get("SYNCD_BENCH_URI_SOURCE")
        dst = os.environ.get("SYNCD_BENCH_URI_TARGET")
        if not (src and dst):
            (p1, src), (p2, dst) = start_server(tmp, "source"), start_server(tmp, "target")
            procs = [p1, p2]
        results = measure(src, dst, tmp, args.n, args.runs)
        print_table(results, args.n)
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def measure(src: str, dst: str, tmp: Path, n: int, runs: int) -> dict[str, Any]:
    db = "bench"
    r: dict[str, Any] = {}
    print(f"loading {n} documents + 20 GridFS files ...", file=sys.stderr)
    load(src, db, n)
    r["raw"] = median(runs, lambda: raw_copy(src, dst, db))
    cfg = tmp / "syncd.yaml"

    def full() -> float:
        shutil.rmtree(tmp / "state", ignore_errors=True)
        MongoClient(dst).drop_database(db)
        write_config(cfg, src, dst, db, tmp / "state", "full")
        seconds, rss = run_syncd(cfg, "sync", "from_production")
        r.setdefault("rss_full", []).append(rss)
        return seconds

    r["full"] = median(runs, full)
    for before in ("changes", "full"):

        def changed(before: str = before) -> float:
            mutate(src, db, n, seed=random.randrange(1, 10**6))
            write_config(cfg, src, dst, db, tmp / "state", before)
            seconds, rss = run_syncd(cfg, "sync", "from_production")
            r.setdefault("rss_changed", []).append(rss)
            return seconds

        r[f"changed_{before}"] = median(runs, changed)
    r["noop"] = median(runs, lambda: run_syncd(cfg, "sync", "from_production")[0])
    r["backup"] = median(runs, lambda: run_syncd(cfg, "backup", "create", "production")[0])
    return r


def print_table(r: dict[str, Any], n: int) -> None:
    raw = r["raw"]
    rows = [
        ("raw copy floor (find raw + insert_many)", raw, None),
        ("syncd full sync into empty target", r["full"], TARGETS["full"]),
        ("syncd 1% changed, before_sync: changes", r["changed_changes"], TARGETS["changed"]),
        ("syncd 1% changed, before_sync: full", r["changed_full"], None),
        ("syncd no-op sync", r["noop"], TARGETS["noop"]),
        ("backup create (whole database)", r["backup"], None),
    ]
    print(f"\nN = {n} documents (~1 KB) + 20 GridFS files of 300 KB; medians")
    print(f"{'measure':44} {'seconds':>8} {'docs/s':>9} {'x raw':>6} {'target':>7}")
    for name, seconds, target in rows:
        ratio = seconds / raw
        verdict = "" if target is None else (f"<={target} {'ok' if ratio <= target else 'MISS'}")
        print(f"{name:44} {seconds:8.2f} {n / seconds:9.0f} {ratio:6.2f} {verdict:>7}")
    print(
        f"peak RSS full sync: {max(r['rss_full']) / 1024:.0f} MB; "
        f"incremental: {max(r['rss_changed']) / 1024:.0f} MB"
    )


if __name__ == "__main__":
    sys.exit(main())
