"""Run one `syncd` command with the process CPU (user+sys, every thread) taken around each
phase of a sync (flow.py's steps, pipeline.py's writes), written as JSON to a file (issue
24's profile).

As a `cpu_bench.py` wrapper, one file per step:

    SYNCD_BENCH_WRAP=".venv/bin/python bench/phase_cpu.py /tmp/phases/{step}.json" \\
        .venv/bin/python bench/cpu_bench.py --steps first,full,incremental

Keys: `imports` (start-up up to the engine's modules), one per phase (seconds, summed over
collections and calls; `backup`: the backup before writing), `total` (the process's CPU at
exit). A phase's threads (a first copy's reader, the plan's fillers) count in the phase
they run in.
"""

from __future__ import annotations

import atexit
import json
import os
import resource
import runpy
import sys
from collections.abc import Callable
from typing import Any, NoReturn

# (module, function) of each phase, where a sync's steps call it from
PHASES = [("flow", "_sides"), ("flow", "_plan"), ("steps", "backup"), ("flow", "_record")]
PHASES += [("pipeline", n) for n in ("record_intents", "write_plan", "verify_plan")]
PHASES += [("pipeline", "remember_plan")]


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    out, script = sys.argv[1], sys.argv[2]
    sys.argv = sys.argv[2:]
    started = cpu()
    import syncd.engine.flow as flow  # noqa: PLC0415 - timed as start-up
    import syncd.engine.pipeline as pipeline  # noqa: PLC0415

    marks: dict[str, float] = {"imports": cpu() - started}

    def timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            before = cpu()
            try:
                return function(*args, **kwargs)
            finally:
                marks[name] = marks.get(name, 0.0) + cpu() - before

        return run

    owners: dict[str, Any] = {"flow": flow, "pipeline": pipeline, "steps": flow._SyncSteps}  # noqa: SLF001
    for owner, name in PHASES:
        setattr(owners[owner], name, timed(name, getattr(owners[owner], name)))

    def dump() -> None:
        marks["total"] = cpu()
        with open(out, "w") as file:
            json.dump(marks, file)

    exit_now = os._exit

    def exit_after_dump(code: int) -> NoReturn:  # syncd ends with os._exit (cli.run)
        dump()
        exit_now(code)

    os._exit = exit_after_dump
    atexit.register(dump)
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
