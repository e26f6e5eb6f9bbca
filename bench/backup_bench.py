"""Time and peak memory of `create_backup` (and of reading the backup back) on SecantusDB.

    .venv/bin/python bench/backup_bench.py [--docs 100000] [--doc-size 1000]

Starts a throw-away SecantusDB on a free loopback port, loads DOCS documents of about
DOC_SIZE bytes (mixed fields plus a random, incompressible-ish payload of half the size),
then, each in a fresh child process so the peak RSS is the operation's own:
  - create_backup, gzip and none;
  - BackupSource.iter_raw over the whole collection (what a restore reads).
  - find_raw_batches alone, to tell the server's share of the time from ours.
It also backs up a fifth of the documents, to show that memory does not grow with size.
Prints one line per measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bson import Binary
from pymongo import MongoClient

SERVER = Path(sys.executable).with_name("secantusd-py")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rss_mb() -> float:
    """This process's own peak (VmHWM). Not `ru_maxrss`: Linux counts the parent's RSS at
    fork time in it, so a child would report its parent's memory."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _start_server(storage: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    (storage / "secantusd.toml").write_text("")
    proc = subprocess.Popen(
        [str(SERVER), "--config", str(storage / "secantusd.toml"), "--host", "127.0.0.1"]
        + ["--port", str(port), "--storage-path", str(storage / "data")]
        + ["--log-level", "WARNING"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    deadline = time.monotonic() + 30
    while True:
        try:
            with MongoClient(uri, serverSelectionTimeoutMS=500) as client:
                client.admin.command("ping")
            return proc, uri
        except Exception:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise
            time.sleep(0.1)


def _load(uri: str, name: str, docs: int, doc_size: int) -> None:
    payload = doc_size // 2
    with MongoClient(uri) as client:
        coll = client.bench[name]
        coll.drop()
        for start in range(0, docs, 5000):
            coll.insert_many(
                {
                    "_id": i,
                    "email": f"user{i}@valkyria.com",
                    "name": f"User number {i}",
                    "text": "lorem ipsum dolor sit amet " * ((doc_size - payload) // 27),
                    "blob": Binary(os.urandom(payload)),
                }
                for i in range(start, min(docs, start + 5000))
            )
        coll.create_index("email", unique=True)


def _child(args: argparse.Namespace) -> None:
    from syncd.backup import BackupSource, create_backup, find_backup
    from syncd.backup.fsio import count_whole_documents

    with MongoClient(args.uri) as client:
        db = client.bench
        db.command("ping")
        base = _rss_mb()
        started = time.perf_counter()
        cpu = _cpu_s()
        if args.op == "create":
            info = create_backup(
                db, "bench", Path(args.dir), compress=args.compress, collections=[args.coll]
            )
            result: dict[str, Any] = {
                "name": info.name,
                "docs": info.documents,
                "mb": info.size_bytes / 1e6,
            }
        elif args.op == "scan":
            from syncd.backup.create import batch_docs

            avg = float(db.command("collStats", args.coll)["avgObjSize"])
            with db[args.coll].find_raw_batches(batch_size=batch_docs(avg)) as cursor:
                result = {"docs": sum(count_whole_documents(b) for b in cursor)}
        else:
            source = BackupSource(find_backup(Path(args.dir), args.name))
            count = sum(1 for _ in source.iter_raw(args.coll))
            result = {"docs": count}
        result["seconds"] = time.perf_counter() - started
        result["cpu_s"] = _cpu_s() - cpu
        result["rss_base_mb"] = base
        result["rss_peak_mb"] = _rss_mb()
    print(json.dumps(result))


def _run_child(**kwargs: str) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--child"]
    for key, value in kwargs.items():
        argv += [f"--{key}", value]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _line(label: str, r: dict[str, Any]) -> None:
    rate = r["docs"] / r["seconds"] if r["seconds"] else 0.0
    size = f"{r['mb']:8.1f} MB on disk" if "mb" in r else " " * 19
    print(
        f"{label:<32} {r['docs']:>8} docs {r['seconds']:6.2f} s (our CPU {r['cpu_s']:5.2f} s) "
        f"{rate:>8,.0f} docs/s "
        f"{size}  RSS peak {r['rss_peak_mb']:6.1f} MB (after connect {r['rss_base_mb']:.1f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--doc-size", type=int, default=1000)
    parser.add_argument("--child", action="store_true")
    for name in ("uri", "dir", "op", "compress", "coll", "name"):
        parser.add_argument(f"--{name}")
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    with tempfile.TemporaryDirectory(prefix="syncd-backup-bench-") as tmp:
        proc, uri = _start_server(Path(tmp))
        try:
            started = time.perf_counter()
            _load(uri, "big", args.docs, args.doc_size)
            _load(uri, "small", args.docs // 5, args.doc_size)
            took = time.perf_counter() - started
            print(f"loaded {args.docs} + {args.docs // 5} docs in {took:.1f} s")
            backups = str(Path(tmp) / "backups")
            scan = _run_child(uri=uri, op="scan", coll="big")
            _line("find_raw_batches alone (server)", scan)
            for compress in ("none", "gzip"):
                for coll in ("small", "big"):
                    r = _run_child(uri=uri, dir=backups, op="create", compress=compress, coll=coll)
                    _line(f"create_backup {coll} {compress}", r)
                    if coll == "big":
                        read = _run_child(
                            uri=uri, dir=backups, op="read", coll=coll, name=r["name"]
                        )
                        _line(f"BackupSource.iter_raw {compress}", read)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
