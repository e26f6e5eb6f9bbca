"""Configuration: load YAML, validate (schema, then cross-key rules), build typed objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from syncd.config.load import ConfigInvalid, ConfigIssue, LoadedYaml, load_yaml
from syncd.config.model import (
    DEFAULT_METRICS_LISTEN,
    DEFAULT_STATE_DIR,
    GRIDFS_PAIRS,
    Backups,
    CollectionPolicy,
    Config,
    Endpoint,
    Flow,
    MaskExcept,
    Masking,
    Metrics,
    ResetPasswordsHook,
    Schedule,
    SecretRef,
)
from syncd.config.query import canonical_filter
from syncd.config.rules import logical_issues, parse_interval
from syncd.config.validate import schema_issues

__all__ = [
    "GRIDFS_PAIRS",
    "Config",
    "ConfigInvalid",
    "ConfigIssue",
    "Endpoint",
    "Flow",
    "load_config",
]


def load_config(path: Path) -> Config:
    """Read and fully validate `path`; raise ConfigInvalid listing every problem."""
    loaded = load_yaml(path)
    issues = [*loaded.issues, *schema_issues(loaded), *logical_issues(loaded)]
    if issues:
        raise ConfigInvalid(sorted(set(issues), key=lambda i: (i.line, i.column, i.message)))
    return build_config(path, loaded.data, loaded)


def build_config(path: Path, doc: dict[str, Any], loaded: LoadedYaml | None = None) -> Config:
    """Typed config from a document that passed validation (`loaded` locates its keys)."""
    backups = doc.get("backups", {})
    return Config(
        path=path,
        state_dir=Path(doc.get("state_dir", DEFAULT_STATE_DIR)),
        endpoints={name: _endpoint(name, raw) for name, raw in doc["endpoints"].items()},
        flows={
            name: Flow(name, raw["source"], raw["target"], tuple(raw.get("after", ())))
            for name, raw in doc["flows"].items()
        },
        collections=tuple(
            _collection(raw, index, path, loaded) for index, raw in enumerate(doc["collections"])
        ),
        drift=doc.get("drift", "abort"),
        backups=Backups(
            keep_last=backups.get("keep_last", 5),
            compress=backups.get("compress", "gzip"),
            before_sync=backups.get("before_sync", "full"),
        ),
        hooks={name: _hook(name, raw) for name, raw in doc.get("hooks", {}).items()},
        schedules=tuple(_schedule(raw) for raw in doc.get("schedules", ())),
        metrics=Metrics(doc.get("metrics", {}).get("listen", DEFAULT_METRICS_LISTEN)),
        masking=_masking(doc.get("masking")),
    )


def _collection(
    raw: dict[str, Any], index: int, path: Path, loaded: LoadedYaml | None
) -> CollectionPolicy:
    where = ""
    if "filter" in raw and loaded is not None:
        line, _ = loaded.locate(["collections", index, "filter"], key=True)
        where = f"{path}:{line}"
    exempt = raw.get("mask_except")
    return CollectionPolicy(
        raw["name"],
        tuple(raw["flows"]) if "flows" in raw else None,
        raw.get("drift"),
        filter=canonical_filter(raw["filter"]) if "filter" in raw else None,
        filter_at=where or str(path),
        deletes=bool(raw.get("deletes", True)),
        mask=tuple((str(field), rule or "null") for field, rule in raw.get("mask", {}).items()),
        mask_except=MaskExcept(exempt["field"], tuple(exempt["values"])) if exempt else None,
        bypass_validation=bool(raw.get("bypass_validation", False)),
    )


def _masking(raw: dict[str, Any] | None) -> Masking | None:
    if raw is None:
        return None
    if "key_env" in raw:
        return Masking(SecretRef("env", raw["key_env"]))
    return Masking(SecretRef("file", raw["key_file"]))


def _endpoint(name: str, raw: dict[str, Any]) -> Endpoint:
    timeout = float(raw.get("uri_command_timeout", 30))
    if "uri" in raw:
        ref = SecretRef("literal", raw["uri"])
    elif "uri_env" in raw:
        ref = SecretRef("env", raw["uri_env"])
    elif "uri_file" in raw:
        ref = SecretRef("file", raw["uri_file"])
    else:
        ref = SecretRef("command", raw["uri_command"], timeout)
    return Endpoint(
        name,
        ref,
        raw.get("database"),
        bool(raw.get("protected", False)),
        raw.get("lease", "database"),
    )


def _hook(name: str, raw: dict[str, Any]) -> ResetPasswordsHook:
    if "password_env" in raw:
        password = SecretRef("env", raw["password_env"])
    else:
        password = SecretRef("file", raw["password_file"])
    return ResetPasswordsHook(
        name=name,
        collection=raw["collection"],
        match_field=raw["match_field"],
        password_field=raw["password_field"],
        password=password,
        users=tuple(raw["users"]),
        scheme=raw.get("scheme", "bcrypt"),
        cost=raw.get("cost", 12),
    )


def _schedule(raw: dict[str, Any]) -> Schedule:
    interval = raw.get("interval")
    return Schedule(
        name=raw["name"],
        flow=raw.get("flow"),
        backup=raw.get("backup"),
        verify=raw.get("verify"),
        collections=tuple(raw["collections"]) if "collections" in raw else None,
        cron=raw.get("cron"),
        interval_seconds=parse_interval(interval) if interval else None,
        on_signal=bool(raw.get("on_signal", False)),
        unattended=bool(raw.get("unattended", False)),
        continuous=bool(raw.get("continuous", False)),
        target_scan_seconds=parse_interval(raw.get("target_scan", "1m")) or 60.0,
    )
