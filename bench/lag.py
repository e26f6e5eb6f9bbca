"""Continuous mode's lag: a writer on the source, `syncd run` with a continuous job, and for
every write the time until the target shows it.

Usage: bench/lag.py [--rate 200] [--seconds 60] [--docs 10000] [--idle 20] [--log FILE]
`--log` keeps syncd's log; `LAG_WRAP="py-spy record -f raw -o out --"` runs syncd under a
profiler (stopped with SIGINT so that it writes its output).
Two SecantusDB servers are started (or SYNCD_BENCH_URI_SOURCE / SYNCD_BENCH_URI_TARGET used).
The writer does `--rate` mixed writes per second (60% updates, 25% inserts, 15% deletes)
for `--seconds`; an observer follows the target's change stream and notes when each write
(or a later write of the same document, which supersedes it) arrives. Prints p50, p99 and
max of the lag, checks both sides are equal at the end, then measures syncd's CPU while
nothing is written for `--idle` seconds.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient

sys.path.insert(0, str(Path(__file__).parent))
from bench_sync import BIN, bench_servers  # noqa: E402

DB, COLL = "lagbench", "contracts"
TARGETS = {"p50": 1.0, "p99": 3.0, "idle_cpu": 0.02}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(path: Path, src: str, dst: str, state: Path, port: int) -> None:
    path.write_text(
        "version: 1\n"
        f"state_dir: {state}\n"
        "endpoints:\n"
        f"  production: {{uri: '{with_db(src)}'}}\n"
        f"  staging: {{uri: '{with_db(dst)}'}}\n"
        "flows:\n"
        "  mirror: {source: production, target: staging}\n"
        f"collections:\n  - name: {COLL}\n"
        "backups: {before_sync: none}\n"
        "schedules:\n  - {name: mirror, flow: mirror, continuous: true}\n"
        f"metrics: {{listen: '127.0.0.1:{port}'}}\n",
        encoding="utf-8",
    )


def with_db(uri: str) -> str:
    base, _, query = uri.partition("?")
    return f"{base.rstrip('/')}/{DB}" + (f"?{query}" if query else "")


class Observer:
    """Follows the target's change stream; `seen[(id)]` = [(version, time)]."""

    def __init__(self, uri: str) -> None:
        self.client: MongoClient[Any] = MongoClient(uri)
        self.seen: dict[Any, list[tuple[int, float]]] = {}
        self.deleted: dict[Any, float] = {}
        self.stop = threading.Event()
        coll = self.client[DB].get_collection(COLL)
        self.stream = coll.watch(max_await_time_ms=100)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            event = self.stream.try_next()
            if event is None:
                continue
            now = time.monotonic()
            key = event["documentKey"]["_id"]
            if event["operationType"] == "delete":
                self.deleted[key] = now
            elif event.get("fullDocument") is not None:
                version = int(event["fullDocument"].get("w", -1))
                self.seen.setdefault(key, []).append((version, now))

    def shown_at(self, key: Any, version: int | None) -> float | None:
        """When the target first held this version of the document, or a later one
        (None: deleted)."""
        if version is None:
            return self.deleted.get(key)
        times = [t for v, t in self.seen.get(key, []) if v >= version]
        deleted = self.deleted.get(key)
        if deleted is not None:
            times.append(deleted)
        return min(times) if times else None


def writer(
    uri: str, rate: int, seconds: float, start_id: int
) -> list[tuple[Any, int | None, float]]:
    """(id, version or None for a delete, when written)."""
    coll = MongoClient(uri)[DB][COLL]
    rng = random.Random(7)
    live = [d["_id"] for d in coll.find({}, {"_id": 1})]
    next_id, version = start_id, 1
    writes: list[tuple[Any, int | None, float]] = []
    started = time.monotonic()
    for k in range(int(rate * seconds)):
        due = started + k / rate
        if (delay := due - time.monotonic()) > 0:
            time.sleep(delay)
        version += 1
        roll = rng.random()
        if roll < 0.25 or len(live) < 100:
            coll.insert_one({"_id": next_id, "w": version, "status": "new", "pad": "x" * 500})
            writes.append((next_id, version, time.monotonic()))
            live.append(next_id)
            next_id += 1
        elif roll < 0.40:
            key = live.pop(rng.randrange(len(live)))
            coll.delete_one({"_id": key})
            writes.append((key, None, time.monotonic()))
        else:
            key = live[rng.randrange(len(live))]
            coll.update_one({"_id": key}, {"$set": {"w": version, "status": f"v{version}"}})
            writes.append((key, version, time.monotonic()))
    return writes


def superseded(writes: list[tuple[Any, int | None, float]], observer: Observer) -> set[Any]:
    """Documents inserted and deleted on the source before a batch took them: the target
    rightly never shows them, so there is no moment to measure."""
    last = {key: version for key, version, _ in writes}
    return {
        k
        for k, v in last.items()
        if v is None and k not in observer.seen and k not in observer.deleted
    }


def snapshot(uri: str) -> dict[Any, bytes]:
    coll = MongoClient(uri, document_class=RawBSONDocument)[DB][COLL]
    return {d["_id"]: bytes(d.raw) for d in coll.find()}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1] if len(values) > 1 else values[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--idle", type=float, default=20)
    parser.add_argument("--log", help="keep syncd's log here")
    args = parser.parse_args()
    with bench_servers("syncd-lag-") as (src, dst, tmp):
        MongoClient(src)[DB][COLL].insert_many(
            [{"_id": i, "w": 1, "status": "draft", "pad": "x" * 500} for i in range(args.docs)]
        )
        config, port = tmp / "syncd.yaml", free_port()
        write_config(config, src, dst, tmp / "state", port)
        log = (tmp / "syncd.log").open("wb")
        proc = subprocess.Popen(
            os.environ.get("LAG_WRAP", "").split() + [str(BIN / "syncd"), "-c", str(config), "run"],
            stdout=log,
            stderr=log,
        )
        try:
            target = MongoClient(dst)[DB][COLL]
            deadline = time.monotonic() + 300
            while target.estimated_document_count() < args.docs:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the initial sync did not finish")
                time.sleep(0.2)
            observer = Observer(dst)
            time.sleep(2)  # the first batches after the initial sync settle
            print(f"writing {args.rate}/s for {args.seconds:.0f} s ...", file=sys.stderr)
            writes = writer(src, args.rate, args.seconds, start_id=args.docs * 10)
            catch_up = time.monotonic() + 60
            lags: list[float] = []
            while True:
                shown = [observer.shown_at(k, v) for k, v, _ in writes]
                if all(t is not None for t in shown) or time.monotonic() > catch_up:
                    break
                time.sleep(0.5)
            gone = superseded(writes, observer)
            missing = sum(
                1 for (k, _, _), t in zip(writes, shown, strict=True) if t is None and k not in gone
            )
            skipped = sum(
                1 for (k, _, _), t in zip(writes, shown, strict=True) if t is None and k in gone
            )
            lags = [t - w for (_, _, w), t in zip(writes, shown, strict=True) if t is not None]
            time.sleep(2)
            equal = snapshot(src) == snapshot(dst)
            before = cpu_seconds(proc.pid)
            time.sleep(args.idle)
            idle = (cpu_seconds(proc.pid) - before) / args.idle
            observer.stop.set()
        finally:
            if os.environ.get("LAG_WRAP"):
                import signal

                proc.send_signal(signal.SIGINT)
            else:
                proc.terminate()
            proc.wait(60)
            log.close()
            if args.log:
                Path(args.log).write_bytes((tmp / "syncd.log").read_bytes())
    print(
        f"\n{len(writes)} writes at {args.rate}/s for {args.seconds:.0f} s; {missing} never shown;"
        f" {skipped} of documents inserted and deleted before a batch took them (not measured)"
    )
    print(f"{'measure':34} {'value':>8} {'target':>8}")
    for label, value, key in (
        ("lag p50 (s)", pct(lags, 0.5), "p50"),
        ("lag p99 (s)", pct(lags, 0.99), "p99"),
    ):
        verdict = "ok" if value <= TARGETS[key] else "MISS"
        print(f"{label:34} {value:8.3f} {'<=' + str(TARGETS[key]):>8} {verdict}")
    print(f"{'lag max (s)':34} {max(lags):8.3f}")
    verdict = "ok" if equal else "MISS"
    print(f"{'both sides equal at the end':34} {str(equal):>8} {'True':>8} {verdict}")
    verdict = "ok" if idle <= TARGETS["idle_cpu"] else "MISS"
    print(f"{'syncd CPU while idle (core)':34} {idle:8.2%} {'<=2%':>8} {verdict}")
    return 0 if equal and not missing else 1


if __name__ == "__main__":
    sys.exit(main())
