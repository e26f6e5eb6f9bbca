"""syncd against the raw-copy floor: full sync, masked full sync, incremental sync, no-op,
backup/restore, RSS.

Usage: bench/bench_sync.py [--n 100000] [--runs 3] [--runs-3n 1]
(`make bench`; smaller: `make bench BENCH_ARGS="--n 20000 --runs 1"`)
Starts two SecantusDB servers (or uses SYNCD_BENCH_URI_SOURCE / SYNCD_BENCH_URI_TARGET),
prints a table of medians, docs/s and ratios against the raw copy.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gridfs
from bson import ObjectId
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient

BIN = Path(sys.executable).parent
TARGETS = {"full": 1.1, "changed": 0.1, "noop": 0.03}
# The servers keep 2M oplog entries (SecantusDB's default is 100k): sized, as an operator
# sizes a replica set's oplog, to hold more than one full copy, or a copy's own events
# push the resume point taken before it out of the history.
OPLOG_ENTRIES = "2000000"
MASKED_OVER_FULL = 1.3  # a masked full pull against the unmasked one, same run
MASK_KEY_ENV = "SYNCD_BENCH_MASK_KEY"
MASK = "{third_party.name: name, third_party.tax_id: digits}"  # two masked fields
RSS_GROWTH, RSS_LIMIT = 1.3, 300.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(tmp: Path, name: str, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    """A SecantusDB server on a free port (`extra`: more of its flags, e.g. --standalone)."""
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
            "--oplog-max-entries",
            OPLOG_ENTRIES,
            *extra,
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


def copy_indexes(src: str, dst: str, db: str) -> float:
    """Build the source's indexes on the raw copy: what a copy must also do to be usable."""
    s, t = MongoClient(src), MongoClient(dst)
    started = time.monotonic()
    for coll in ("legal_contracts", "fs.files", "fs.chunks"):
        for index in s[db][coll].list_indexes():
            if index["name"] != "_id_":
                unique = bool(index.get("unique", False))
                t[db][coll].create_index(list(index["key"].items()), unique=unique)
    return time.monotonic() - started


def write_config(
    path: Path, src: str, dst: str, db: str, state: Path, before: str, *, masked: bool = False
) -> None:
    rules = f"  - name: {COLL}\n    mask: {MASK}\n" if masked else ""
    masking = f"masking: {{key_env: {MASK_KEY_ENV}}}\n" if masked else ""
    path.write_text(f"""version: 1
state_dir: {state}
endpoints:
  production: {{uri: "{src.replace("/?", f"/{db}?")}"}}
  local: {{uri: "{dst.replace("/?", f"/{db}?")}"}}
flows:
  from_production: {{source: production, target: local}}
collections:
{rules}  - name: "*"
drift: overwrite
backups: {{keep_last: 2, compress: none, before_sync: {before}}}
{masking}""")


def run_syncd(config: Path, *args: str) -> tuple[float, float]:
    """Wall time (s) and peak RSS (MB) of one `syncd` process.

    The peak is the process's own high-water mark (VmHWM), polled until it exits:
    `ru_maxrss` from `wait4` would not do, because Linux carries the RSS of the parent
    at fork time over to the child, so a child of this (large) benchmark process would
    report the benchmark's memory instead of syncd's.
    """
    started = time.monotonic()
    # Output to files, not pipes: a pipe left unread while waiting can fill and hang syncd.
    with tempfile.TemporaryFile() as out_file, tempfile.TemporaryFile() as err_file:
        proc = subprocess.Popen(
            [str(BIN / "syncd"), "-c", str(config), "--log-level", "WARNING", *args],
            stdout=out_file,
            stderr=err_file,
        )
        peak = 0.0
        while True:
            pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, high_water_mb(proc.pid))
            time.sleep(0.02)
        elapsed = time.monotonic() - started
        out_file.seek(0)
        err_file.seek(0)
        out, err = out_file.read().decode(), err_file.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"syncd {' '.join(args)} failed: {err}{out}")
    return elapsed, peak


def high_water_mb(pid: int) -> float:
    """VmHWM of a running process (0 once it has gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def newest_backup(config: Path) -> str:
    out = subprocess.run(
        [str(BIN / "syncd"), "-c", str(config), "backup", "list", "--json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    listed = json.loads(out)
    backups = listed["backups"] if isinstance(listed, dict) else listed
    return str(backups[0]["name"])


def mutate(uri: str, db: str, n: int, seed: int) -> None:
    """1% of the documents updated, 0.1% deleted, 0.1% inserted."""
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
    coll.insert_many([contract(rng, n * 10 + seed * 10_000 + k) for k in range(inserts)])


class Bench:
    """Every measure on the same two servers; rounds interleave the measures so that a
    change of load on the machine shifts them all alike; figures are medians."""

    def __init__(self, src: str, dst: str, tmp: Path) -> None:
        self.src, self.dst, self.tmp = src, dst, tmp
        self.cfg = tmp / "syncd.yaml"
        self.times: dict[str, list[float]] = {}
        self.rss: dict[str, list[float]] = {}

    def note(self, key: str, seconds: float, rss: float | None = None) -> None:
        self.times.setdefault(key, []).append(seconds)
        if rss is not None:
            self.rss.setdefault(key, []).append(rss)
        print(f"  {key:16} {seconds:7.2f} s" + (f"  {rss:5.0f} MB" if rss else ""), file=sys.stderr)

    def config(self, before: str, *, masked: bool = False) -> None:
        write_config(self.cfg, self.src, self.dst, DB, self.tmp / "state", before, masked=masked)

    def sync(self) -> tuple[float, float]:
        return run_syncd(self.cfg, "sync", "from_production")

    def full(self, key: str = "full", *, masked: bool = False) -> None:
        shutil.rmtree(self.tmp / "state", ignore_errors=True)
        MongoClient(self.dst).drop_database(DB)
        self.config("changes", masked=masked)
        self.note(key, *self.sync())

    def changed(self, n: int, before: str, key: str) -> None:
        mutate(self.src, DB, n, seed=random.randrange(1, 10**6))
        self.config(before)
        self.note(key, *self.sync())

    def round(self, n: int) -> None:
        copy = raw_copy(self.src, self.dst, DB)
        self.note("raw", copy)
        self.note("raw_indexed", copy + copy_indexes(self.src, self.dst, DB))
        self.full("full_masked", masked=True)
        self.full()
        self.note("after_full", *self.sync())  # reads the full copy's own events once
        self.changed(n, "changes", "changed_changes")
        self.changed(n, "full", "changed_full")
        self.config("changes")
        self.note("noop", *self.sync())
        self.note("noop_full", *run_syncd(self.cfg, "sync", "from_production", "--full"))
        self.note("start", *run_syncd(self.cfg, "validate"))
        self.note("backup", *run_syncd(self.cfg, "backup", "create", "production", "-C", COLL))
        name = newest_backup(self.cfg)
        MongoClient(self.dst)[DB][COLL].drop()
        restore = ("backup", "restore", name, "--to", "local", "--yes", "-C", COLL)
        self.note("restore", *run_syncd(self.cfg, *restore))


DB, COLL = "bench", "legal_contracts"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="documents (default 100000)")
    parser.add_argument("--runs", type=int, default=3, help="rounds at N (default 3)")
    parser.add_argument("--runs-3n", type=int, default=1, help="rounds at 3N (default 1)")
    args = parser.parse_args()
    os.environ.setdefault(MASK_KEY_ENV, "bench-masking-key")
    with bench_servers("syncd-bench-") as (src, dst, tmp):
        bench = Bench(src, dst, tmp)
        print(f"loading {args.n} documents + 20 GridFS files ...", file=sys.stderr)
        load(src, DB, args.n)
        for k in range(args.runs):
            print(f"round {k + 1}/{args.runs} at N = {args.n}", file=sys.stderr)
            bench.round(args.n)
        print(f"adding {2 * args.n} documents for 3N ...", file=sys.stderr)
        add(src, DB, args.n, 2 * args.n)
        for k in range(args.runs_3n):
            print(f"round {k + 1}/{args.runs_3n} at 3N = {3 * args.n}", file=sys.stderr)
            bench.full("full_3n")
            bench.note("after_full_3n", *bench.sync())
            bench.changed(3 * args.n, "changes", "changed_3n")
        print_table(bench, args.n)
    return 0


@contextmanager
def bench_servers(prefix: str) -> Iterator[tuple[str, str, Path]]:
    """(source URI, target URI, scratch dir): `SYNCD_BENCH_URI_SOURCE` / `_TARGET` when
    both are set, else two SecantusDB servers started here and stopped at the end."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    procs = []
    try:
        src = os.environ.get("SYNCD_BENCH_URI_SOURCE")
        dst = os.environ.get("SYNCD_BENCH_URI_TARGET")
        if not (src and dst):
            (p1, src), (p2, dst) = start_server(tmp, "source"), start_server(tmp, "target")
            procs = [p1, p2]
        yield src, dst, tmp
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def add(uri: str, db: str, start: int, count: int) -> None:
    coll = MongoClient(uri)[db][COLL]
    rng = random.Random(11)
    for first in range(start, start + count, 5000):
        coll.insert_many([contract(rng, i) for i in range(first, min(first + 5000, start + count))])


def med(values: list[float]) -> float:
    return statistics.median(values)


def print_table(bench: Bench, n: int) -> None:
    t, rss = bench.times, bench.rss
    raw = med(t["raw"])
    rows = [
        ("1 raw copy floor (find raw + insert_many)", "raw", None),
        ("  raw copy + the source's indexes built", "raw_indexed", None),
        ("2 syncd full sync into empty target", "full", TARGETS["full"]),
        ("2 syncd masked full sync (2 masked fields)", "full_masked", None),
        ("3 syncd 1% changed, before_sync: changes", "changed_changes", TARGETS["changed"]),
        ("3 syncd 1% changed, before_sync: full", "changed_full", None),
        ("  first sync after a full copy (its events)", "after_full", None),
        ("4 syncd no-op sync (change streams)", "noop", TARGETS["noop"]),
        ("  no-op sync with --full (both read whole)", "noop_full", None),
        ("  of which: start, imports, config (validate)", "start", None),
        (f"5 backup create ({COLL})", "backup", None),
        (f"5 backup restore ({COLL}, into empty)", "restore", None),
    ]
    runs = len(t["raw"])
    print(f"\nN = {n} documents (~1 KB, nested) + 20 GridFS files of 300 KB; medians of {runs}")
    print(f"{'measure':44} {'seconds':>8} {'docs/s':>8} {'x raw':>6} {'target':>7} {'':4}")
    for label, key, target in rows:
        seconds = med(t[key])
        ratio = seconds / raw
        verdict = "" if target is None else ("ok" if ratio <= target else "MISS")
        limit = "" if target is None else f"<={target}"
        print(f"{label:44} {seconds:8.2f} {n / seconds:8.0f} {ratio:6.2f} {limit:>7} {verdict:4}")
    masked = med(t["full_masked"]) / med(t["full"])
    verdict = "ok" if masked <= MASKED_OVER_FULL else "MISS"
    label = "2 masked full sync / unmasked full sync"
    print(f"{label:44} {'':8} {'':8} {masked:6.2f} {'<=' + str(MASKED_OVER_FULL):>7} {verdict:4}")
    print(
        f"\n{'peak RSS of the syncd process (MB)':44} {'N':>8} {'3N':>8} {'3N/N':>6} {'target':>7}"
    )
    for label, key, key3 in (
        ("2 full sync", "full", "full_3n"),
        ("3 1% changed (changes)", "changed_changes", "changed_3n"),
    ):
        if key3 not in rss:  # --runs-3n 0: no growth to compare
            print(f"{label:44} {med(rss[key]):8.0f} {'-':>8}")
            continue
        at_n, at_3n = med(rss[key]), max(rss[key3])
        ok = at_3n / at_n <= RSS_GROWTH and at_3n < RSS_LIMIT
        print(
            f"{label:44} {at_n:8.0f} {at_3n:8.0f} {at_3n / at_n:6.2f} "
            f"{'<=1.3x, <300':>7} {'ok' if ok else 'MISS'}"
        )
    for key in ("backup", "restore"):
        print(f"{'5 ' + key:44} {med(rss[key]):8.0f}")
    three = 3 * n
    print(
        f"\nat 3N = {three}: full sync {med(t['full_3n']):.2f} s, "
        f"1% changed {med(t['changed_3n']):.2f} s"
    )


if __name__ == "__main__":
    sys.exit(main())
