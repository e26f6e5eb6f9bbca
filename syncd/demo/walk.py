"""The walkthrough: the seed's workflows, one numbered step each, with real commands."""

from __future__ import annotations

import os

import bcrypt

from syncd.backup import list_backups
from syncd.config import load_config
from syncd.demo.config import RESET_PASSWORD_ENV
from syncd.demo.data import load_demo_data
from syncd.demo.session import DemoFailed, Session

EDITED_USER = "camila.rojas@valkyria.com"
LOGIN_USER = "admin@valkyria.com"


def load_production(s: Session) -> None:
    s.heading("Load a small VALKYRIA ECM data set into 'production'")
    counts = load_demo_data(s.db("production"))
    for name, count in counts.items():
        print(f"  {name:<16} {count:>4} documents")
    s.note("the users include the three reset users; templates keep their .docx in GridFS")


def validate_and_status(s: Session) -> None:
    s.heading("Validate the policy")
    print(s.config_path.read_text(), end="")
    s.syncd("validate")
    s.heading("Status before the first sync (rake db:sync:status)")
    s.syncd("status", "from_production")


def pull(s: Session) -> None:
    s.heading("Workflow B: start the day with production's data (rake db:sync:from_production)")
    s.syncd("sync", "from_production")


def edits(s: Session) -> None:
    s.heading("Two people change things: a developer locally, the admin in production's UI")
    local, production = s.db("local"), s.db("production")
    local.templates.update_one(
        {"name": "Contrato de trabajo"}, {"$set": {"name": "Contrato de trabajo 2026"}}
    )
    s.note("local: template 'Contrato de trabajo' renamed to 'Contrato de trabajo 2026'")
    production.users.update_one({"email": EDITED_USER}, {"$set": {"last_name": "Rojas Pérez"}})
    s.note(f"production: the admin changed the last name of {EDITED_USER} to 'Rojas Pérez'")


def push_refused(s: Session) -> None:
    s.heading("Push without pulling first: refused for drift (Workflow C's lost edit, prevented)")
    s.syncd("sync", "to_production", "--yes", expect=3)
    user = s.db("production").users.find_one({"email": EDITED_USER}) or {}
    s.note(f"exit 3, nothing written: production still says '{user.get('last_name')}'")
    s.note("--yes skips confirmations only; it never silences drift protection")


def push_merge(s: Session) -> None:
    s.heading("Push with --drift merge: local changes go up, production's edit stays")
    s.syncd("sync", "to_production", "--yes", "--drift", "merge")
    production = s.db("production")
    user = production.users.find_one({"email": EDITED_USER}) or {}
    template = production.templates.find_one({"name": "Contrato de trabajo 2026"})
    s.note(f"production keeps the admin's edit: '{user.get('last_name')}'")
    s.note(f"production has the local template rename: {template is not None}")
    check_login(s)


def check_login(s: Session) -> None:
    """The reset hook's hash must check against the password, as Devise would check it."""
    admin = s.db("production").users.find_one({"email": LOGIN_USER}) or {}
    stored = str(admin.get("encrypted_password", ""))
    password = os.environ[RESET_PASSWORD_ENV]
    if not stored.startswith("$2a$") or not bcrypt.checkpw(password.encode(), stored.encode()):
        raise DemoFailed(f"the reset password does not check against {LOGIN_USER}'s hash")
    s.note(f"login works: {LOGIN_USER} with the reset password (bcrypt {stored[:7]}...)")


def backups(s: Session) -> None:
    s.heading("Back up local by hand (rake db:sync:backup:local), then list (backup:list)")
    s.syncd("backup", "create", "local")
    s.syncd("backup", "list")


def restore(s: Session) -> None:
    s.heading("A local mistake, undone from the backup (rake db:sync:backup:restore_local[...])")
    local = s.db("local")
    deleted = local.legal_contracts.delete_many({}).deleted_count
    s.note(f"oops: deleted all {deleted} legal_contracts in local")
    name = _newest_backup(s, "local")
    s.syncd("backup", "restore", name)
    s.note(f"legal_contracts in local: {local.legal_contracts.count_documents({})} documents")


def _newest_backup(s: Session, endpoint: str) -> str:
    for info in list_backups(load_config(s.config_path).state.backups):
        if info.endpoint == endpoint and info.verified:
            return info.name
    raise DemoFailed(f"no verified backup of {endpoint} to restore")
