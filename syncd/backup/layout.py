"""What a backup looks like on disk: names, file names, `manifest.json`, `*.metadata.json`.

    BACKUPS_DIR/NAME/manifest.json
    BACKUPS_DIR/NAME/DB/COLL.bson[.gz]                  concatenated raw BSON (mongodump)
    BACKUPS_DIR/NAME/DB/COLL.metadata.json[.gz]         options, indexes, uuid (mongodump)
    BACKUPS_DIR/NAME/DB/COLL.syncd-inserted-ids[.gz]    "changes" backups only: `{_id}`
                                                        documents a sync inserted

With gzip, mongodump compresses the metadata too (`--gzip` writes `.metadata.json.gz` and
`mongorestore --gzip` only reads that name), so we do the same. The inserted-ids file has no
`.bson` suffix on purpose: mongorestore skips files it does not know instead of restoring
them as a collection.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import bson
from bson import json_util
from bson.binary import Binary
from bson.json_util import CANONICAL_JSON_OPTIONS

from syncd import __version__
from syncd.backup.errors import BackupError
from syncd.mongo.source import CollectionSpec

Kind = Literal["full", "changes"]
Compress = Literal["gzip", "none"]

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "syncd-backup/1"
TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".del-"
RESTORE_LOCK = ".restore.lock"
# mongodump truncates longer escaped names; we refuse them instead (see file_stem).
MAX_STEM = 238

_NAME_RE = re.compile(r"^(?P<endpoint>.+)_(?P<stamp>\d{8}_\d{6})(?:_(?P<seq>\d+))?$")


@dataclass
class CollectionEntry:
    """One collection of a backup, as its manifest records it.

    `bytes` and `sha256` describe the `.bson[.gz]` file exactly as written (compressed
    when gzip); `count` is the number of documents in it.
    """

    count: int
    bytes: int
    sha256: str
    inserted_ids: int = 0
    file: str = ""
    metadata_file: str = ""
    metadata_sha256: str = ""
    inserted_ids_file: str | None = None
    inserted_ids_bytes: int = 0
    inserted_ids_sha256: str | None = None
    spec_bson: str = ""  # base64 BSON {options, indexes}: exact, unlike Extended JSON


@dataclass
class BackupInfo:
    name: str
    path: Path
    endpoint: str
    database: str
    kind: Kind
    created: datetime
    collections: dict[str, CollectionEntry]
    size_bytes: int
    verified: bool
    reason: str | None = None
    compress: Compress = "none"
    absent: tuple[str, ...] = ()
    syncd_version: str = ""
    problem: str | None = None  # why `verified` is False, for `backup list`

    @property
    def documents(self) -> int:
        return sum(entry.count for entry in self.collections.values())

    def as_dict(self) -> dict[str, Any]:
        """For `backup list --json`."""
        return {
            "name": self.name,
            "endpoint": self.endpoint,
            "database": self.database,
            "kind": self.kind,
            "created": self.created.isoformat(),
            "size_bytes": self.size_bytes,
            "collections": {name: entry.count for name, entry in self.collections.items()},
            "documents": self.documents,
            "verified": self.verified,
            "reason": self.reason,
            "problem": self.problem,
        }


# -- names ------------------------------------------------------------------------------


def check_endpoint_name(endpoint: str) -> None:
    if not endpoint or endpoint.startswith(".") or "/" in endpoint or "\x00" in endpoint:
        raise BackupError(f"cannot name a backup after endpoint {endpoint!r}")


def backup_name(endpoint: str, created: datetime, seq: int = 1) -> str:
    """`ENDPOINT_YYYYMMDD_HHMMSS` (UTC); `_2`, `_3`... for later backups in the same second."""
    stamp = created.astimezone(UTC).strftime("%Y%m%d_%H%M%S")
    return f"{endpoint}_{stamp}" if seq <= 1 else f"{endpoint}_{stamp}_{seq}"


def parse_name(name: str) -> tuple[str, datetime] | None:
    """Endpoint and creation second from a backup name, or None when it is not one."""
    match = _NAME_RE.match(name)
    if match is None:
        return None
    try:
        created = datetime.strptime(match["stamp"], "%Y%m%d_%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    return match["endpoint"], created


def file_stem(collection: str) -> str:
    """A collection name as mongodump escapes it for a file name (Go's url.PathEscape)."""
    stem = quote(collection, safe="$&+:=@")
    if len(stem.encode()) > MAX_STEM:
        raise BackupError(
            f"collection name {collection[:40]!r}... is too long for a backup file name; "
            "leave it out of the backup (-C) or rename it"
        )
    return stem


def _gz(compress: Compress) -> str:
    return ".gz" if compress == "gzip" else ""


def bson_file(database: str, collection: str, compress: Compress) -> str:
    return f"{database}/{file_stem(collection)}.bson{_gz(compress)}"


def metadata_file(database: str, collection: str, compress: Compress) -> str:
    return f"{database}/{file_stem(collection)}.metadata.json{_gz(compress)}"


def inserted_ids_file(database: str, collection: str, compress: Compress) -> str:
    return f"{database}/{file_stem(collection)}.syncd-inserted-ids{_gz(compress)}"


# -- collection metadata (mongodump's COLL.metadata.json) -------------------------------


def metadata_json(spec: CollectionSpec) -> bytes:
    """The metadata document in canonical Extended JSON, with mongodump's key order."""
    doc: dict[str, Any] = {}
    if spec.options:
        doc["options"] = spec.options
    doc["indexes"] = [{k: v for k, v in index.items() if k != "ns"} for index in spec.indexes]
    if spec.uuid is not None:
        doc["uuid"] = spec.uuid.hex()
    doc["collectionName"] = spec.name
    doc["type"] = "collection"
    text = json_util.dumps(doc, json_options=CANONICAL_JSON_OPTIONS, separators=(",", ":"))
    return text.encode()


def spec_from_metadata(data: bytes, name: str) -> CollectionSpec:
    doc = json_util.loads(data.decode(), json_options=CANONICAL_JSON_OPTIONS)
    if not isinstance(doc, dict):
        raise ValueError("metadata is not a JSON object")
    uuid_hex = doc.get("uuid")
    indexes = tuple(
        {k: v for k, v in index.items() if k != "ns"} for index in doc.get("indexes", [])
    )
    return CollectionSpec(
        name=doc.get("collectionName", name),
        options=dict(doc.get("options", {})),
        indexes=indexes,
        uuid=bytes.fromhex(uuid_hex) if isinstance(uuid_hex, str) and uuid_hex else None,
    )


def spec_to_bson(spec: CollectionSpec) -> str:
    """Options and indexes as base64 BSON, kept in the manifest next to metadata.json.

    Extended JSON cannot tell a query operator from a type wrapper: a validator
    `{"email": {"$regex": "@"}}` comes back from metadata.json as a BSON regex. The
    manifest keeps this exact copy, and `BackupSource` reads it first.
    """
    doc = {"options": spec.options, "indexes": list(spec.indexes)}
    return base64.b64encode(bson.encode(doc)).decode()


def spec_from_bson(data: str, name: str, uuid: bytes | None) -> CollectionSpec:
    doc = bson.decode(base64.b64decode(data, validate=True))
    indexes = tuple({k: v for k, v in index.items() if k != "ns"} for index in doc["indexes"])
    return CollectionSpec(name=name, options=dict(doc["options"]), indexes=indexes, uuid=uuid)


def uuid_bytes(value: object) -> bytes | None:
    """The `info.uuid` of listCollections as 16 bytes (it decodes as Binary or uuid.UUID)."""
    if isinstance(value, Binary):
        return bytes(value)
    raw = getattr(value, "bytes", None)
    return raw if isinstance(raw, bytes) else None


# -- manifest.json ----------------------------------------------------------------------


@dataclass
class Manifest:
    endpoint: str
    database: str
    kind: Kind
    created: datetime
    compress: Compress
    reason: str | None = None
    collections: dict[str, CollectionEntry] = field(default_factory=dict)
    absent: list[str] = field(default_factory=list)
    syncd_version: str = __version__


def _entry_json(entry: CollectionEntry) -> dict[str, Any]:
    ids: dict[str, Any] | None = None
    if entry.inserted_ids_file is not None:
        ids = {
            "file": entry.inserted_ids_file,
            "count": entry.inserted_ids,
            "bytes": entry.inserted_ids_bytes,
            "sha256": entry.inserted_ids_sha256,
        }
    return {
        "file": entry.file,
        "count": entry.count,
        "bytes": entry.bytes,
        "sha256": entry.sha256,
        "metadata_file": entry.metadata_file,
        "metadata_sha256": entry.metadata_sha256,
        "inserted_ids": ids,
        "spec_bson": entry.spec_bson,
    }


def manifest_json(manifest: Manifest) -> bytes:
    doc = {
        "format": MANIFEST_FORMAT,
        "syncd_version": manifest.syncd_version,
        "endpoint": manifest.endpoint,
        "database": manifest.database,
        "kind": manifest.kind,
        "created": manifest.created.astimezone(UTC).isoformat(),
        "compress": manifest.compress,
        "reason": manifest.reason,
        "collections": {name: _entry_json(e) for name, e in manifest.collections.items()},
        "absent_collections": manifest.absent,
    }
    return (json.dumps(doc, indent=2) + "\n").encode()


def _str(doc: dict[str, Any], key: str) -> str:
    value = doc[key]
    if not isinstance(value, str):
        raise ValueError(f"{key} is not a string")
    return value


def _int(doc: dict[str, Any], key: str) -> int:
    value = doc[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{key} is not a count")
    return value


def _entry_from_json(doc: dict[str, Any]) -> CollectionEntry:
    entry = CollectionEntry(
        count=_int(doc, "count"),
        bytes=_int(doc, "bytes"),
        sha256=_str(doc, "sha256"),
        file=_str(doc, "file"),
        metadata_file=_str(doc, "metadata_file"),
        metadata_sha256=_str(doc, "metadata_sha256"),
        spec_bson=str(doc.get("spec_bson") or ""),
    )
    ids = doc.get("inserted_ids")
    if ids is not None:
        entry.inserted_ids = _int(ids, "count")
        entry.inserted_ids_file = _str(ids, "file")
        entry.inserted_ids_bytes = _int(ids, "bytes")
        entry.inserted_ids_sha256 = _str(ids, "sha256")
    for rel in (entry.file, entry.metadata_file, entry.inserted_ids_file):
        if rel is not None and (rel.startswith("/") or ".." in rel.split("/")):
            raise ValueError(f"file {rel!r} is outside the backup")
    return entry


def parse_manifest(data: bytes) -> Manifest:
    """The manifest, or ValueError/KeyError/TypeError when it is not one we wrote."""
    doc = json.loads(data)
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise ValueError("not a syncd backup manifest")
    kind = _str(doc, "kind")
    compress = _str(doc, "compress")
    if kind not in ("full", "changes") or compress not in ("gzip", "none"):
        raise ValueError("unknown kind or compression")
    created = datetime.fromisoformat(_str(doc, "created"))
    if created.tzinfo is None:
        raise ValueError("created has no time zone")
    reason = doc.get("reason")
    return Manifest(
        endpoint=_str(doc, "endpoint"),
        database=_str(doc, "database"),
        kind="full" if kind == "full" else "changes",
        created=created.astimezone(UTC),
        compress="gzip" if compress == "gzip" else "none",
        reason=reason if isinstance(reason, str) else None,
        collections={str(k): _entry_from_json(v) for k, v in doc["collections"].items()},
        absent=[str(name) for name in doc.get("absent_collections", [])],
        syncd_version=str(doc.get("syncd_version", "")),
    )
