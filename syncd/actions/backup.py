"""`syncd backup create|list|restore|import`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from syncd.backup import BackupInfo, apply_retention, create_backup, find_backup, list_backups
from syncd.backup.mongodump import import_dump
from syncd.backup.reader import verify_backup
from syncd.cli import ask, forced
from syncd.config.model import Config
from syncd.endpoints import open_endpoint
from syncd.engine.progress import Reporter
from syncd.engine.render import table
from syncd.engine.restore import restore_backup
from syncd.errors import EXIT_OK, UsageError


def create(config: Config, args: argparse.Namespace) -> int:
    if args.endpoint not in config.endpoints:
        known = ", ".join(sorted(config.endpoints))
        raise UsageError(f"unknown endpoint '{args.endpoint}' (endpoints: {known})")
    target = open_endpoint(config.endpoints[args.endpoint])
    try:
        info = create_backup(
            target.db,
            target.name,
            config.state.backups,
            compress=config.backups.compress,
            collections=args.collections,
            reason="manual",
        )
    finally:
        target.close()
    removed = apply_retention(config.state.backups, info.endpoint, config.backups.keep_last)
    print(
        f"{info.name}: {len(info.collections)} collections, {info.documents} documents, "
        f"{_size(info.size_bytes)}, verified"
    )
    if removed:
        print(f"retention (keep_last {config.backups.keep_last}): removed {', '.join(removed)}")
    return EXIT_OK


def list_(config: Config, args: argparse.Namespace) -> int:
    backups = list_backups(config.state.backups)
    if args.verify:
        for info in backups:
            info.verified = info.verified and verify_backup(info)
    if args.json:
        print(json.dumps([_as_json(info) for info in backups], indent=2))
        return EXIT_OK
    if not backups:
        print(f"no backups in {config.state.backups}")
        return EXIT_OK
    rows = [
        [
            info.name,
            info.endpoint,
            info.kind,
            info.created.strftime("%Y-%m-%d %H:%M:%S UTC"),
            _size(info.size_bytes),
            len(info.collections),
            info.documents,
            "yes" if info.verified else f"NO ({info.problem or 'unverified'})",
        ]
        for info in backups
    ]
    headers = ["name", "endpoint", "kind", "created", "size", "colls", "docs", "verified"]
    print(table(headers, rows))
    return EXIT_OK


def restore(config: Config, args: argparse.Namespace) -> int:
    info = find_backup(config.state.backups, args.name)
    interactive = sys.stdin.isatty() and sys.stderr.isatty()
    result = restore_backup(
        config,
        info,
        to=args.to,
        collections=args.collections,
        allow_protected=forced(args),
        confirm=ask if interactive else None,
        wait=not args.no_wait,
        reporter=Reporter(),
    )
    print(f"backed up {result.target} first: {result.safety_backup}")
    rows = [[c.name, c.inserted, c.replaced, c.deleted] for c in result.collections]
    print(table(["collection", "inserted", "replaced", "deleted"], rows))
    verified = sum(1 for c in result.collections if c.verified)
    print(
        f"restored {info.name} into {result.target} in {result.seconds:.1f} s; "
        f"{verified}/{len(result.collections)} collections read back and verified"
    )
    return EXIT_OK


def import_(config: Config, args: argparse.Namespace) -> int:
    """`syncd backup import PATH --endpoint E`: PATH is only read."""
    if args.endpoint not in config.endpoints:
        known = ", ".join(sorted(config.endpoints))
        raise UsageError(f"unknown endpoint '{args.endpoint}' (endpoints: {known})")
    info, dump = import_dump(
        args.path, args.endpoint, config.state.backups, compress=config.backups.compress
    )
    kind = "mongodump --gzip" if dump.compressed else "mongodump"
    print(
        f"{info.name}: imported {dump.folder} ({kind}, database {dump.database}): "
        f"{len(info.collections)} collections, {info.documents} documents, "
        f"{_size(info.size_bytes)}, verified"
    )
    for name, why in sorted(dump.skipped.items()):
        print(f"  not imported: {name}: {why}")
    print(f"restore it with: syncd backup restore {info.name} --to ENDPOINT")
    return EXIT_OK


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n = n / 1024  # type: ignore[assignment]
    return f"{n} B"


def _as_json(info: BackupInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "endpoint": info.endpoint,
        "database": info.database,
        "kind": info.kind,
        "created": info.created.isoformat(),
        "size_bytes": info.size_bytes,
        "collections": {name: entry.count for name, entry in info.collections.items()},
        "documents": info.documents,
        "verified": info.verified,
        "problem": info.problem,
        "reason": info.reason,
    }
