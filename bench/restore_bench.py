"""Time `syncd backup restore` of a `changes` and of a full backup on SecantusDB.

    .venv/bin/python bench/restore_bench.py [--docs 20000]
    PYTHONPATH=OTHER_TREE .venv/bin/python bench/restore_bench.py   # another tree's syncd

Starts a throw-away SecantusDB (bench/backup_bench.py's), syncs DOCS documents from `dev`
to `prod`, backs `prod` up (full), changes half of `dev`'s documents, deletes a tenth and
inserts a tenth, syncs again with `before_sync: changes`, then restores the `changes`
backup and the full one, each a `syncd` child process. Prints each restore's wall time
and the CPU time of its syncd process (the server's is not counted).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from backup_bench import _start_server  # type: ignore[import-not-found]
from pymongo import MongoClient

MAIN = "import sys; from syncd.cli import main; sys.exit(main())"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _syncd(config: Path, *args: str) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds and stdout of one `syncd` run."""
    cpu, started = _children_cpu(), time.perf_counter()
    ran = subprocess.run(  # noqa: S603 - our own interpreter and arguments
        [sys.executable, "-c", MAIN, "-c", str(config), *args], capture_output=True, text=True
    )
    took = time.perf_counter() - started
    if ran.returncode != 0:
        raise SystemExit(f"syncd {' '.join(args)} failed:\n{ran.stderr}")
    return took, _children_cpu() - cpu, ran.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=20_000)
    n = parser.parse_args().docs
    with tempfile.TemporaryDirectory(prefix="syncd-restore-bench-") as tmp:
        proc, uri = _start_server(Path(tmp))
        try:
            base = uri.split("/?")[0]
            config = Path(tmp) / "syncd.yaml"
            config.write_text(
                f"version: 1\nstate_dir: {tmp}/state\nendpoints:\n"
                f'  dev: {{uri: "{base}/dev?directConnection=true"}}\n'
                f'  prod: {{uri: "{base}/prod?directConnection=true"}}\n'
                "flows:\n  push: {source: dev, target: prod}\ndrift: overwrite\n"
                "backups: {keep_last: 10, compress: gzip, before_sync: changes}\n"
                'collections:\n  - name: "*"\n'
            )
            dev = MongoClient(uri).dev.items
            dev.insert_many([{"_id": i, "n": i, "s": "x" * 400, "t": "init"} for i in range(n)])
            _syncd(config, "sync", "push", "--yes")
            _syncd(config, "backup", "create", "prod")
            dev.update_many({"_id": {"$lt": n // 2}}, {"$set": {"t": "changed"}})
            dev.delete_many({"_id": {"$gte": n - n // 10}})
            dev.insert_many([{"_id": n + i, "n": i} for i in range(n // 10)])
            _syncd(config, "sync", "push", "--yes")
            listed = json.loads(_syncd(config, "backup", "list", "--json")[2])
            kinds = {b["kind"]: b["name"] for b in reversed(listed)}
            for kind, what in (
                ("changes", f"{n // 2 + n // 10} before-images, {n // 10} inserted ids"),
                ("full", f"{n} documents"),
            ):
                took, cpu, _ = _syncd(config, "backup", "restore", kinds[kind], "--yes")
                print(f"restore {kind} backup ({what}): {took:.2f} s (syncd CPU {cpu:.2f} s)")
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
