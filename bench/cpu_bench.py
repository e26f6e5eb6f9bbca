"""syncd's own CPU against a raw copy and mongodump | mongorestore (issue 24).

Measures user+sys CPU of each client process (the servers' CPU is not counted), one run
each, on the same two servers and N documents of ~1 KB (`bench_sync.load`):

1. raw copy: `find_raw_batches` from the source, `insert_many` of the raw documents into an
   empty target, in a process of its own (Python start-up and pymongo's import included);
2. `mongodump --archive | mongorestore --archive --drop` (both processes), when both are on
   PATH or named by `SYNCD_BENCH_MONGODUMP` / `SYNCD_BENCH_MONGORESTORE`;
3. `syncd sync` into an empty target (a first copy), then a sync of its own events;
4. `syncd sync --full` with nothing changed, and `syncd verify`;
5. `syncd sync` after 1% of the documents were updated (change streams): its CPU above a
   no-op sync's, per changed document (one run each: a difference of two small figures);
   then, robustly (`incremental`), the minimum of 3 no-op syncs and of 3 syncs each after
   another 5% of the documents were updated: per changed document, the difference over
   the 2,500 documents (at 50k) changed in each;
6. `syncd validate`: start-up, imports and configuration, which every syncd figure includes.

CPU is taken from `getrusage(RUSAGE_CHILDREN)` around each process, so it does not depend
on the load of the machine the way wall time does.

    .venv/bin/python bench/cpu_bench.py [--n 50000] [--profile DIR]

With `--profile DIR` each syncd step runs under cProfile (DIR/<step>.prof), which sees
the main thread only; `SYNCD_BENCH_WRAP` prefixes each syncd command instead, `{step}`
replaced by the step's name, e.g. for every thread, as collapsed stacks:
`SYNCD_BENCH_WRAP="py-spy record -r 250 -f raw -o /tmp/spy/{step}.txt --"`.
Either way the CPU figures then include the profiler's.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from pymongo import MongoClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sync import (  # noqa: E402
    BIN,
    COLL,
    DB,
    MASK_KEY_ENV,
    bench_servers,
    load,
    write_config,
)

MAIN = "import sys\nfrom syncd.cli import main\nsys.exit(main())\n"
RAW = """import sys
sys.path.insert(0, {bench!r})
from bench_sync import raw_copy
raw_copy({src!r}, {dst!r}, {db!r})
"""


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_of(command: list[str], *, shell: bool = False) -> float:
    """user+sys seconds of a command's processes (all of them: a shell pipeline too).

    Without PYTHONDONTWRITEBYTECODE, as an installed syncd runs: with it, every module is
    compiled from source at each start (0.1-0.2 s of CPU that no install pays)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    before = children_cpu()
    with tempfile.TemporaryFile() as out:
        done = subprocess.run(  # noqa: S603 - the benchmark's own commands
            " ".join(command) if shell else command,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
            shell=shell,
            env=env,
        )
        if done.returncode != 0:
            out.seek(0)
            raise RuntimeError(f"{command} failed: {out.read().decode()[-3000:]}")
    return children_cpu() - before


def tool(name: str) -> str | None:
    return os.environ.get(f"SYNCD_BENCH_{name.upper()}") or shutil.which(name)


class Steps:
    def __init__(self, src: str, dst: str, tmp: Path, profile: Path | None) -> None:
        self.src, self.dst, self.tmp, self.profile = src, dst, tmp, profile
        self.cfg, self.state = tmp / "syncd.yaml", tmp / "state"
        write_config(self.cfg, src, dst, DB, self.state, "changes")

    def syncd(self, step: str, *args: str) -> float:
        command = [str(BIN / "syncd")]
        if self.profile is not None:
            script = self.profile / "syncd_main.py"
            script.write_text(MAIN)
            prof = str(self.profile / f"{step}.prof")
            command = [sys.executable, "-m", "cProfile", "-o", prof, str(script)]
        if wrap := os.environ.get("SYNCD_BENCH_WRAP"):
            command = [*wrap.replace("{step}", step).split(), *command]
        return cpu_of([*command, "-c", str(self.cfg), "--log-level", "WARNING", *args])

    def raw(self) -> float:
        MongoClient(self.dst).drop_database(DB)
        here = str(Path(__file__).resolve().parent)
        code = RAW.format(bench=here, src=self.src, dst=self.dst, db=DB)
        return cpu_of([sys.executable, "-c", code])

    def dump_restore(self) -> float | None:
        dump, restore = tool("mongodump"), tool("mongorestore")
        if dump is None or restore is None:
            return None
        MongoClient(self.dst).drop_database(DB)
        src = self.src.replace("/?", f"/{DB}?")
        pipeline = [dump, "--quiet", "--archive", f"'--uri={src}'", "|"]
        pipeline += [restore, "--quiet", "--archive", "--drop", f"'--uri={self.dst}'"]
        return cpu_of(pipeline, shell=True)  # noqa: S604 - a pipeline of two tools

    def first_copy(self) -> float:
        shutil.rmtree(self.state, ignore_errors=True)
        MongoClient(self.dst).drop_database(DB)
        return self.syncd("first", "sync", "from_production")


def changed_ids(uri: str, n: int, percent: int = 1, round_: int = 0) -> int:
    """Update `percent`% of the source's documents (one `$inc` each), another share of
    them in each `round_`; returns how many."""
    coll = MongoClient(uri)[DB][COLL]
    ids = sorted(d["_id"] for d in coll.find({}, {"_id": 1}))
    random.Random(5).shuffle(ids)
    size = n * percent // 100
    chosen = ids[size * round_ : size * (round_ + 1)]
    for i in range(0, len(chosen), 1000):
        coll.update_many({"_id": {"$in": chosen[i : i + 1000]}}, {"$inc": {"version": 1}})
    return len(chosen)


REPEATS = 3
SHARE = 5  # % of the documents changed in each repeat of the incremental step


def incremental(s: Steps, src: str, n: int, cpu: dict[str, float]) -> None:
    """The incremental path's CPU per changed document, robustly: the minimum of
    `REPEATS` no-op syncs and of `REPEATS` syncs each after another `SHARE`% of the
    documents changed; per changed document, the difference over the documents changed.
    (One sync of 1% changed above one no-op is a difference of two small, noisy figures,
    most of it the fixed cost of a sync that writes: imports, the backup, the streams.)"""
    noops, changed, count = [], [], 0
    for i in range(REPEATS):
        noops.append(s.syncd(f"noop{i}", "sync", "from_production"))
        count = changed_ids(src, n, SHARE, round_=i + 1)  # (round 0 is the 1% step's)
        changed.append(s.syncd(f"changed{i}", "sync", "from_production"))
    cpu["noop_min"], cpu["changed_min"] = min(noops), min(changed)
    cpu["per_changed_min"] = (min(changed) - min(noops)) / count
    cpu["changed_count"] = count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000, help="documents (default 50000)")
    parser.add_argument("--profile", type=Path, default=None, help="cProfile each syncd step")
    parser.add_argument("--steps", default="raw,dump,first,full,verify,changed,incremental")
    args = parser.parse_args()
    steps = set(args.steps.split(","))
    os.environ.setdefault(MASK_KEY_ENV, "bench-masking-key")
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    n = args.n
    cpu: dict[str, float] = {}
    with bench_servers("syncd-cpu-") as (src, dst, tmp):
        print(f"loading {n} documents + 20 GridFS files ...", file=sys.stderr)
        load(src, DB, n)
        s = Steps(src, dst, tmp, args.profile)
        if "raw" in steps:
            cpu["raw"] = s.raw()
        if "dump" in steps and (dumped := s.dump_restore()) is not None:
            cpu["dump"] = dumped
        cpu["first"] = s.first_copy()
        cpu["after"] = s.syncd("after", "sync", "from_production")
        if "full" in steps:
            cpu["full"] = s.syncd("full", "sync", "from_production", "--full")
        if "verify" in steps:
            cpu["verify"] = s.syncd("verify", "verify", "from_production")
        cpu["noop"] = s.syncd("noop", "sync", "from_production")
        if "changed" in steps:
            changed = changed_ids(src, n)
            cpu["changed"] = s.syncd("changed", "sync", "from_production")
            cpu["per_changed"] = (cpu["changed"] - cpu["noop"]) / changed
        if "incremental" in steps:
            incremental(s, src, n, cpu)
        cpu["start"] = s.syncd("start", "validate")
    print_table(cpu, n)
    return 0


LABELS = {
    "raw": "raw copy (find_raw_batches -> insert_many raw)",
    "dump": "mongodump --archive | mongorestore --archive --drop",
    "first": "syncd sync, first copy",
    "after": "syncd sync of the first copy's own events",
    "full": "syncd sync --full, nothing changed",
    "verify": "syncd verify",
    "noop": "syncd sync, nothing changed (change streams)",
    "changed": "syncd sync, 1% changed (change streams)",
    "start": "syncd validate (start-up, imports, config)",
}


def print_table(cpu: dict[str, float], n: int) -> None:
    raw, dump = cpu.get("raw"), cpu.get("dump")
    print(f"\nclient CPU (user+sys of the processes), N = {n} documents of ~1 KB, one run")
    head = f"{'step':52} {'CPU s':>7} {'us/doc':>7} {'x raw':>6} {'x dump':>7}"
    print(head)
    for key, label in LABELS.items():
        if key not in cpu:
            continue
        seconds = cpu[key]
        per = seconds / n * 1e6
        x_raw = f"{seconds / raw:6.2f}" if raw else ""
        x_dump = f"{seconds / dump:7.2f}" if dump else ""
        print(f"{label:52} {seconds:7.2f} {per:7.1f} {x_raw:>6} {x_dump:>7}")
    first = cpu["first"] / n * 1e6
    if "per_changed" in cpu:
        per_changed = cpu["per_changed"] * 1e6
        print(
            f"{'1% changed, above a no-op, per changed document':52} {'':7} {per_changed:7.1f}"
            f"   ({per_changed / first:.2f}x a first copy's per document)"
        )
    if "per_changed_min" in cpu:
        for key, label in (
            ("noop_min", f"syncd sync, nothing changed: min of {REPEATS}"),
            ("changed_min", f"syncd sync, {SHARE}% changed: min of {REPEATS}"),
        ):
            print(f"{label:52} {cpu[key]:7.2f} {cpu[key] / n * 1e6:7.1f}")
        per = cpu["per_changed_min"] * 1e6
        label = f"{SHARE}% changed, above a no-op, per changed document"
        print(
            f"{label:52} {'':7} {per:7.1f}   ({per / first:.2f}x a first copy's per "
            f"document; target <= 3x; mins of {REPEATS} runs, {int(cpu['changed_count'])} "
            "documents changed in each)"
        )
        ok = per <= 3 * first
        print(
            f"target: {SHARE}% changed per changed document <= 3x first copy's: "
            f"{'ok' if ok else 'MISS'}"
        )
    if dump:
        for key, limit in (("first", "<="), ("full", "<"), ("verify", "<")):
            if key in cpu:
                ok = cpu[key] <= dump if limit == "<=" else cpu[key] < dump
                print(f"target: {key} {limit} mongodump+mongorestore: {'ok' if ok else 'MISS'}")


if __name__ == "__main__":
    sys.exit(main())
