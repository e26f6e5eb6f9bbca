"""The collection policy's keys (`filter`, `deletes`, `mask`, `mask_except`, `masking`):
a good policy becomes typed config, a bad one is refused with exit 2 and exactly the
located lines a user reads, with a "did you mean" where a word is misspelt."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from textwrap import dedent

import pytest
from bson import Int64

from syncd.cli import main
from syncd.config import load_config
from syncd.config.query import FilterInvalid, canonical_filter, query_fields, to_query

Capsys = pytest.CaptureFixture[str]
WriteConfig = Callable[..., Path]
HEAD = """\
version: 1
endpoints:
  local: {uri: "mongodb://localhost:27017/dev"}
  production: {uri_env: MONGODB_URI, protected: true}
flows:
  to_production: {source: local, target: production}
  from_production: {source: production, target: local}
collections:
"""  # the first collection entry is line 9


def validate(path: Path, capsys: Capsys) -> tuple[int, list[str]]:
    code = main(["validate", "-c", str(path)])
    captured = capsys.readouterr()
    return code, captured.err.splitlines()


def test_a_policy_becomes_typed_config(write_config: WriteConfig) -> None:
    path = write_config(
        HEAD
        + dedent("""\
          - name: audit_events
            flows: [from_production]
            filter: {created_at: {$gte: {$date: "2026-01-01T00:00:00Z"}}, n: {$numberLong: "5"}}
            deletes: false
          - name: hr_employees
            flows: [from_production]
            mask: {email: email, emergency_contact.phone: digits, salary: null}
            mask_except: {field: email, values: [admin@valkyria.com]}
        masking:
          key_env: SYNCD_MASK_KEY
        """)
    )

    config = load_config(path)

    audit, hr = config.collections
    assert audit.filter is not None and not audit.deletes
    assert to_query(audit.filter) == {
        "created_at": {"$gte": dt.datetime(2026, 1, 1)},  # noqa: DTZ001 - BSON dates are UTC
        "n": Int64(5),
    }
    assert type(to_query(audit.filter)["n"]) is Int64  # the type written is the type queried
    assert audit.filter_at == f"{path}:11"
    assert hr.deletes and hr.filter is None
    assert hr.mask == (
        ("email", "email"),
        ("emergency_contact.phone", "digits"),
        ("salary", "null"),
    )
    assert hr.mask_except is not None and hr.mask_except.values == ("admin@valkyria.com",)
    assert config.masking is not None and config.masking.key.describe() == "env 'SYNCD_MASK_KEY'"


def test_every_policy_error_is_located_and_says_what_to_do(
    write_config: WriteConfig, capsys: Capsys
) -> None:
    path = write_config(
        HEAD
        + dedent("""\
          - name: users
            mask: {email: emial, first_name: name}
          - name: audit_events
            flows: [from_production]
            filter: {created_at: {$gte: {$date: "last tuesday"}}}
          - name: contracts
            filter: [status, signed]
          - name: hr_employees
            flows: [from_production, to_production]
            mask: {email: email, address: redact, address.city: name}
            filter: {email: {$exists: true}}
          - name: fs.files
            flows: [from_production]
          - name: fs.chunks
            flows: [from_production]
            mask: {data: hash}
            filter: {n: 0}
          - name: legal_contracts
            mask_except: {field: email, values: [a@b.c]}
        """)
    )

    code, lines = validate(path, capsys)

    assert code == 2
    assert lines == [
        f"{path}:10:3: collections[0].mask: a mask needs a masking key: add `masking: "
        "{key_env: SYNCD_MASK_KEY}` (or key_file) at the top level of the config",
        f"{path}:10:3: collections[0].mask: masked data must never reach production: flow "
        "'to_production' writes to protected endpoint 'production'; this collection travels "
        "every flow; add flows: [from_production]",
        f"{path}:10:17: collections[0].mask.email: 'emial' is not one of email, digits, name, "
        "hash, redact, null; did you mean 'email'?",
        f"{path}:13:11: collections[1].filter: not valid Extended JSON: time data 'last tuesday' "
        "does not match format '%Y-%m-%dT%H:%M:%S' (write BSON types as Extended JSON, e.g. "
        '{$date: "2026-01-01T00:00:00Z"} or {$oid: "<24 hex digits>"})',
        f"{path}:15:11: collections[2].filter: expected a mapping (key: value), got a list "
        "(e.g. {created_at: {$gte: {$date: 2026-01-01T00:00:00Z}}})",
        f"{path}:17:28: collections[3].flows[1]: masked data must never reach production: flow "
        "'to_production' writes to protected endpoint 'production'; take it out of this list",
        f"{path}:18:3: collections[3].mask: a mask needs a masking key: add `masking: "
        "{key_env: SYNCD_MASK_KEY}` (or key_file) at the top level of the config",
        f"{path}:18:41: collections[3].mask.address.city: 'address.city' is inside 'address', "
        "which is masked already; keep one",
        f"{path}:19:11: collections[3].filter: the filter uses 'email', which is masked: the "
        "target holds the masked values, so the filter would not find the same documents "
        "there; filter on unmasked fields",
        f"{path}:24:3: collections[5].mask: a mask needs a masking key: add `masking: "
        "{key_env: SYNCD_MASK_KEY}` (or key_file) at the top level of the config",
        f"{path}:24:3: collections[5].mask: fs.chunks holds the bytes of GridFS files, which "
        "cannot be masked; mask fields of fs.files instead (filename, metadata...)",
        f"{path}:25:3: collections[5].filter: fs.chunks cannot be filtered: GridFS files and "
        "chunks always travel together, and a filter would separate them",
        f"{path}:27:3: collections[6].mask_except: only applies with mask",
        "syncd: config has 13 errors",
    ]


def test_the_masking_key_is_never_written_in_the_config(
    write_config: WriteConfig, capsys: Capsys
) -> None:
    path = write_config(
        HEAD
        + dedent("""\
          - name: users
            flows: [from_production]
            mask: {email: email}
        masking:
          key: correct-horse-battery
          key_env: correct horse
        """)
    )

    code, lines = validate(path, capsys)

    assert code == 2
    assert lines == [
        f"{path}:13:3: masking.key: a literal masking key is not allowed in the config; use "
        "key_env or key_file",
        f"{path}:14:12: masking.key_env: the value is not valid: give the NAME of an "
        "environment variable (letters, digits and '_', not starting with a digit), not its "
        "value",
        "syncd: config has 2 errors",
    ]


def test_a_filter_may_not_depend_on_the_time_of_the_sync(
    write_config: WriteConfig, capsys: Capsys
) -> None:
    window = '{$expr: {$gte: ["$at", {$subtract: ["$$NOW", 86400000]}]}}'
    path = write_config(HEAD + f"  - name: audit_events\n    filter: {window}\n")

    code, lines = validate(path, capsys)

    assert code == 2
    assert lines == [
        f"{path}:10:13: collections[0].filter: the filter depends on the time of the sync "
        "($$NOW): a document would leave it without any change, which a sync by change "
        'streams cannot see; use a fixed date ({$date: "2026-01-01T00:00:00Z"}) and move it '
        "forward when needed",
        "syncd: config has 1 error",
    ]


def test_a_filter_over_every_collection_must_leave_gridfs_out(
    write_config: WriteConfig, capsys: Capsys
) -> None:
    path = write_config(HEAD + '  - name: "*"\n    filter: {archived: false}\n')

    code, lines = validate(path, capsys)

    assert code == 2
    assert lines == [
        f"{path}:10:5: collections[0].filter: fs.files and fs.chunks cannot be filtered: GridFS "
        "files and chunks always travel together, and a filter would separate them; list "
        "fs.files and fs.chunks before this entry, without a filter",
        "syncd: config has 1 error",
    ]


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("status", "a filter is a query document"),
        ({"_id": {"$oid": "xyz"}}, "not valid Extended JSON: 'xyz' is not a valid ObjectId"),
        ({"n": {"$numberDecimal": "one"}}, "not valid Extended JSON"),
    ],
)
def test_a_filter_that_does_not_parse_says_why(value: object, why: str) -> None:
    with pytest.raises(FilterInvalid, match=why):
        canonical_filter(value)


def test_the_fields_a_filter_looks_at_are_found_through_operators() -> None:
    query = {
        "$or": [{"a.b": 1}, {"c": {"$elemMatch": {"d": 2}}}],
        "$expr": {"$gt": ["$e", "$$NOW"]},
        "f": {"$not": {"$eq": 3}},
    }

    assert query_fields(query) >= {"a.b", "c", "c.d", "e", "f"}
    assert "NOW" not in query_fields(query) and "$NOW" not in query_fields(query)
