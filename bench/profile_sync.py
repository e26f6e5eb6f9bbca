"""Profile the syncd figures of `bench_sync.py` one `syncd` process at a time.

Same servers, data and config as `bench_sync.py`; measures the raw copy, then a full sync
into an empty target, the sync of its own events, a 1%-changed sync (`before_sync:
changes`) and a no-op sync, each a real `syncd` process. With `--profile DIR` each runs
under `python -m cProfile -o DIR/<step>.prof` (read them with `pstats`); the wall times
are then those of the profiled processes, which also wait at exit for pymongo's threads
(see `syncd.cli.run`).

    .venv/bin/python bench/profile_sync.py [--n 20000] [--profile /tmp/prof] [--rounds 1]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pymongo import MongoClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sync import (  # noqa: E402
    BIN,
    DB,
    MASK_KEY_ENV,
    bench_servers,
    copy_indexes,
    load,
    mutate,
    raw_copy,
    write_config,
)

# `syncd.cli.main` rather than the console script: the script ends the process with
# `os._exit`, before cProfile would write its file.
MAIN = "import sys\nfrom syncd.cli import main\nsys.exit(main())\n"


def run(config: Path, profile: Path | None, step: str, *args: str) -> float:
    command = [str(BIN / "syncd")]
    if profile is not None:
        script = profile / "syncd_main.py"
        script.write_text(MAIN)
        command = [
            sys.executable,
            "-m",
            "cProfile",
            "-o",
            str(profile / f"{step}.prof"),
            str(script),
        ]
    started = time.monotonic()
    with tempfile.TemporaryFile() as out:
        done = subprocess.run(
            [*command, "-c", str(config), "--log-level", "WARNING", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
        if done.returncode != 0:
            out.seek(0)
            raise RuntimeError(f"{step} failed: {out.read().decode()}")
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--profile", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--steps", default="raw,full,after,changed,noop")
    args = parser.parse_args()
    steps = set(args.steps.split(","))
    os.environ.setdefault(MASK_KEY_ENV, "bench-masking-key")
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    with bench_servers("syncd-prof-") as (src, dst, tmp):
        load(src, DB, args.n)
        cfg, state = tmp / "syncd.yaml", tmp / "state"
        write_config(cfg, src, dst, DB, state, "changes")
        for k in range(args.rounds):
            times: dict[str, float] = {}
            if "raw" in steps:
                times["raw"] = raw_copy(src, dst, DB)
                times["raw_indexed"] = times["raw"] + copy_indexes(src, dst, DB)
            shutil.rmtree(state, ignore_errors=True)
            MongoClient(dst).drop_database(DB)
            times["full"] = run(cfg, args.profile, "full", "sync", "from_production")
            times["after"] = run(cfg, args.profile, "after", "sync", "from_production")
            if "changed" in steps:
                mutate(src, DB, args.n, seed=random.randrange(1, 10**6))
                times["changed"] = run(cfg, args.profile, "changed", "sync", "from_production")
            times["noop"] = run(cfg, args.profile, "noop", "sync", "from_production")
            times["validate"] = run(cfg, None, "validate", "validate")
            raw = times.get("raw")
            print(f"round {k + 1}, N = {args.n}")
            for key, seconds in times.items():
                ratio = f"{seconds / raw:6.3f}x" if raw else ""
                print(f"  {key:12} {seconds:7.2f} s {ratio}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
