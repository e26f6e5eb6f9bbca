"""The collection policy in continuous mode (`syncd run`, `continuous: true`): what the
follower applies is masked and filtered like any sync, so a developer's mirror of
production never receives an original value of a masked field."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pymongo.database import Database

from tests.support.daemon import SyncdDaemon, wait_until

Db = Database[dict[str, Any]]
KEY_ENV = "SYNCD_MASK_KEY"


def test_a_continuous_mirror_masks_and_filters_what_it_applies(
    tmp_path: Path,
    local_uri: str,
    production_uri: str,
    local_db: Db,
    production_db: Db,
    start_daemon: Callable[..., SyncdDaemon],
) -> None:
    production_db.users.insert_many(
        [{"_id": i, "email": f"person{i}@valkyria.com", "active": True} for i in range(5)]
    )
    config = tmp_path / "syncd.yaml"
    config.write_text(
        "version: 1\n"
        f"state_dir: {tmp_path / 'state'}\n"
        "endpoints:\n"
        f"  local: {{uri: '{local_uri}'}}\n"
        f"  production: {{uri: '{production_uri}'}}\n"
        "flows:\n"
        "  from_production: {source: production, target: local}\n"
        "collections:\n"
        "  - name: users\n"
        "    filter: {active: true}\n"
        "    mask: {email: email}\n"
        f"masking: {{key_env: {KEY_ENV}}}\n"
        "schedules:\n  - {name: mirror, flow: from_production, continuous: true}\n"
        "metrics: {listen: '127.0.0.1:0'}\n",
        encoding="utf-8",
    )
    start_daemon(config, env={KEY_ENV: "continuous-test-key"})
    wait_until(lambda: local_db.users.count_documents({}) == 5, what="the initial sync")

    production_db.users.insert_one({"_id": 10, "email": "nueva@valkyria.com", "active": True})
    production_db.users.insert_one({"_id": 11, "email": "inactiva@valkyria.com", "active": False})
    production_db.users.update_one({"_id": 2}, {"$set": {"active": False}})  # leaves the filter

    wait_until(
        lambda: sorted(u["_id"] for u in local_db.users.find()) == [0, 1, 3, 4, 10],
        timeout=30,
        what="the changes",
    )
    emails = [u["email"] for u in local_db.users.find()]
    assert all(e.startswith("user.") and e.endswith("@example.invalid") for e in emails), emails
