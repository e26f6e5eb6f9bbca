"""What the walkthrough shares: the temp dir, the endpoints, numbered headings, `syncd` runs."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymongo import MongoClient
from pymongo.database import Database

from syncd import cli
from syncd.demo.config import LOCAL_DB, PRODUCTION_DB
from syncd.demo.servers import DemoServer
from syncd.errors import SyncdError

# The walkthrough keeps syncd's own log lines (stderr) to warnings, so the commands'
# output reads as it would for a person; the daemon's log is shown at INFO.
LOG_ARGS = ("--log-level", "WARNING")


class DemoFailed(SyncdError):
    pass


@dataclass
class Session:
    root: Path
    config_path: Path
    local: DemoServer
    production: DemoServer
    metrics_port: int
    interrupt_flag: list[bool] = field(default_factory=lambda: [False])
    step: int = 0
    _clients: list[MongoClient[dict[str, Any]]] = field(default_factory=list)

    @property
    def interrupted(self) -> bool:
        return self.interrupt_flag[0]

    def heading(self, title: str) -> None:
        self.step += 1
        print(f"\n=== {self.step}. {title} ===", flush=True)

    def note(self, text: str) -> None:
        print(f"  > {text}", flush=True)

    def syncd(self, *argv: str, expect: int = 0) -> int:
        """Run `syncd ARGV` in this process, as typed, and check its exit code."""
        print(f"$ syncd {' '.join(argv)}", flush=True)
        code = cli.main([*LOG_ARGS, *argv])
        sys.stdout.flush()
        sys.stderr.flush()
        if self.interrupted:  # cli.main turns Ctrl-C into exit 1; the demo must stop
            raise KeyboardInterrupt
        print(f"(exit code {code})", flush=True)
        if code != expect:
            raise DemoFailed(f"`syncd {' '.join(argv)}` exited {code}, expected {expect}")
        return code

    def db(self, which: str) -> Database[dict[str, Any]]:
        server, name = (
            (self.local, LOCAL_DB) if which == "local" else (self.production, PRODUCTION_DB)
        )
        client: MongoClient[dict[str, Any]] = MongoClient(server.uri)
        self._clients.append(client)
        return client[name]

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()
