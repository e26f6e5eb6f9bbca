"""`syncd demo`: the whole job on two embedded endpoints, no MongoDB needed.

Starts two SecantusDB servers (separate processes) in a temp dir, writes a policy like the
seed's, loads a small data set, runs the real commands step by step, scrapes the daemon's
metrics, then stops everything and removes the temp dir (on Ctrl-C too).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from syncd.demo import walk
from syncd.demo.config import PRODUCTION_URI_ENV, RESET_PASSWORD_ENV, write_config
from syncd.demo.metrics_step import metrics_step
from syncd.demo.servers import ServerMissing, free_port, start_servers
from syncd.demo.session import DemoFailed, Session
from syncd.errors import EXIT_FAILED, EXIT_OK

STEPS = (
    walk.load_production,
    walk.validate_and_status,
    walk.pull,
    walk.edits,
    walk.push_refused,
    walk.push_merge,
    walk.backups,
    walk.restore,
)


def run(args: argparse.Namespace) -> int:
    serve = bool(getattr(args, "serve", False))
    root = Path(tempfile.mkdtemp(prefix="syncd-demo-"))
    try:
        with _interruptible() as flag, _demo_environment():
            return _walk(root, serve, flag)
    except ServerMissing as exc:
        print(f"syncd demo: {exc}")
        return EXIT_FAILED
    except DemoFailed as exc:
        print(f"\nsyncd demo: FAILED: {exc}")
        return EXIT_FAILED
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _walk(root: Path, serve: bool, interrupted: list[bool]) -> int:
    print(f"syncd demo: starting two embedded MongoDB endpoints in {root}", flush=True)
    servers = start_servers(root, ("local", "production"))
    session = Session(
        root=root,
        config_path=root / "syncd.yaml",
        local=servers[0],
        production=servers[1],
        metrics_port=free_port(),
        interrupt_flag=interrupted,
    )
    try:
        os.environ[PRODUCTION_URI_ENV] = session.production.uri
        write_config(
            session.config_path,
            state_dir=root / "state",
            local_port=session.local.port,
            metrics_port=session.metrics_port,
        )
        print(f"  local      = {session.local.uri}")
        print(f"  production = ${PRODUCTION_URI_ENV} (127.0.0.1:{session.production.port})")
        print(f"  reset password: in ${RESET_PASSWORD_ENV} (generated unless set; never printed)")
        print(
            f"  commands run as: SYNCD_CONFIG={session.config_path} syncd --log-level WARNING ..."
        )
        os.environ["SYNCD_CONFIG"] = str(session.config_path)
        for step in STEPS:
            step(session)
        metrics_step(session, serve=serve)
        print("\nsyncd demo: done. Every step above ran the real syncd against real servers.")
        return EXIT_OK
    except KeyboardInterrupt:
        print("\nsyncd demo: interrupted; cleaning up", flush=True)
        return EXIT_OK if serve else EXIT_FAILED
    finally:
        session.close()
        for server in servers:
            server.stop()
        print("syncd demo: endpoints stopped, temp dir removed", flush=True)


@contextmanager
def _interruptible() -> Iterator[list[bool]]:
    """Ctrl-C and SIGTERM raise KeyboardInterrupt and leave a flag.

    The flag matters because the in-process `syncd` commands catch KeyboardInterrupt
    themselves (they exit 1); the walkthrough checks it after each command.
    """
    flag = [False]

    def handler(signum: int, frame: FrameType | None) -> None:
        flag[0] = True
        raise KeyboardInterrupt

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


@contextmanager
def _demo_environment() -> Iterator[None]:
    """The demo's secrets live in its own environment, restored afterwards."""
    keys = (PRODUCTION_URI_ENV, RESET_PASSWORD_ENV, "SYNCD_CONFIG", "FORCE")
    saved = {key: os.environ.get(key) for key in keys}
    os.environ.pop("FORCE", None)  # the demo shows each confirmation choice explicitly
    if not os.environ.get(RESET_PASSWORD_ENV):
        os.environ[RESET_PASSWORD_ENV] = secrets.token_urlsafe(12)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
