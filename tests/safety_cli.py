"""Helpers for the safety tests: run the real `syncd` command, with or without a terminal.

Not a test module (no `test_` prefix); shared by tests/test_safety_*.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pymongo.database import Database

from syncd.config.model import own_collection

SYNCD = Path(sys.executable).with_name("syncd")
TIMEOUT = 120.0
PROD_URI_ENV = "SYNCD_TEST_PROD_URI"
RESET_PASSWORD_ENV = "SYNCD_TEST_RESET_PASSWORD"
# Variables of the caller that would change what syncd does.
_SCRUBBED = ("FORCE", "SYNCD_CONFIG", "JOURNAL_STREAM", PROD_URI_ENV, RESET_PASSWORD_ENV)


@dataclass
class Ran:
    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def __str__(self) -> str:
        return (
            f"syncd {' '.join(self.args)} -> exit {self.code}\n"
            f"--- stdout ---\n{self.stdout}--- stderr ---\n{self.stderr}"
        )


def syncd_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def run_syncd(config: Path, *args: str, env: dict[str, str] | None = None) -> Ran:
    """`syncd -c CONFIG ARGS...` with no terminal: stdin from /dev/null, output captured."""
    proc = subprocess.run(  # noqa: S603 - our own console script
        [str(SYNCD), "-c", str(config), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=syncd_env(env),
        timeout=TIMEOUT,
        check=False,
    )
    return Ran(tuple(args), proc.returncode, proc.stdout, proc.stderr)


def run_on_terminal(
    config: Path,
    *args: str,
    answer: str | signal.Signals,
    wait_for: str,
    env: dict[str, str] | None = None,
) -> Ran:
    """Run syncd with stdin/stdout/stderr on a pseudo-terminal; once `wait_for` shows, type
    `answer` + Enter. `stdout` holds everything the terminal showed; `stderr` is empty."""
    argv = [str(SYNCD), "-c", str(config), *args]
    ran = command_on_terminal(argv, answer=answer, wait_for=wait_for, env=syncd_env(env))
    return dataclasses.replace(ran, args=tuple(args))


# Runs a command as an interactive shell runs its foreground job: Ctrl-C (SIGINT) at its
# default. A job started with `&` from a script inherits SIGINT ignored (so does everything
# a test run started that way starts), and a Python program then never sees Ctrl-C.
FOREGROUND = [
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execvp(sys.argv[1], sys.argv[1:])",
]


def command_on_terminal(
    argv: list[str],
    *,
    answer: str | signal.Signals,
    wait_for: str,
    env: dict[str, str],
    cwd: Path | None = None,
) -> Ran:
    """`run_on_terminal` for any command (e.g. rake running syncd), in `env` (+ TERM=dumb);
    `args` of the result is `argv` without the program. A signal as `answer` goes to the
    command's whole process group, as Ctrl-C sends SIGINT to a terminal's foreground group."""
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(  # noqa: S603 - our own programs
            [*FOREGROUND, *argv],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**env, "TERM": "dumb"},
            cwd=cwd,
            start_new_session=True,
        )
    finally:
        os.close(slave)
    screen = b""
    try:
        screen = _read_until(master, proc, wait_for.encode())
        if wait_for.encode() in screen and isinstance(answer, signal.Signals):
            os.killpg(proc.pid, answer)
        elif wait_for.encode() in screen:
            os.write(master, answer.encode() + b"\n")
        screen += _read_until(master, proc, None)
        code = proc.wait(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        os.close(master)
    text = screen.decode("utf-8", "replace").replace("\r\n", "\n")
    return Ran(tuple(argv[1:]), code, text, "")


def _read_until(master: int, proc: subprocess.Popen[bytes], marker: bytes | None) -> bytes:
    """Read the terminal until `marker` shows up, or (marker None) until the program ends."""
    deadline = time.monotonic() + TIMEOUT
    data = b""
    while time.monotonic() < deadline:
        if marker is not None and marker in data:
            return data
        ready, _, _ = select.select([master], [], [], 0.1)
        if not ready:
            if proc.poll() is not None and marker is not None:
                return data
            continue
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: every holder of the slave side has closed it
            return data
        if not chunk:
            return data
        data += chunk
    shown = data.decode(errors="replace")
    raise AssertionError(f"terminal output did not finish in time:\n{shown}")


def basic_config(
    directory: Path,
    local_uri: str,
    *,
    hooks: dict[str, Any] | None = None,
    after: tuple[str, ...] = (),
    collections: tuple[str, ...] = ("users", "items"),
) -> Path:
    """local (plain uri) and production (protected, URI from $SYNCD_TEST_PROD_URI)."""
    to_production: dict[str, Any] = {"source": "local", "target": "production"}
    if after:
        to_production["after"] = list(after)
    doc: dict[str, Any] = {
        "version": 1,
        "state_dir": str(directory / "state"),
        "endpoints": {
            "local": {"uri": local_uri},
            "production": {"uri_env": PROD_URI_ENV, "protected": True},
        },
        "flows": {
            "to_production": to_production,
            "from_production": {"source": "production", "target": "local"},
        },
        "collections": [{"name": name} for name in collections],
        "drift": "abort",
        "backups": {"keep_last": 5},
    }
    if hooks:
        doc["hooks"] = hooks
    path = directory / "syncd.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def snapshot(db: Database[Any]) -> dict[str, list[dict[str, Any]]]:
    """Every document of every collection (not syncd's own lease collection), sorted by _id:
    compare before and after."""
    names = sorted(n for n in db.list_collection_names() if not own_collection(n))
    return {name: list(db[name].find().sort("_id", 1)) for name in names}


def backup_names(state_dir: Path) -> list[str]:
    backups = state_dir / "backups"
    if not backups.exists():
        return []
    return sorted(p.name for p in backups.iterdir() if not p.name.startswith("."))
