"""Least privilege (SPEC §8a, issue 22): everything syncd sends toward production needs only
the built-in `readWrite` role where production is written, `read` where it is only read.

SecantusDB does not check privilege actions the way MongoDB does (a `readWrite` user may send
`bypassDocumentValidation` and `collMod` there), so the proof is the commands themselves:
pymongo's command monitoring records every command a whole workflow sends to production,
and each is checked against the two tables below, taken from MongoDB's manual ("Privilege
Actions": which actions a command needs; "Built-In Roles": which actions a role grants).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pymongo import monitoring
from pymongo.database import Database

from syncd.backup import list_backups
from syncd.mongo.privileges import ACTIONS, GRANTED_BY, missing_action, unauthorized_hint
from tests.conftest import AuthServer
from tests.engine_kit import Pair, syncd
from tests.safety_cli import PROD_URI_ENV, basic_config, run_syncd, snapshot
from tests.support.dataset import load_seed_dataset

Capsys = pytest.CaptureFixture[str]

# MongoDB manual, "Built-In Roles" (database user roles, on non-system collections).
READ = frozenset(
    {
        "changeStream",
        "collStats",
        "dbHash",
        "dbStats",
        "find",
        "killCursors",
        "listCollections",
        "listIndexes",
        "listSearchIndexes",
    }
)
ROLE_ACTIONS: dict[str, frozenset[str]] = {
    "read": READ,
    "readWrite": READ
    | {
        "convertToCapped",
        "createCollection",
        "createIndex",
        "createSearchIndexes",
        "dropCollection",
        "dropIndex",
        "dropSearchIndex",
        "insert",
        "remove",
        "renameCollectionSameDB",
        "update",
        "updateSearchIndex",
    },
}
NO_ACTION = frozenset()


def _write(action: str) -> Callable[[dict[str, Any]], frozenset[str]]:
    def needs(command: dict[str, Any]) -> frozenset[str]:
        actions = {action}
        if command.get("bypassDocumentValidation"):
            actions.add("bypassDocumentValidation")
        if any(u.get("upsert") for u in command.get("updates", [])):
            actions.add("insert")
        return frozenset(actions)

    return needs


def _aggregate(command: dict[str, Any]) -> frozenset[str]:
    stages = {next(iter(stage)) for stage in command.get("pipeline", [])}
    if stages & {"$out", "$merge", "$collStats", "$indexStats", "$currentOp"}:
        return frozenset({f"unchecked stage {sorted(stages)}"})
    return frozenset({"find", "changeStream"} if "$changeStream" in stages else {"find"})


# MongoDB manual, "Privilege Actions": the actions each command needs. Commands that need
# none: the handshake and session commands, and getMore/killCursors of one's own cursors.
COMMAND_ACTIONS: dict[str, Callable[[dict[str, Any]], frozenset[str]]] = {
    "find": lambda _: frozenset({"find"}),
    "count": lambda _: frozenset({"find"}),
    "aggregate": _aggregate,
    "listCollections": lambda _: frozenset({"listCollections"}),
    "listIndexes": lambda _: frozenset({"listIndexes"}),
    "collStats": lambda _: frozenset({"collStats"}),
    "dbStats": lambda _: frozenset({"dbStats"}),
    "insert": _write("insert"),
    "update": _write("update"),
    "delete": lambda _: frozenset({"remove"}),
    "findAndModify": lambda c: frozenset(
        {"find", "update"} | ({"insert"} if c.get("upsert") else set())
    ),
    "create": lambda _: frozenset({"createCollection"}),
    "createIndexes": lambda _: frozenset({"createIndex"}),
    "dropIndexes": lambda _: frozenset({"dropIndex"}),
    "collMod": lambda _: frozenset({"collMod"}),
    **dict.fromkeys(
        (
            "hello",
            "isMaster",
            "ismaster",
            "ping",
            "buildInfo",
            "buildinfo",
            "endSessions",
            "getMore",
            "killCursors",
        ),
        lambda _: NO_ACTION,
    ),
}


@dataclass
class Recorder(monitoring.CommandListener):
    """Every command pymongo sends while `active`, with the server it went to."""

    active: bool = False
    sent: list[tuple[tuple[str, int], str, str, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.active:
            with self.lock:
                address = (str(event.connection_id[0]), int(event.connection_id[1]))
                self.sent.append(
                    (address, event.database_name, event.command_name, dict(event.command))
                )

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    @contextmanager
    def recording(self) -> Iterator[list[tuple[tuple[str, int], str, str, dict[str, Any]]]]:
        self.sent = []
        self.active = True
        try:
            yield self.sent
        finally:
            self.active = False


RECORDER = Recorder()
monitoring.register(RECORDER)  # clients made after this (syncd's own) report to it


def actions_needed(command_name: str, command: dict[str, Any]) -> frozenset[str]:
    needs = COMMAND_ACTIONS.get(command_name)
    if needs is None:
        return frozenset({f"unknown command {command_name}"})
    return needs(command)


def toward(pair: Pair, sent: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    """The commands sent to production's server, to its database or admin."""
    address = pair.production.client.address
    assert address is not None
    host = (str(address[0]), int(address[1]))
    return [
        (name, command)
        for to, database, name, command in sent
        if to == host and database in (pair.production.name, "admin")
    ]


def beyond(role: str, commands: list[tuple[str, dict[str, Any]]]) -> dict[str, list[str]]:
    """command -> the actions it needs that `role` does not grant."""
    extra: dict[str, list[str]] = {}
    for name, command in commands:
        missing = actions_needed(name, command) - ROLE_ACTIONS[role]
        if missing:
            extra.setdefault(name, sorted(missing))
    return extra


@pytest.fixture
def valkyria(pair: Pair) -> Pair:
    """The seed's data set on local (users has a $jsonSchema validator), nothing on production."""
    load_seed_dataset(pair.local)
    pair.configure(hook=False)
    return pair


def test_every_command_toward_production_needs_only_read_or_read_write(
    valkyria: Pair, capsys: Capsys
) -> None:
    pair = valkyria
    steps: list[tuple[str, str, tuple[str, ...]]] = [
        ("push", "readWrite", ("sync", "to_production", "--yes")),
        ("status", "read", ("status",)),
        ("verify", "read", ("verify", "to_production")),
        ("diff", "read", ("diff", "to_production")),
        ("full push", "readWrite", ("sync", "to_production", "--yes", "--full")),
        ("pull", "read", ("sync", "from_production", "--yes", "--drift", "overwrite")),
        ("backup", "read", ("backup", "create", "production")),
    ]
    seen: dict[str, set[str]] = {}
    for label, role, args in steps:
        if label == "full push":
            pair.local.users.update_many({}, {"$set": {"seen": 1}})
        with RECORDER.recording() as sent:
            outcome = syncd(capsys, pair.config, *args)
        assert outcome.code == 0, (label, outcome.text)
        commands = toward(pair, sent)
        assert commands, label
        seen[label] = {name for name, _ in commands}
        assert beyond(role, commands) == {}, label
    backup = list_backups(pair.backups)[0].name
    pair.production.users.delete_many({"seen": 1})
    with RECORDER.recording() as sent:
        outcome = syncd(capsys, pair.config, "backup", "restore", backup, "--yes")
    assert outcome.code == 0, outcome.text
    restore = toward(pair, sent)
    assert beyond("readWrite", restore) == {}
    # Each write step wrote: the pushes created collections and indexes and wrote
    # documents, the restore put the deleted users back; none sent the flag or collMod.
    assert {"insert", "create", "createIndexes"} <= seen["push"]
    assert "update" in seen["full push"]
    assert {name for name, _ in restore} & {"insert", "update"}
    assert "collMod" not in seen["push"] | seen["full push"] | {name for name, _ in restore}
    flags = [c for _, c in restore if c.get("bypassDocumentValidation")]
    assert flags == []


def test_bypass_validation_is_sent_only_where_the_config_asks(pair: Pair, capsys: Capsys) -> None:
    """A document written before its collection's validator travels only past the
    validator: refused with the document and the rule named, then let through by
    `bypass_validation: true` on that collection (whose user then needs dbAdmin)."""
    pair.local.contracts.insert_many([{"_id": 1, "title": "kept"}, {"_id": 2}])
    validator = {"$jsonSchema": {"required": ["title"]}}
    pair.local.command("collMod", "contracts", validator=validator, validationLevel="moderate")
    pair.configure(hook=False)

    refused = syncd(capsys, pair.config, "sync", "to_production", "--yes")

    assert refused.code == 1
    assert "contracts: the target's validator refused the document with _id 2" in refused.err
    assert "missingProperties" in refused.err and "title" in refused.err
    assert "set `bypass_validation: true` on collection contracts" in refused.err

    rules = '- name: contracts\n  bypass_validation: true\n- name: "*"\n'
    pair.configure(hook=False, collections=rules)
    with RECORDER.recording() as sent:
        passed = syncd(capsys, pair.config, "sync", "to_production", "--yes")

    assert passed.code == 0, passed.text
    writes = [c for name, c in toward(pair, sent) if name in ("insert", "update")]
    assert writes and all(c.get("bypassDocumentValidation") for c in writes)
    assert beyond("readWrite", toward(pair, sent)) == {
        next(n for n, c in toward(pair, sent) if c.get("bypassDocumentValidation")): [
            "bypassDocumentValidation"
        ]
    }
    assert pair.production.contracts.count_documents({}) == 2


def test_the_runtime_tables_agree_with_the_manual() -> None:
    for command, actions in ACTIONS.items():
        assert frozenset(actions) <= actions_needed(command, {}), command
    for action, role in GRANTED_BY.items():
        if role in ROLE_ACTIONS:
            assert action in ROLE_ACTIONS[role], action
            lesser = [r for r in ("read",) if r != role and action in ROLE_ACTIONS[r]]
            assert not lesser, action
        else:
            assert all(action not in granted for granted in ROLE_ACTIONS.values()), action


@pytest.mark.parametrize(
    ("message", "action", "role"),
    [
        (
            'not authorized on prod to execute command { insert: "users", ordered: false, '
            'bypassDocumentValidation: true, $db: "prod" }',
            "bypassDocumentValidation",
            "dbAdmin or restore",
        ),
        ('not authorized on prod to execute command { collMod: "users" }', "collMod", "dbAdmin"),
        ('not authorized on prod to execute command { delete: "users" }', "remove", "readWrite"),
        (
            "not authorized on prod to execute command "
            "{ aggregate: 1, pipeline: [ { $changeStream: {} } ] }",
            "changeStream",
            "read",
        ),
        (
            "not authorized on cluster to execute command (action: serverStatus)",
            "serverStatus",
            None,
        ),
    ],
)
def test_an_unauthorized_refusal_names_the_action_and_the_role(
    message: str, action: str, role: str | None
) -> None:
    assert missing_action(message) == action
    hint = unauthorized_hint(message)
    assert f"lacks the privilege action {action}" in hint
    assert (
        f"the built-in role {role} grants it" if role else "a custom role must grant it"
    ) in hint


def test_a_read_write_user_pushes_the_data_set_into_an_auth_server(
    tmp_path: Path, local_db: Database[Any], local_uri: str, auth_server: AuthServer
) -> None:
    """SecantusDB --auth with a user that has readWrite on the target database only. The
    server is lenient (it lets readWrite send what MongoDB reserves to dbAdmin), so this
    shows only that nothing regressed; the recorded commands above are the proof."""
    load_seed_dataset(local_db)
    users = auth_server.users
    uri = auth_server.server.uri_for(users.app_database, credentials=users.app)
    config = basic_config(tmp_path, local_uri, collections=("*",))
    with auth_server.server.client(credentials=users.admin) as admin:
        admin.drop_database(users.app_database)  # the server is shared: others wrote there
    try:
        ran = run_syncd(config, "sync", "to_production", "--yes", env={PROD_URI_ENV: uri})

        assert ran.code == 0, ran
        with auth_server.server.client(credentials=users.admin) as admin:
            assert snapshot(admin[users.app_database]) == snapshot(local_db)
        assert users.app.password not in ran.output
    finally:
        with auth_server.server.client(credentials=users.admin) as admin:
            admin.drop_database(users.app_database)
