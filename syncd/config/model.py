"""Typed configuration: what a validated `syncd.yaml` becomes.

Secrets are not resolved here; an endpoint or hook carries *where* its secret
lives (`SecretRef`) and `syncd.config.secrets` reads it only when needed.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from syncd.state.statedir import StateDir

DriftPolicy = Literal["abort", "overwrite", "merge"]
BeforeSync = Literal["full", "changes", "none"]
Compress = Literal["gzip", "none"]
SecretKind = Literal["literal", "env", "file", "command"]
MaskRule = Literal["email", "digits", "name", "hash", "redact", "null"]
LeaseKind = Literal["database", "local"]

DEFAULT_STATE_DIR = Path("/var/lib/syncd")
DEFAULT_METRICS_LISTEN = "127.0.0.1:9647"
GRIDFS_PAIRS = {"fs.files": "fs.chunks", "fs.chunks": "fs.files"}
OWN_PREFIX = "_syncd"  # syncd's own collections (`_syncd_leases`): never synced nor backed up


def own_collection(name: str) -> bool:
    return name.startswith(OWN_PREFIX)


@dataclass(frozen=True)
class SecretRef:
    """Where a secret comes from: a literal (non-secret URIs only), env var, file or command."""

    kind: SecretKind
    value: str
    timeout: float = 30.0

    def describe(self) -> str:
        """A redaction-safe description, for messages."""
        if self.kind == "literal":
            return "uri"
        return f"{self.kind} {self.value!r}" if self.kind != "command" else "uri_command"


@dataclass(frozen=True)
class Endpoint:
    name: str
    uri: SecretRef
    database: str | None = None
    protected: bool = False
    lease: LeaseKind = "database"  # database: one writer across machines; local: this one


@dataclass(frozen=True)
class Flow:
    name: str
    source: str
    target: str
    after: tuple[str, ...] = ()


@dataclass(frozen=True)
class MaskExcept:
    """Documents whose `field` holds one of `values` travel unmasked."""

    field: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class CollectionPolicy:
    name: str
    flows: tuple[str, ...] | None = None
    drift: DriftPolicy | None = None
    # The query as canonical Extended JSON (parsed where it is applied), and where the
    # config says it ("syncd.yaml:12"), for a server's refusal of it.
    filter: str | None = None
    filter_at: str = ""
    deletes: bool = True
    mask: tuple[tuple[str, MaskRule], ...] = ()  # (dotted path, rule)
    mask_except: MaskExcept | None = None
    # Write with bypassDocumentValidation (needs dbAdmin/restore on the target, SPEC §8a).
    bypass_validation: bool = False

    def matches(self, collection: str) -> bool:
        return fnmatch.fnmatchcase(collection, self.name)

    @property
    def is_pattern(self) -> bool:
        return any(ch in self.name for ch in "*?[")


@dataclass(frozen=True)
class Backups:
    keep_last: int = 5
    compress: Compress = "gzip"
    before_sync: BeforeSync = "full"


@dataclass(frozen=True)
class ResetPasswordsHook:
    name: str
    collection: str
    match_field: str
    password_field: str
    password: SecretRef
    users: tuple[str, ...]
    scheme: Literal["bcrypt"] = "bcrypt"
    cost: int = 12


@dataclass(frozen=True)
class Masking:
    """Where the masking key lives; read only when a masked collection is synced."""

    key: SecretRef


@dataclass(frozen=True)
class Schedule:
    name: str
    flow: str | None = None
    backup: str | None = None
    verify: str | None = None  # a flow whose sides this job compares (writes nothing)
    collections: tuple[str, ...] | None = None
    cron: str | None = None
    interval_seconds: float | None = None
    on_signal: bool = False
    unattended: bool = False
    continuous: bool = False
    target_scan_seconds: float = 60.0  # continuous, a target without change streams


@dataclass(frozen=True)
class Metrics:
    listen: str = DEFAULT_METRICS_LISTEN

    @property
    def host(self) -> str:
        host, _, _ = self.listen.rpartition(":")
        return host.strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


@dataclass(frozen=True)
class Config:
    path: Path
    state_dir: Path
    endpoints: dict[str, Endpoint]
    flows: dict[str, Flow]
    collections: tuple[CollectionPolicy, ...]
    drift: DriftPolicy = "abort"
    backups: Backups = field(default_factory=Backups)
    hooks: dict[str, ResetPasswordsHook] = field(default_factory=dict)
    schedules: tuple[Schedule, ...] = ()
    metrics: Metrics = field(default_factory=Metrics)
    masking: Masking | None = None

    @cached_property
    def state(self) -> StateDir:
        """The state directory's layout: every path under `state_dir` comes from here."""
        return StateDir(self.state_dir)

    def policy_for(self, collection: str) -> CollectionPolicy | None:
        """The first policy entry whose name or pattern matches, as in an ordered list."""
        for policy in self.collections:
            if policy.matches(collection):
                return policy
        return None

    def allows(self, flow: str, collection: str) -> bool:
        policy = self.policy_for(collection)
        if policy is None:
            return False
        return policy.flows is None or flow in policy.flows

    def drift_for(self, collection: str) -> DriftPolicy:
        policy = self.policy_for(collection)
        if policy is not None and policy.drift is not None:
            return policy.drift
        return self.drift
