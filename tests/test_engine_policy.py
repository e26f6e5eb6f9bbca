"""`filter` and `deletes: false` (SPEC §4 "Collection policy") on real servers: both sides
are compared through the filter (target documents that do not match are left alone, a
source document that stops matching is gone from the source), in full reads and in change
stream mode alike; the source's deletions are never applied and never count as drift.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import pytest

from tests.engine_kit import Outcome, Pair, backup_contents, collection_state, syncd

Capsys = pytest.CaptureFixture[str]
PULL = ("sync", "from_production")
PUSH = ("sync", "to_production", "--yes")
OLD = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
NEW = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
FILTERS = {  # 2026-01-01T00:00:00Z, as an operator may write it
    "relaxed": '{created_at: {$gte: {$date: "2026-01-01T00:00:00Z"}}}',
    "canonical": '{created_at: {$gte: {$date: {$numberLong: "1767225600000"}}}}',
    "yaml timestamp": "{created_at: {$gte: 2026-01-01}}",
}


def rules(audit_filter: str = FILTERS["relaxed"]) -> str:
    return f"""
- name: audit_events
  flows: [from_production]
  filter: {audit_filter}
- name: contracts
  deletes: false
"""


def event(i: int, when: dt.datetime, **extra: Any) -> dict[str, Any]:
    return {"_id": i, "created_at": when, "action": f"login {i}", **extra}


def run(capsys: Capsys, pair: Pair, *args: str) -> Outcome:
    result = syncd(capsys, pair.config, *args)
    assert result.code == 0, result.text
    return result


def plan_json(capsys: Capsys, pair: Pair, *args: str) -> dict[str, dict[str, Any]]:
    result = run(capsys, pair, *PULL, *args, "--dry-run", "--json")
    return {c["collection"]: c for c in json.loads(result.out)["collections"]}


def docs(coll: Any) -> dict[Any, dict[str, Any]]:
    return {d["_id"]: d for d in coll.find()}


def counts(c: dict[str, Any]) -> tuple[int, ...]:
    keys = ("source_docs", "target_docs", "inserts", "updates", "deletes", "drift", "kept_deletes")
    return tuple(c[k] for k in keys)


@pytest.fixture
def audit(pair: Pair) -> Pair:
    """Production: events 0-9 from 2025 (outside the filter), 10-19 from 2026. Local: its
    own old event 100, and its own version of event 5 (neither matches)."""
    pair.configure(collections=rules(), hook=False)
    pair.production.audit_events.insert_many(
        [event(i, OLD) for i in range(10)] + [event(i, NEW) for i in range(10, 20)]
    )
    pair.local.audit_events.insert_many([event(100, OLD), event(5, OLD, action="local")])
    return pair


@pytest.mark.parametrize("spelling", sorted(FILTERS))
def test_a_filter_pulls_the_matching_documents_and_leaves_the_others_alone(
    audit: Pair, capsys: Capsys, spelling: str
) -> None:
    pair = audit
    pair.configure(collections=rules(FILTERS[spelling]), hook=False)

    plan = plan_json(capsys, pair, "-C", "audit_events")
    run(capsys, pair, *PULL, "-C", "audit_events")

    assert counts(plan["audit_events"]) == (10, 0, 10, 0, 0, 0, 0)
    local, production = docs(pair.local.audit_events), docs(pair.production.audit_events)
    assert sorted(local) == [5, *range(10, 20), 100]
    assert all(local[i] == production[i] for i in range(10, 20))
    assert local[5]["action"] == "local"  # not matching: left alone, not drift


def test_a_filter_holds_in_change_stream_mode_and_a_document_leaving_it_is_gone(
    audit: Pair, capsys: Capsys
) -> None:
    pair = audit
    run(capsys, pair, *PULL, "-C", "audit_events")
    production = pair.production.audit_events
    production.update_one({"_id": 10}, {"$set": {"created_at": OLD}})  # leaves the filter
    production.update_one({"_id": 3}, {"$set": {"created_at": NEW}})  # enters it
    production.insert_many([event(20, NEW), event(21, OLD)])
    pair.local.audit_events.update_one({"_id": 100}, {"$set": {"action": "edited here"}})

    by_changes = plan_json(capsys, pair, "-C", "audit_events")["audit_events"]
    by_full_read = plan_json(capsys, pair, "-C", "audit_events", "--full")["audit_events"]
    run(capsys, pair, *PULL, "-C", "audit_events")

    assert by_changes["mode"] == "changes"
    assert counts(by_changes) == counts(by_full_read) == (11, 10, 2, 0, 1, 0, 0)
    local = docs(pair.local.audit_events)
    assert sorted(local) == [3, 5, *range(11, 21), 100]
    assert local[3] == docs(production)[3]
    assert local[100]["action"] == "edited here"
    (backup,) = backup_contents(pair).values()  # taken before the delete: the whole collection
    assert len(backup["audit_events"]) == 12  # 10 matching, and 5 and 100, which do not


def test_a_filtered_first_copy_copies_only_the_matching_documents(
    audit: Pair, capsys: Capsys
) -> None:
    pair = audit
    pair.local.audit_events.drop()

    result = run(capsys, pair, *PULL, "-C", "audit_events")
    again = run(capsys, pair, *PULL, "-C", "audit_events")

    assert re.search(r"^audit_events +10 +0 +10 .* into an empty target", result.out, re.M)
    assert "1/1 collections verified" in result.out, result.out
    assert sorted(docs(pair.local.audit_events)) == list(range(10, 20))
    assert "nothing to do" in again.out


def test_a_target_document_that_comes_to_match_the_filter_is_drift(
    audit: Pair, capsys: Capsys
) -> None:
    pair = audit
    run(capsys, pair, *PULL, "-C", "audit_events")
    pair.local.audit_events.update_one({"_id": 100}, {"$set": {"created_at": NEW}})

    refused = syncd(capsys, pair.config, *PULL, "-C", "audit_events")

    assert refused.code == 3, refused.text
    assert "audit_events: 1 document(s) changed on the target" in refused.err


def test_a_filter_the_server_rejects_fails_naming_the_collection_and_its_line(
    audit: Pair, capsys: Capsys
) -> None:
    pair = audit
    pair.configure(collections=rules("{created_at: {$after: 2026}}"), hook=False)
    line = next(
        n for n, text in enumerate(pair.config.read_text().splitlines(), 1) if "filter:" in text
    )
    before = collection_state(pair.local.audit_events)

    failed = syncd(capsys, pair.config, *PULL, "-C", "audit_events")

    assert failed.code == 1, failed.text
    assert re.search(
        rf"audit_events: '(production|local)' .* rejected the filter at "
        rf"{re.escape(str(pair.config))}:{line} \(.*\$after.*\); fix the collection's `filter:`",
        failed.err,
    ), failed.err
    assert collection_state(pair.local.audit_events) == before


def test_a_pull_never_applies_the_sources_deletions(pair: Pair, capsys: Capsys) -> None:
    pair.configure(collections=rules(), hook=False)
    pair.production.contracts.insert_many([{"_id": i, "n": i} for i in range(10)])
    run(capsys, pair, *PULL, "-C", "contracts")
    pair.production.contracts.delete_many({"_id": {"$in": [2, 3]}})
    pair.production.contracts.update_one({"_id": 4}, {"$set": {"n": 40}})
    pair.local.contracts.insert_one({"_id": 50, "n": 50})  # only the target has it

    plan = plan_json(capsys, pair, "-C", "contracts")["contracts"]
    shown = run(capsys, pair, *PULL, "-C", "contracts", "--dry-run")
    status = json.loads(run(capsys, pair, "status", "from_production", "--json").out)
    run(capsys, pair, *PULL, "-C", "contracts")
    again = run(capsys, pair, *PULL, "-C", "contracts")
    after = [plan_json(capsys, pair, "-C", "contracts", *x)["contracts"] for x in ((), ("--full",))]

    assert (plan["mode"], counts(plan)) == ("changes", (8, 11, 0, 1, 0, 0, 3))
    assert re.search(r"^contracts +8 +11 +0 +1 +0 \(3 kept\) +- ", shown.out, re.M), shown.out
    listed = {c["collection"]: c for c in status["flows"]["from_production"]["collections"]}
    assert listed["contracts"]["kept_deletes"] == 3
    assert sorted(docs(pair.local.contracts)) == [*range(10), 50]
    assert docs(pair.local.contracts)[4]["n"] == 40
    assert "nothing to do" in again.out
    assert [counts(c) for c in after] == [(8, 11, 0, 0, 0, 0, 0)] * 2
    assert after[0]["mode"] == "changes"


def test_a_push_never_applies_the_sources_deletions(pair: Pair, capsys: Capsys) -> None:
    pair.configure(collections=rules(), hook=False)
    pair.local.contracts.insert_many([{"_id": i, "n": i} for i in range(10)])
    run(capsys, pair, *PUSH, "-C", "contracts")
    pair.local.contracts.delete_one({"_id": 4})

    pushed = run(capsys, pair, *PUSH, "-C", "contracts")
    pulled = run(capsys, pair, *PULL, "-C", "contracts")

    assert "nothing to do" in pushed.out, pushed.out
    assert sorted(docs(pair.production.contracts)) == list(range(10))
    # Production still holds it, so a pull brings it back: the deletion never travelled.
    assert "1 to insert" in pulled.out and "0 drifted" in pulled.out, pulled.out
    assert collection_state(pair.local.contracts) == collection_state(pair.production.contracts)


def test_kept_documents_stay_counted_when_later_syncs_write(pair: Pair, capsys: Capsys) -> None:
    """A sync that writes verifies the target's count: documents kept by earlier syncs
    (which a sync by change streams does not look at) are part of it."""
    pair.configure(collections=rules(), hook=False)
    pair.production.contracts.insert_many([{"_id": i, "n": i} for i in range(10)])
    run(capsys, pair, *PULL, "-C", "contracts")
    pair.production.contracts.delete_many({"_id": {"$in": [2, 3]}})
    run(capsys, pair, *PULL, "-C", "contracts")
    pair.production.contracts.update_one({"_id": 4}, {"$set": {"n": 40}})
    pair.production.contracts.insert_one({"_id": 11, "n": 11})
    pair.production.contracts.delete_one({"_id": 5})

    for args in ((), ("--full",)):
        result = run(capsys, pair, *PULL, "-C", "contracts", *args)
        assert "1/1 collections verified" in result.out, result.out
        pair.production.contracts.update_one({"_id": 4}, {"$inc": {"n": 1}})

    assert sorted(docs(pair.local.contracts)) == [*range(10), 11]


def test_verify_compares_through_the_filter(audit: Pair, capsys: Capsys) -> None:
    pair = audit
    run(capsys, pair, *PULL, "-C", "audit_events")

    result = syncd(capsys, pair.config, "verify", "from_production", "-C", "audit_events")

    assert result.code == 0, result.text  # local's own events 5 and 100 are not "extra"
