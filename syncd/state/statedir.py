"""The state directory's layout (`state_dir:` in syncd.yaml, SPEC §3): the one place that
names what lives in it. Every other module asks a `StateDir` for a path; none joins one.

    state_dir/
      memory.sqlite            the sync memory (`memory.SyncMemory`)
      tmp/                     the runs' scratch workspaces (`engine/scratch.Workspace`)
      backups/                 backups and pre-sync safety backups (`syncd.backup`)
      leases/<endpoint>.lease  this machine's write lease per target (`lease/local.py`)
      verify/<flow>.json       the last `syncd verify` result per flow (`compare.py`)

A run's `StateDir` is its config's (`Config.state`), made once per loaded config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from syncd.state.memory import SyncMemory


@dataclass(frozen=True)
class StateDir:
    root: Path

    def __str__(self) -> str:
        return str(self.root)

    @property
    def memory_path(self) -> Path:
        return self.root / "memory.sqlite"

    def memory(self, *, readonly: bool = False) -> SyncMemory:
        """The sync memory; `readonly` creates and changes nothing (dry runs, `status`)."""
        return SyncMemory(self.memory_path, readonly=readonly)

    @property
    def workspace(self) -> Path:
        """Where a run's scratch files go (each run in a directory of its own)."""
        return self.root / "tmp"

    @property
    def backups(self) -> Path:
        return self.root / "backups"

    def lease(self, endpoint: str) -> Path:
        """The lease file of a target endpoint on this machine."""
        return self.root / "leases" / f"{endpoint}.lease"

    def verify_record(self, flow: str) -> Path:
        """The last `syncd verify FLOW` result."""
        return self.root / "verify" / f"{flow}.json"
