"""The plan without a server: what a sync will insert, replace, delete, keep or refuse,
from two scans and the sync memory; and which index/option changes it needs.

Documents come from `Docs`, a `DocumentSource` over in-memory raw BSON (the engine's
own protocol, which backups implement too), so the real scan, SQL join and
classification run exactly as in a sync.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import bson
import pytest
from bson import Int64

from syncd.config.model import DriftPolicy
from syncd.engine.changes import Sides
from syncd.engine.plan import SAMPLE_IDS, CollectionPlan, Plan, plan_collections
from syncd.engine.progress import Silent
from syncd.engine.scratch import Workspace
from syncd.mongo.rawbson import digest, id_key, raw_id
from syncd.mongo.source import CollectionSpec
from syncd.mongo.specs import SpecChanges, compare_specs
from syncd.state.memory import Pair, SyncMemory

COLL = "things"
SOURCE, TARGET = "local", "production"
Docs = Mapping[Any, Any]  # _id -> value of field "v"; a doc is {_id, v}


class MemorySource:
    """A DocumentSource over raw BSON held in a list."""

    def __init__(self, label: str, docs: Docs, spec: CollectionSpec | None = None) -> None:
        self.label = label
        self.raw = [encode(k, v) for k, v in docs.items()]
        self.spec = spec if spec is not None else CollectionSpec(COLL)

    def list_collections(self) -> list[str]:
        return [COLL]

    def collection_spec(self, name: str) -> CollectionSpec | None:
        return self.spec

    def iter_raw(self, name: str) -> Iterator[bytes]:
        yield from self.raw

    def count(self, name: str) -> int:
        return len(self.raw)

    def changes_unsupported(self) -> str | None:
        return "documents held in a test's memory have no change stream"

    def server_version(self) -> tuple[int, ...]:
        return ()

    def current_token(self) -> bytes:
        raise NotImplementedError

    def read_changes(
        self,
        token: bytes,
        names: list[str],
        route: object,
        limit: int | None = None,
        *,
        budgets: object = None,
        fence: object = None,
    ) -> object:
        raise NotImplementedError

    def fetch(self, name: str, ids: list[object]) -> list[bytes]:
        raise NotImplementedError

    def skipped_collections(self) -> dict[str, str]:
        return {}

    def forget_listing(self) -> None:
        """Nothing to read again: the list is the collection."""


def encode(key: Any, value: Any) -> bytes:
    return bson.encode({"_id": key, "v": value})


def remember(memory: Path, side: str, docs: Docs) -> None:
    with SyncMemory(memory) as mem:
        for key, value in docs.items():
            raw = encode(key, value)
            mem.update_side(Pair.of(SOURCE, TARGET), COLL, side, id_key(raw_id(raw)), digest(raw))


def run_plan(
    memory: Path,
    workspace: Workspace,
    source: MemorySource,
    target: MemorySource,
    flow: str,
    policy: DriftPolicy,
) -> Plan:
    with SyncMemory(memory) as mem:
        sides = Sides(
            source,
            target,
            source.label,
            target.label,  # type: ignore[arg-type]
            Pair.of(source.label, target.label),
            mem,
        )
        return plan_collections(
            sides,
            [COLL],
            flow=flow,
            drift_for=lambda _name: policy,
            workspace=workspace,
            reporter=Silent(),
        )


def plan(
    tmp_path: Path,
    source: Docs,
    target: Docs,
    *,
    base: Docs | None = None,
    policy: DriftPolicy = "abort",
    reverse: bool = False,
) -> CollectionPlan:
    """Plan a sync of `source` onto `target`. `base`: both sides held it after the last sync
    (None: no memory yet). `reverse`: the memory was written by a sync the other way."""
    memory = tmp_path / "memory.sqlite"
    SyncMemory(memory).close()
    if base is not None:
        remember(memory, SOURCE, base)
        remember(memory, TARGET, base)
    names = (TARGET, SOURCE) if reverse else (SOURCE, TARGET)
    workspace = Workspace(tmp_path / "work")
    try:
        result = run_plan(
            memory,
            workspace,
            MemorySource(names[0], source),
            MemorySource(names[1], target),
            "test",
            policy,
        )
    finally:
        workspace.close()
    return result.collections[0]


def counts(p: CollectionPlan) -> dict[str, int]:
    return {
        "insert": p.inserts,
        "replace": p.replaces,
        "delete": p.deletes,
        "drift": p.drifted,
        "keep": p.kept,
        "conflict": p.conflicts,
    }


ZERO = dict.fromkeys(("insert", "replace", "delete", "drift", "keep", "conflict"), 0)
BASE = {1: "a", 2: "b", 3: "c"}


def test_nothing_changed_means_nothing_planned(tmp_path: Path) -> None:
    p = plan(tmp_path, BASE, BASE, base=BASE)
    assert counts(p) == ZERO
    assert not p.writes and p.refusal is None


def test_source_edits_are_planned_without_drift(tmp_path: Path) -> None:
    source = {1: "a2", 3: "c", 4: "d"}  # 1 changed, 2 deleted, 4 new
    p = plan(tmp_path, source, BASE, base=BASE)
    assert counts(p) == ZERO | {"insert": 1, "replace": 1, "delete": 1}
    assert p.refusal is None and p.destructive


@pytest.mark.parametrize(
    ("target", "drift_id"),
    [
        ({1: "a", 2: "edited", 3: "c"}, "2"),  # edited on the target
        ({1: "a", 3: "c"}, "2"),  # deleted on the target
        ({1: "a", 2: "b", 3: "c", 9: "new"}, "9"),  # added on the target
    ],
)
def test_target_edits_are_drift_and_each_policy_does_its_part(
    tmp_path: Path, target: Docs, drift_id: str
) -> None:
    abort = plan(tmp_path / "abort", BASE, target, base=BASE, policy="abort")
    overwrite = plan(tmp_path / "overwrite", BASE, target, base=BASE, policy="overwrite")
    merge = plan(tmp_path / "merge", BASE, target, base=BASE, policy="merge")

    assert abort.drifted == 1 and abort.drift_ids == [drift_id]
    assert abort.refusal is not None and "1 document(s) changed on the target" in abort.refusal
    assert overwrite.refusal is None and overwrite.changes == 1
    assert merge.refusal is None and merge.kept == 1 and merge.changes == 0


def test_merge_applies_source_changes_and_keeps_target_changes(tmp_path: Path) -> None:
    source = {1: "a-src", 2: "b", 3: "c", 4: "new-src"}
    target = {1: "a", 2: "b-tgt", 3: "c", 5: "new-tgt"}
    p = plan(tmp_path, source, target, base=BASE, policy="merge")
    assert counts(p) == ZERO | {"insert": 1, "replace": 1, "drift": 2, "keep": 2}
    assert p.refusal is None


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ({1: "src", 2: "b", 3: "c"}, {1: "tgt", 2: "b", 3: "c"}),  # edited both sides
        ({1: "src", 2: "b", 3: "c"}, {2: "b", 3: "c"}),  # edited here, deleted there
        ({2: "b", 3: "c"}, {1: "tgt", 2: "b", 3: "c"}),  # deleted here, edited there
        ({1: "a", 2: "b", 3: "c", 7: "x"}, {1: "a", 2: "b", 3: "c", 7: "y"}),  # added twice
    ],
)
def test_merge_refuses_documents_changed_on_both_sides(
    tmp_path: Path, source: Docs, target: Docs
) -> None:
    p = plan(tmp_path, source, target, base=BASE, policy="merge")
    assert p.conflicts == 1
    assert p.refusal is not None and "changed on both sides" in p.refusal
    assert len(p.conflict_ids) == 1


def test_the_same_edit_on_both_sides_is_neither_drift_nor_work(tmp_path: Path) -> None:
    """Also what a re-run sees after a sync cut short: the target already holds the source's
    new version, so it differs from memory but not from the source."""
    edited = {1: "a2", 2: "b", 3: "c"}
    p = plan(tmp_path, edited, edited, base=BASE)
    assert counts(p) == ZERO


def test_without_memory_every_difference_on_the_target_is_drift(tmp_path: Path) -> None:
    source = {1: "a", 2: "b", 4: "d"}
    target = {1: "a", 2: "other", 3: "c"}
    p = plan(tmp_path, source, target, base=None)
    assert counts(p) == ZERO | {"insert": 1, "replace": 1, "delete": 1, "drift": 2}
    assert sorted(p.drift_ids) == ["2", "3"]


def test_memory_written_by_a_push_serves_the_pull(tmp_path: Path) -> None:
    """One memory per pair: after a push, a pull needs no extra step."""
    production = {1: "a", 2: "b-edited-in-production", 3: "c"}
    p = plan(tmp_path, production, BASE, base=BASE, reverse=True)
    assert counts(p) == ZERO | {"replace": 1}


def test_the_memory_of_each_side_is_used_for_that_side(tmp_path: Path) -> None:
    """The password hook leaves production different from local; memory holds both."""
    memory = tmp_path / "memory.sqlite"
    SyncMemory(memory).close()
    remember(memory, SOURCE, {1: "local-hash"})
    remember(memory, TARGET, {1: "hook-hash"})
    workspace = Workspace(tmp_path / "work")
    try:
        result = run_plan(
            memory,
            workspace,
            MemorySource(SOURCE, {1: "local-hash"}),
            MemorySource(TARGET, {1: "hook-hash"}),
            "push",
            "abort",
        )
    finally:
        workspace.close()
    assert counts(result.collections[0]) == ZERO | {"replace": 1}


def test_numerically_equal_ids_are_one_document(tmp_path: Path) -> None:
    """_id 7 on one side and NumberLong(7) on the other are the same document to MongoDB:
    a replace, never an insert next to a delete (which would collide on _id)."""
    p = plan(tmp_path, {7: "x"}, {Int64(7): "x"}, base={7: "x"}, policy="overwrite")
    assert counts(p) == ZERO | {"replace": 1, "drift": 1}


def test_drift_ids_are_a_sorted_sample(tmp_path: Path) -> None:
    target = {i: "edited" for i in range(25)}
    source = dict.fromkeys(range(25), "orig")
    p = plan(tmp_path, source, target, base=source)
    assert p.drifted == 25
    assert p.drift_ids == [str(i) for i in range(SAMPLE_IDS)]


def test_plan_totals_add_up_over_collections() -> None:
    a = CollectionPlan("a", "abort", inserts=1, replaces=2, deletes=3, drifted=0)
    b = CollectionPlan("b", "merge", inserts=10, drifted=4, kept=4)
    whole = Plan("to_production", SOURCE, TARGET, [a, b])
    assert whole.totals() == {"inserts": 11, "updates": 2, "deletes": 3, "drift": 4}
    assert whole.writes and whole.destructive and whole.refusals == []
    assert a.summary()["updates"] == 2


# -- indexes and options -----------------------------------------------------------------

ID_INDEX = {"v": 2, "key": {"_id": 1}, "name": "_id_"}


def spec(*indexes: dict[str, Any], **options: Any) -> CollectionSpec:
    return CollectionSpec(COLL, options=options, indexes=(ID_INDEX, *indexes))


def index(name: str, key: dict[str, Any], **options: Any) -> dict[str, Any]:
    return {"v": 2, "key": key, "name": name, **options}


def test_a_missing_collection_is_created_with_options_and_indexes() -> None:
    source = spec(index("email_1", {"email": 1}, unique=True), capped=True, size=4096)
    source = CollectionSpec(COLL, source.options | {"uuid": b"x"}, source.indexes)
    changes = compare_specs(source, None)
    assert changes.create == {"capped": True, "size": 4096}
    assert [i["name"] for i in changes.create_indexes] == ["email_1"]
    assert changes.describe()[0] == "create collection (capped, size)"


def test_equal_specs_need_nothing() -> None:
    same = spec(index("a_1", {"a": 1}), validator={"x": {"$exists": True}})
    assert compare_specs(same, same).empty
    assert compare_specs(None, same).empty  # no source: options are left alone


def test_index_changes() -> None:
    source = spec(
        index("email_1", {"email": 1}, unique=True),
        index("compound", {"a": 1, "b": -1}),
        index("ttl", {"at": 1}, expireAfterSeconds=3600),
    )
    target = spec(
        index("email_1", {"email": 1}),  # not unique yet
        index("compound", {"b": -1, "a": 1}),  # key order differs: a different index
        index("ttl", {"at": 1.0}, expireAfterSeconds=3600.0),  # 1 == 1.0: the same
        index("old", {"old": 1}),  # gone from the source
    )
    changes = compare_specs(source, target)
    assert changes.drop_indexes == ("compound", "email_1", "old")
    assert sorted(i["name"] for i in changes.create_indexes) == ["compound", "email_1"]
    assert not changes.collmod and not changes.immutable


def test_option_changes_mutable_and_immutable() -> None:
    validator = {"$jsonSchema": {"required": ["email"]}}
    assert compare_specs(spec(validator=validator), spec()).collmod == {"validator": validator}
    assert compare_specs(spec(), spec(validator=validator)).collmod == {"validator": {}}
    assert compare_specs(spec(validationLevel="strict"), spec()).empty  # the default
    capped = compare_specs(spec(), spec(capped=True, size=4096))
    assert capped.immutable == ("capped", "size")
    collation = compare_specs(spec(collation={"locale": "fr"}), spec())
    assert collation.immutable == ("collation",)


def test_an_immutable_option_difference_refuses_with_a_clear_message() -> None:
    p = CollectionPlan(COLL, "overwrite", specs=SpecChanges(immutable=("capped", "size")))
    assert p.refusal is not None
    assert "capped, size" in p.refusal
    assert "cannot be changed in place" in p.refusal
