"""Backups: mongodump-compatible snapshots, written atomically, listed, kept, read back.

Layout and naming: `layout`; writing: `writer` (`BackupWriter`) and `create`
(`create_backup` from a live database); reading: `reader` (`list_backups`, `find_backup`,
`verify_backup`, `BackupSource`); housekeeping: `retention`.
"""

from syncd.backup.create import create_backup
from syncd.backup.errors import BackupError
from syncd.backup.layout import BackupInfo, CollectionEntry
from syncd.backup.reader import (
    BackupSource,
    backup_problems,
    find_backup,
    list_backups,
    read_info,
    verify_backup,
)
from syncd.backup.retention import apply_retention, clean_leftovers, restore_lock
from syncd.backup.writer import BackupWriter

__all__ = [
    "BackupError",
    "BackupInfo",
    "BackupSource",
    "BackupWriter",
    "CollectionEntry",
    "apply_retention",
    "backup_problems",
    "clean_leftovers",
    "create_backup",
    "find_backup",
    "list_backups",
    "read_info",
    "restore_lock",
    "verify_backup",
]
