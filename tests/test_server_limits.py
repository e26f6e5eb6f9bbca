"""Correct on real MongoDB, not only on SecantusDB (issue 22): counts, time limits, versions.

Each is shown by the commands syncd sends (pymongo's command monitoring, see
test_privileges.py) or by the unit that builds them, since SecantusDB answers alike.
"""

from __future__ import annotations

from typing import Any

import pytest

from syncd.config.model import Endpoint, SecretRef
from syncd.endpoints import open_endpoint
from syncd.mongo import server
from syncd.mongo.source import CollectionSpec, MongoSource
from syncd.mongo.specs import compare_specs, for_version
from syncd.mongo.timeouts import LIMITS, max_time, max_time_ms
from tests.engine_kit import Pair, syncd
from tests.test_privileges import RECORDER

Capsys = pytest.CaptureFixture[str]


def _names(sent: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(name, command) for _, _, name, command in sent]


# -- 4. counts: exact before failing -----------------------------------------------------------


def test_an_estimate_that_differs_from_the_expected_count_is_counted_exactly(pair: Pair) -> None:
    pair.production.items.insert_many([{"_id": i} for i in range(7)])
    source = MongoSource(pair.production, "'production'")

    with RECORDER.recording() as agreeing:
        assert source.record_count("items", expected=7) == 7
    with RECORDER.recording() as differing:
        assert source.record_count("items", expected=9) == 7

    sent = [name for name, _ in _names(agreeing) if name in ("count", "aggregate")]
    assert sent == ["count"]  # the estimate only: `count` without a query
    counts = [(n, c) for n, c in _names(differing) if n in ("count", "aggregate")]
    assert [n for n, _ in counts] == ["count", "aggregate"]
    assert "query" not in counts[0][1]
    assert {"$match": {}} in counts[1][1]["pipeline"]  # count_documents: an exact count
    assert counts[1][1]["maxTimeMS"] == max_time_ms("count")


# -- 6. time limits: each kind its own, none for index builds -----------------------------------


def test_each_kind_of_operation_has_its_own_limit_and_index_builds_none() -> None:
    assert LIMITS["index"] is None and max_time("index") == {}
    assert LIMITS["scan"] is None  # a find's maxTimeMS would hold for the whole scan
    assert max_time("count") == {"maxTimeMS": 3_600_000}
    assert max_time_ms("read") == 300_000
    assert (LIMITS["count"] or 0) > (LIMITS["read"] or 0) > (LIMITS["metadata"] or 0) > 0


def test_index_builds_carry_no_time_limit_and_counts_do(
    pair: Pair, production_uri: str, capsys: Capsys
) -> None:
    pair.local.items.insert_many([{"_id": i, "k": i} for i in range(5)])
    pair.local.items.create_index("k")
    pair.configure(hook=False)

    with RECORDER.recording() as sent:
        assert syncd(capsys, pair.config, "sync", "to_production", "--yes").code == 0

    commands = _names(sent)
    builds = [c for name, c in commands if name == "createIndexes"]
    # syncd's listings of the collections and their options, one per side (pymongo's own
    # check before `create`, names only, is not syncd's)
    listings = [c for name, c in commands if name == "listCollections" and not c.get("nameOnly")]
    assert builds and all("maxTimeMS" not in c for c in builds)
    assert listings and all(c["maxTimeMS"] == max_time_ms("metadata") for c in listings)
    # Nor does a socket timeout of syncd's cut a build: the client has none.
    endpoint = Endpoint(name="production", uri=SecretRef("literal", production_uri))
    connected = open_endpoint(endpoint)
    try:
        assert connected.client.options.pool_options.socket_timeout is None
    finally:
        connected.close()


# -- 9. versions: what a target's version does not know is left out ----------------------------


CLUSTERED = CollectionSpec(
    "events",
    options={
        "clusteredIndex": {"key": {"_id": 1}, "unique": True},
        "changeStreamPreAndPostImages": {"enabled": True},
        "validator": {"a": {"$exists": True}},
    },
    indexes=(
        {"v": 2, "key": {"_id": 1}, "name": "_id_"},
        {"v": 2, "key": {"pos": "geoHaystack", "type": 1}, "name": "pos_haystack", "bucketSize": 1},
        {"v": 2, "key": {"code": 1}, "name": "code_1", "unique": True, "prepareUnique": True},
    ),
)


def test_a_target_before_6_0_gets_the_collection_without_what_it_does_not_know() -> None:
    changes = compare_specs(CLUSTERED, None, (5, 0, 9))

    assert changes.create == {"validator": {"a": {"$exists": True}}}
    assert {spec["name"] for spec in changes.create_indexes} == {"code_1"}
    assert "prepareUnique" not in changes.create_indexes[0]
    assert changes.left_out == (
        "option clusteredIndex (MongoDB 5.3+)",
        "option changeStreamPreAndPostImages (MongoDB 6.0+)",
        "index pos_haystack (geoHaystack, before MongoDB 5.0)",
        "index field prepareUnique of code_1 (MongoDB 6.0+)",
    )
    assert "leave out option clusteredIndex (MongoDB 5.3+)" in changes.describe()


def test_geohaystack_travels_to_4_4_and_everything_to_8_0() -> None:
    old, left_out = for_version(CLUSTERED, (4, 4, 2))
    assert "pos_haystack" in {spec["name"] for spec in old.indexes}
    assert "option clusteredIndex (MongoDB 5.3+)" in left_out

    new, left_out = for_version(CLUSTERED, (8, 0, 4))
    assert left_out == ("index pos_haystack (geoHaystack, before MongoDB 5.0)",)
    assert new.options == CLUSTERED.options
    # An unknown version (a backup) keeps everything.
    assert for_version(CLUSTERED, ()) == (CLUSTERED, ())


def test_an_existing_target_is_not_asked_to_change_what_it_cannot_hold() -> None:
    target = CollectionSpec(
        "events",
        options={"validator": {"a": {"$exists": True}}},
        indexes=(
            {"v": 2, "key": {"_id": 1}, "name": "_id_"},
            {"v": 2, "key": {"code": 1}, "name": "code_1", "unique": True},
        ),
    )
    changes = compare_specs(CLUSTERED, target, (5, 0, 0))
    assert not changes.collmod and not changes.immutable
    assert not changes.create_indexes and not changes.drop_indexes
    assert changes.left_out


def test_the_server_version_and_hello_come_from_the_server(pair: Pair) -> None:
    version = server.version(pair.production.client)
    assert len(version) >= 2 and all(isinstance(part, int) for part in version)
    assert "localTime" in server.hello(pair.production.client)
