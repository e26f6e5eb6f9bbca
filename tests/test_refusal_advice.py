"""The advice after a drift refusal points the refused flow's way back: a pull refused for
local edits suggests pushing them first, by the push flow's configured name; a push refused
for production edits suggests pulling them first; without such a flow, only --drift merge
or overwrite. Every refusal ends with the `syncd diff` command that shows its documents."""

from __future__ import annotations

import pytest

from tests.engine_kit import Pair, syncd

Capsys = pytest.CaptureFixture[str]


@pytest.fixture
def in_step(pair: Pair, capsys: Capsys) -> Pair:
    pair.configure(hook=False)
    pair.production.contracts.insert_many([{"_id": i, "status": "draft"} for i in range(5)])
    pair.production.audit_events.insert_many([{"_id": i, "what": "login"} for i in range(3)])
    pulled = syncd(capsys, pair.config, "sync", "from_production", "--yes")
    assert pulled.code == 0, pulled.err
    return pair


def advice(err: str) -> list[str]:
    lines = err.rstrip().splitlines()
    return lines[lines.index("Nothing was written.") :]


def test_a_pull_refused_for_local_edits_suggests_pushing_them_first(
    in_step: Pair, capsys: Capsys
) -> None:
    pair = in_step
    pair.local.contracts.update_one({"_id": 2}, {"$set": {"status": "edited locally"}})

    result = syncd(capsys, pair.config, "sync", "from_production", "--yes")

    assert result.code == 3
    assert advice(result.err) == [
        "Nothing was written.",
        "To keep local's edits, bring them to production first: "
        "`syncd sync to_production -C contracts` (add --drift merge if production has edits "
        "of its own there), then run `syncd sync from_production` again.",
        "Or rerun with --drift merge to keep local's edits and apply the rest, or "
        "--drift overwrite to replace them with production's (after a backup).",
        "See what changed: syncd diff from_production -C contracts",
    ]
    assert "Workflow C" not in result.err


def test_a_push_refused_for_production_edits_suggests_pulling_them_first(
    in_step: Pair, capsys: Capsys
) -> None:
    pair = in_step
    pair.production.contracts.update_one({"_id": 2}, {"$set": {"status": "signed"}})

    result = syncd(capsys, pair.config, "sync", "to_production", "--yes")

    assert result.code == 3
    assert advice(result.err)[1].startswith(
        "To keep production's edits, bring them to local first: "
        "`syncd sync from_production -C contracts`"
    )
    assert advice(result.err)[-1] == "See what changed: syncd diff to_production -C contracts"


def test_a_collection_no_flow_brings_back_gets_merge_or_overwrite_only(
    in_step: Pair, capsys: Capsys
) -> None:
    """audit_events travels from_production only: local's edits cannot be pushed."""
    pair = in_step
    pair.local.audit_events.delete_one({"_id": 1})
    pair.local.contracts.update_one({"_id": 2}, {"$set": {"status": "edited locally"}})

    result = syncd(capsys, pair.config, "sync", "from_production", "--yes")

    assert result.code == 3
    lines = advice(result.err)
    assert "`syncd sync to_production -C contracts`" in lines[1]
    assert lines[2] == "No flow brings audit_events from local to production."
    assert lines[-1] == "See what changed: syncd diff from_production -C audit_events -C contracts"


def test_without_a_flow_back_only_merge_or_overwrite_is_advised(
    in_step: Pair, capsys: Capsys
) -> None:
    pair = in_step
    text = pair.config.read_text().replace(
        "  to_production: {source: local, target: production}\n", ""
    )
    pair.config.write_text(text)
    pair.local.contracts.update_one({"_id": 2}, {"$set": {"status": "edited locally"}})

    result = syncd(capsys, pair.config, "sync", "from_production", "--yes")

    assert result.code == 3
    assert advice(result.err) == [
        "Nothing was written.",
        "No flow goes from local to production.",
        "Or rerun with --drift merge to keep local's edits and apply the rest, or "
        "--drift overwrite to replace them with production's (after a backup).",
        "See what changed: syncd diff from_production -C contracts",
    ]
