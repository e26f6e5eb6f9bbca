"""Helpers for the engine tests: a config for a local/production pair, running `syncd`
in-process, and byte-exact snapshots of what a database holds.

Snapshots compare raw BSON, as the engine does: field order and numeric types count.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from bson.raw_bson import RawBSONDocument
from pymongo.collection import Collection
from pymongo.database import Database

from syncd.backup import BackupSource, list_backups
from syncd.cli import main
from syncd.config.model import own_collection
from syncd.mongo.rawbson import id_document, raw_id
from tests.support.pause import Holds

RESET_PASSWORD = "Admin123"  # the seed's "default password after sync"
HOOK_USERS = ("hectorneira2005@hotmail.com", "legal@valkyria.com", "admin@valkyria.com")

Snapshot = dict[str, dict[bytes, bytes]]  # collection -> raw {_id} -> raw document


@dataclass(frozen=True)
class Pair:
    """What an engine test needs: both databases, the config and where syncd keeps state."""

    local: Database[Any]
    production: Database[Any]
    local_uri: str
    production_uri: str
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "syncd.yaml"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def backups(self) -> Path:
        return self.state_dir / "backups"

    def configure(self, **options: Any) -> Path:
        """(Re)write the config; see `config_text` for the options."""
        text = config_text(self.state_dir, self.local_uri, self.production_uri, **options)
        self.config.write_text(text, encoding="utf-8")
        return self.config


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def config_text(
    state_dir: Path,
    local_uri: str,
    production_uri: str,
    *,
    drift: str = "abort",
    collections: str | None = None,
    hook: bool = True,
    before_sync: str = "full",
) -> str:
    """The seed's setup: push (with the password reset) and pull; audit_events pull-only.

    `collections` replaces the `collections:` list (YAML list items, any indentation)."""
    rules = textwrap.dedent(collections or DEFAULT_RULES).strip()
    after = ", after: [reset_passwords]" if hook else ""
    text = textwrap.dedent(
        f"""\
        version: 1
        state_dir: {state_dir}
        endpoints:
          local:
            uri: "{local_uri}"
          production:
            uri: "{production_uri}"
            protected: true
        flows:
          to_production: {{source: local, target: production{after}}}
          from_production: {{source: production, target: local}}
        drift: {drift}
        backups:
          keep_last: 5
          compress: gzip
          before_sync: {before_sync}
        """
    )
    text += "collections:\n" + textwrap.indent(rules, "  ") + "\n"
    return text + (HOOK_YAML if hook else "")


DEFAULT_RULES = """
    - name: audit_events
      flows: [from_production]
    - name: "*"
"""
HOOK_YAML = f"""\
hooks:
  reset_passwords:
    collection: users
    match_field: email
    password_field: encrypted_password
    scheme: bcrypt
    cost: 4
    password_env: SYNCD_RESET_PASSWORD
    users: [{", ".join(HOOK_USERS)}]
"""


def syncd(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> Outcome:
    """Run `syncd -c CONFIG ARGS...` in this process; the root log handlers are restored
    afterwards so no later test logs into this test's captured stream."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    capsys.readouterr()
    try:
        code = main(["-c", str(config), *args])
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    captured = capsys.readouterr()
    return Outcome(code, captured.out, captured.err)


def raw_collection(coll: Collection[Any]) -> Collection[RawBSONDocument]:
    options = coll.codec_options.with_options(document_class=RawBSONDocument)
    return coll.with_options(codec_options=options)


def raw_id_bytes(doc: RawBSONDocument) -> bytes:
    """`{_id: ...}` as stored (BSON bytes), so 1 and Int64(1) stay apart."""
    return id_document(raw_id(bytes(doc.raw)))


def collection_state(coll: Collection[Any]) -> dict[bytes, bytes]:
    return {raw_id_bytes(d): bytes(d.raw) for d in raw_collection(coll).find()}


def user_collections(db: Database[Any]) -> list[str]:
    """The collections of the application's data: not syncd's own (`_syncd_leases`)."""
    return sorted(name for name in db.list_collection_names() if not own_collection(name))


def snapshot(db: Database[Any], names: Iterable[str] | None = None) -> Snapshot:
    """Every document of every (or the named) collection, byte for byte.

    Not syncd's own collections (the `_syncd_leases` a sync leaves in its target): they are
    not the user's data and never travel; name them to see them."""
    selected = sorted(names) if names is not None else user_collections(db)
    return {name: collection_state(db[name]) for name in selected}


def index_specs(coll: Collection[Any]) -> dict[str, dict[str, Any]]:
    return {
        str(ix["name"]): {k: v for k, v in ix.items() if k not in ("ns", "v")}
        for ix in coll.list_indexes()
    }


def collection_options(db: Database[Any], name: str) -> dict[str, Any]:
    infos = list(db.list_collections(filter={"name": name}))
    return dict(infos[0].get("options", {})) if infos else {}


def collection_uuid(db: Database[Any], name: str) -> Any:
    infos = list(db.list_collections(filter={"name": name}))
    return infos[0].get("info", {}).get("uuid") if infos else None


def tree(path: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under `path` (empty when it does not exist)."""
    if not path.exists():
        return {}
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def backup_names(pair: Pair) -> list[str]:
    if not pair.backups.exists():
        return []
    return sorted(p.name for p in pair.backups.iterdir() if not p.name.startswith("."))


def make_pair(
    local_db: Database[Any],
    production_db: Database[Any],
    local_uri: str,
    production_uri: str,
    root: Path,
    **options: Any,
) -> Pair:
    """Write the config under `root`; state goes to `root/state` (not created yet)."""
    pair = Pair(local_db, production_db, local_uri, production_uri, root)
    pair.configure(**options)
    return pair


def backup_contents(pair: Pair) -> dict[str, dict[str, dict[bytes, bytes]]]:
    """backup name -> collection -> raw _id -> raw document, read back through syncd."""
    contents = {}
    for info in list_backups(pair.backups):
        source = BackupSource(info)
        contents[info.name] = {
            name: {id_document(raw_id(raw)): raw for raw in source.iter_raw(name)}
            for name in source.list_collections()
        }
    return contents


# -- processes and faults, shared by the interrupt and fault tests -------------------------

# A run killed or cut off from its target leaves its write lease there; the next run takes it
# over once it expired: 60 s by default, this with SYNCD_LEASE_SECONDS (README, the knob for
# tests and operations). Renewed every quarter of it, given up unconfirmed for half of it:
# long enough for a loaded 2-core machine, short enough that the wait costs seconds.
LEASE_SECONDS = "8"


def start_syncd(
    pair: Pair, log: Path, *args: str, holds: Holds | None = None
) -> subprocess.Popen[bytes]:
    """`syncd -c CONFIG ARGS...` as a real process (FORCE unset), output to `log`; held at
    the points of `holds`."""
    env = {k: v for k, v in os.environ.items() if k != "FORCE"}
    env.update(holds.env if holds else {})
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "syncd.cli", "-c", str(pair.config), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=pair.root,
        )
