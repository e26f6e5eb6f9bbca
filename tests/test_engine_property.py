"""Property: after one sync, random edits on both sides, then a sync under each drift
policy give exactly the contracted result (SPEC §4):

- overwrite: target == source;
- merge: source changes applied, target-only changes kept; a document changed on both
  sides refuses the run with nothing written;
- abort: refused (nothing written) iff some target document drifted, i.e. differs both
  from what the last sync left there and from the source; otherwise target == source.

A converged pair then plans nothing more (re-running changes nothing).
Each example gets its own pair of databases and state directory.
"""

from __future__ import annotations

import itertools
import secrets
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo import MongoClient
from pymongo.database import Database

from syncd.config import load_config
from syncd.config.model import Config, DriftPolicy
from syncd.engine.flow import PlanRefused, SyncOptions, sync_flow
from tests.engine_kit import collection_state, config_text
from tests.support.servers import Server

Client = MongoClient[dict[str, Any]]
State = dict[bytes, bytes]  # raw {_id} -> raw document
IDS = range(8)
_examples = itertools.count()
_prefix = f"prop_{secrets.token_hex(2)}"

values = st.one_of(st.integers(0, 2), st.sampled_from(["a", "b"]), st.none())
initial = st.dictionaries(st.sampled_from(IDS), values, max_size=len(IDS))
# per _id: absent = untouched; "DELETE" = delete; anything else = upsert {v: value}
edits = st.dictionaries(st.sampled_from(IDS), st.one_of(st.just("DELETE"), values), max_size=5)


class World:
    """A fresh local/production database pair and a state directory for one example."""

    def __init__(
        self, local: Client, production: Client, servers: tuple[Server, Server], root: Path
    ):
        n = next(_examples)
        self.local = local[f"{_prefix}_{n}_l"]
        self.production = production[f"{_prefix}_{n}_p"]
        path = root / f"example_{n}"
        path.mkdir()
        (path / "syncd.yaml").write_text(
            config_text(
                path / "state",
                servers[0].uri_for(self.local.name),
                servers[1].uri_for(self.production.name),
                hook=False,
                collections='- name: "*"',
            ),
            encoding="utf-8",
        )
        self.config: Config = load_config(path / "syncd.yaml")
        self.backups = path / "state" / "backups"

    def push(self, drift: DriftPolicy) -> bool:
        """True when the sync ran, False when it was refused."""
        try:
            sync_flow(self.config, "to_production", SyncOptions(drift=drift, allow_protected=True))
        except PlanRefused:
            return False
        return True

    def drop(self) -> None:
        self.local.client.drop_database(self.local.name)
        self.production.client.drop_database(self.production.name)


def apply_edits(db: Database[Any], changes: dict[int, Any]) -> None:
    for _id, value in changes.items():
        if value == "DELETE":
            db.docs.delete_one({"_id": _id})
        else:
            db.docs.replace_one({"_id": _id}, {"v": value}, upsert=True)


def state(db: Database[Any]) -> State:
    return collection_state(db.docs)


def expected(policy: DriftPolicy, base: State, source: State, target: State) -> State | None:
    """The target after the sync, or None when the sync must be refused."""
    keys = set(base) | set(source) | set(target)
    drifted = {k for k in keys if target.get(k) != base.get(k) and target.get(k) != source.get(k)}
    if policy == "overwrite":
        return source
    if policy == "abort":
        return None if drifted else source
    if any(source.get(k) != base.get(k) for k in drifted):
        return None
    merged = {k: source.get(k) for k in keys if k not in drifted} | {
        k: target.get(k) for k in drifted
    }
    return {k: v for k, v in merged.items() if v is not None}


@pytest.fixture(scope="module")
def examples_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("property")


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    start=initial,
    source_edits=edits,
    target_edits=edits,
    policy=st.sampled_from(["abort", "overwrite", "merge"]),
)
def test_random_edits_on_both_sides_then_a_sync_give_the_contracted_result(
    local_client: Client,
    production_client: Client,
    server_local: Server,
    server_production: Server,
    examples_root: Path,
    start: dict[int, Any],
    source_edits: dict[int, Any],
    target_edits: dict[int, Any],
    policy: DriftPolicy,
) -> None:
    world = World(local_client, production_client, (server_local, server_production), examples_root)
    try:
        world.local.create_collection("docs")
        apply_edits(world.local, start)
        assert world.push("abort")
        base = state(world.local)
        assert state(world.production) == base

        apply_edits(world.local, source_edits)
        apply_edits(world.production, target_edits)
        source, target = state(world.local), state(world.production)
        want = expected(policy, base, source, target)

        ran = world.push(policy)

        assert ran == (want is not None)
        assert state(world.local) == source  # the source is never written
        if want is None:
            assert state(world.production) == target
            assert not world.backups.exists() or not any(world.backups.iterdir())
            return
        assert state(world.production) == want
        assert world.push(policy)  # converged: a re-run is accepted...
        assert state(world.production) == want  # ...and changes nothing
    finally:
        world.drop()
