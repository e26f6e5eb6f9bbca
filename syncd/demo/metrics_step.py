"""The last step: the daemon with metrics on, scraped, then stopped (or served until Ctrl-C)."""

from __future__ import annotations

import subprocess

from syncd.demo.config import PRODUCTION_URI_ENV
from syncd.demo.daemon import (
    daemon_available,
    metric_lines,
    start_daemon,
    stop_daemon,
    tail,
    wait_healthy,
)
from syncd.demo.session import DemoFailed, Session


def metrics_step(s: Session, *, serve: bool) -> None:
    s.heading("The daemon: `syncd run` with metrics, scraped like Prometheus would")
    if not daemon_available():
        s.note("skipped: daemon not built (syncd/daemon is missing in this checkout)")
        if serve:
            raise DemoFailed("--serve needs the daemon (`syncd run`), which is not built")
        return
    base = f"http://127.0.0.1:{s.metrics_port}"
    log_path = s.root / "daemon.log"
    print(f"$ syncd run &        (pid below; its log goes to {log_path.name})", flush=True)
    proc = start_daemon(s.config_path, log_path)
    try:
        health = wait_healthy(proc, f"{base}/healthz")
        print(f"$ curl {base}/healthz\n{health.strip()}")
        print(f"$ curl -s {base}/metrics | grep ^syncd_    (a few of them)")
        for line in metric_lines(f"{base}/metrics"):
            print(f"  {line}")
        if serve:
            _serve(s, proc, base)
    finally:
        code = stop_daemon(proc)
        print(f"$ kill -TERM {proc.pid}   -> daemon exited with code {code}")
        print(f"  daemon log (last lines):\n{tail(log_path)}", flush=True)
    if code != 0:
        raise DemoFailed(f"the daemon exited with code {code} after SIGTERM")


def _serve(s: Session, proc: subprocess.Popen[bytes], base: str) -> None:
    print(f"\nThe daemon keeps running (pid {proc.pid}):")
    print(f"  metrics  {base}/metrics")
    print(f"  health   {base}/healthz")
    print(f"  config   {s.config_path}")
    print(f"  try, in another terminal:  kill -USR1 {proc.pid}   (runs the deploy-push schedule)")
    print(
        f"  or:  SYNCD_CONFIG={s.config_path} {PRODUCTION_URI_ENV}={s.production.uri} syncd status"
    )
    print("Press Ctrl-C to stop everything.", flush=True)
    proc.wait()
    raise DemoFailed(f"the daemon exited on its own with code {proc.returncode}")
