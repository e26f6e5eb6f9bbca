"""The daemon (`syncd run`): schedules, signals, systemd notify, metrics listener."""

from __future__ import annotations

import argparse

from syncd.config.model import Config
from syncd.daemon.service import Daemon

__all__ = ["Daemon", "run"]


def run(config: Config, args: argparse.Namespace) -> int:
    """The `run` action of the CLI: serve until SIGTERM/SIGINT; 0 on a requested stop."""
    return Daemon(config).serve()
