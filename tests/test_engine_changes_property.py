"""Property: change streams find the same changes as reading both sides whole.

With a standalone on either side (no change streams), that side is read whole and
compared with the memory while the other side's stream is followed: the same property.

Random edits on both sides over several syncs, interleaved with server restarts and
`-C` runs: before every sync, the plan made from the change streams equals the plan of a
full read (`--full`), collection by collection; the sync then does what that plan says;
and at the end a converged pair plans nothing either way, with target == source.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pymongo import MongoClient
from pymongo.database import Database

from syncd.config import load_config
from syncd.config.model import DriftPolicy
from syncd.engine.flow import PlanRefused, SyncOptions, sync_flow
from syncd.engine.plan import Plan
from tests.engine_kit import collection_state, config_text
from tests.support.servers import MongoServer

COLLECTIONS = ("docs", "more")
IDS = range(8)
_examples = itertools.count()

values = st.one_of(st.integers(0, 2), st.sampled_from(["a", "b"]))
edits = st.dictionaries(st.sampled_from(IDS), st.one_of(st.just("DELETE"), values), max_size=4)
edit_step = st.tuples(st.sampled_from(["local", "production"]), st.sampled_from(COLLECTIONS), edits)
sync_step = st.tuples(
    st.just("sync"),
    st.sampled_from(["abort", "overwrite", "merge"]),
    st.sampled_from([None, *COLLECTIONS]),
)
restart_step = st.tuples(st.just("restart"), st.sampled_from(["local", "production"]), st.none())
steps = st.lists(
    st.one_of(edit_step, edit_step, sync_step, sync_step, restart_step), min_size=2, max_size=7
)


class World:
    def __init__(self, servers: dict[str, MongoServer], root: Path) -> None:
        n = next(_examples)
        self.servers = servers
        self.names = {"local": f"cs_{n}_l", "production": f"cs_{n}_p"}
        path = root / f"example_{n}"
        path.mkdir()
        (path / "syncd.yaml").write_text(
            config_text(
                path / "state",
                servers["local"].uri_for(self.names["local"]),
                servers["production"].uri_for(self.names["production"]),
                hook=False,
                collections='- name: "*"',
                before_sync="none",
            ),
            encoding="utf-8",
        )
        self.config = load_config(path / "syncd.yaml")

    @contextmanager
    def db(self, side: str) -> Iterator[Database[Any]]:
        with MongoClient(self.servers[side].uri, directConnection=True) as client:
            yield client[self.names[side]]

    def edit(self, side: str, coll: str, changes: dict[int, Any]) -> None:
        with self.db(side) as db:
            for _id, value in changes.items():
                if value == "DELETE":
                    db[coll].delete_one({"_id": _id})
                else:
                    db[coll].replace_one({"_id": _id}, {"v": value}, upsert=True)

    def state(self, side: str) -> dict[str, dict[bytes, bytes]]:
        with self.db(side) as db:
            return {name: collection_state(db[name]) for name in COLLECTIONS}

    def plan(self, only: str | None, *, full: bool, drift: DriftPolicy) -> Plan:
        options = SyncOptions(
            collections=[only] if only else None, dry_run=True, drift=drift, full=full
        )
        return sync_flow(self.config, "to_production", options).plan

    def push(self, only: str | None, drift: DriftPolicy) -> bool:
        options = SyncOptions(
            collections=[only] if only else None, drift=drift, allow_protected=True
        )
        try:
            sync_flow(self.config, "to_production", options)
        except PlanRefused:
            return False
        return True

    def drop(self) -> None:
        for side in ("local", "production"):
            with self.db(side) as db:
                db.client.drop_database(db.name)


def outline(plan: Plan) -> dict[str, tuple[Any, ...]]:
    return {
        c.name: (
            c.source_count,
            c.target_count,
            c.inserts,
            c.replaces,
            c.deletes,
            c.drifted,
            c.kept,
            c.conflicts,
            tuple(c.drift_ids),
            c.refusal,
        )
        for c in plan.collections
    }


STANDALONE = ("--standalone",)
# which side is a standalone -> how a collection known to the memory is found (a push)
TOPOLOGIES = {None: "changes", "local": "target-changes", "production": "source-changes"}


@pytest.fixture(
    params=list(TOPOLOGIES), ids=["replica-sets", "local-standalone", "prod-standalone"]
)
def servers(
    request: pytest.FixtureRequest, mongo_server_factory: Callable[..., MongoServer]
) -> dict[str, MongoServer]:
    return {
        side: mongo_server_factory(extra_args=STANDALONE if request.param == side else ())
        for side in ("local", "production")
    }


@pytest.fixture
def known_mode(servers: dict[str, MongoServer], request: pytest.FixtureRequest) -> str:
    return TOPOLOGIES[request.node.callspec.params["servers"]]


@pytest.mark.slow
@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(start=edits, more=edits, script=steps)
# a collection synced (-C) while it existed on neither side, then created: its changes are
# followed, it was not "dropped or recreated"
@example(
    start={},
    more={},
    script=[("sync", "abort", "more"), ("local", "more", {0: 0}), ("sync", "abort", None)],
)
def test_change_streams_plan_what_a_full_read_plans_through_edits_restarts_and_c_runs(
    servers: dict[str, MongoServer],
    known_mode: str,
    tmp_path: Path,
    start: dict[int, Any],
    more: dict[int, Any],
    script: list[tuple[str, Any, Any]],
) -> None:
    world = World(servers, tmp_path)
    try:
        world.edit("local", "docs", start)
        world.edit("local", "more", more)
        assert world.push(None, "abort")  # the first sync: both sides read whole
        known = {c.name for c in world.plan(None, full=True, drift="abort").collections}
        for kind, a, b in script:
            if kind == "restart":
                servers[a].restart()
            elif kind == "sync":
                drift, only = a, b
                by_changes = world.plan(only, full=False, drift=drift)
                by_full = world.plan(only, full=True, drift=drift)
                assert outline(by_changes) == outline(by_full)
                for c in by_changes.collections:
                    assert c.mode == (known_mode if c.name in known else "full"), c.reason
                before = world.state("production")
                ran = world.push(only, drift)
                assert ran == (not by_changes.refusals)
                if ran:
                    known |= {c.name for c in by_changes.collections}
                if not ran:
                    assert world.state("production") == before
            else:
                world.edit(kind, a, b)
        assert world.push(None, "overwrite")
        assert world.state("production") == world.state("local")
        for full in (False, True):
            assert not world.plan(None, full=full, drift="abort").writes
    finally:
        world.drop()
