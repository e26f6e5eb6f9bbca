"""What syncd asks of a server's access control, and what its refusals mean (SPEC §8a).

syncd needs the built-in `read` role on a source database and `readWrite` on a target one:
it sends nothing that needs more unless the config asks for it (`bypass_validation: true`
on a collection), and `collMod` only when a collection's options differ. When a server
refuses anyway, the message names the privilege action that is missing and the built-in
role that grants it, from the two tables below (MongoDB manual, "Privilege Actions" and
"Built-In Roles"); tests/test_privileges.py holds the manual's tables and checks every
command a sync sends against them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from bson import json_util

from syncd.errors import SyncdError

UNAUTHORIZED = 13
DOCUMENT_VALIDATION_FAILURE = 121

# The actions of the commands syncd sends (the rest need none: hello, ping, getMore...).
ACTIONS: dict[str, tuple[str, ...]] = {
    "find": ("find",),
    "aggregate": ("find",),
    "count": ("find",),
    "listCollections": ("listCollections",),
    "listIndexes": ("listIndexes",),
    "insert": ("insert",),
    "update": ("update",),
    "delete": ("remove",),
    "findAndModify": ("find", "update"),
    "create": ("createCollection",),
    "createIndexes": ("createIndex",),
    "dropIndexes": ("dropIndex",),
    "collMod": ("collMod",),
}
# Action -> the least built-in role on the database that grants it.
GRANTED_BY: dict[str, str] = {
    **dict.fromkeys(
        ("find", "listCollections", "listIndexes", "changeStream", "collStats", "dbStats"),
        "read",
    ),
    **dict.fromkeys(
        ("insert", "update", "remove", "createCollection", "createIndex", "dropIndex"),
        "readWrite",
    ),
    "collMod": "dbAdmin",
    "bypassDocumentValidation": "dbAdmin or restore",
}
_COMMAND = re.compile(r"execute command \{\s*(\w+)")
_ACTION = re.compile(r"\(action: (\w+)\)")


def missing_action(message: str) -> str | None:
    """The privilege action an `Unauthorized` refusal is about, from the server's message
    ("not authorized on DB to execute command { insert: ... }"), when it can be told."""
    named = _ACTION.search(message)
    if named:
        return named.group(1)
    if "bypassDocumentValidation: true" in message:
        return "bypassDocumentValidation"
    command = _COMMAND.search(message)
    if command is None:
        return None
    if command.group(1) == "aggregate" and "$changeStream" in message:
        return "changeStream"
    actions = ACTIONS.get(command.group(1))
    return actions[-1] if actions else None


def unauthorized_hint(message: str) -> str:
    """What to do about an `Unauthorized` (13) refusal: the action and the role."""
    action = missing_action(message)
    roles = "syncd needs the built-in role read on a source, readWrite on a target"
    if action is None:
        return f"not allowed: check the endpoint's credentials and the user's roles ({roles})"
    role = GRANTED_BY.get(action)
    granted = f"the built-in role {role} grants it" if role else "a custom role must grant it"
    return f"the user lacks the privilege action {action} ({granted}; {roles})"


class ValidationRefused(SyncdError):
    """The target's validator refused a document the source holds (code 121)."""


def check_validation(collection: str, details: Mapping[str, Any]) -> None:
    """Raise `ValidationRefused` for the first write error of a bulk write's `details` that
    the target's validator caused; other errors are the caller's."""
    for error in details.get("writeErrors", []):
        if error.get("code") == DOCUMENT_VALIDATION_FAILURE:
            raise validation_refused(collection, error)


def validation_refused(collection: str, error: Mapping[str, Any]) -> ValidationRefused:
    """One write error of code 121 as a message: which document, which rule, what to do."""
    info = error.get("errInfo") or {}
    document = error.get("op") or {}
    doc_id = info.get("failingDocumentId", document.get("_id"))
    details = info.get("details")
    rule = (
        f"rule not satisfied: {json_util.dumps(details)[:400]}"
        if details
        else f"its validator: db.getCollectionInfos({{name: '{collection}'}}) shows it"
    )
    return ValidationRefused(
        f"{collection}: the target's validator refused the document with _id "
        f"{json_util.dumps(doc_id)} ({rule}). Fix that document on the source, or align the "
        f"two sides' validators, or set `bypass_validation: true` on collection {collection} "
        "in the config (the target user then needs the dbAdmin or restore role)"
    )
