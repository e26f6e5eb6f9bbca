"""`syncd validate`: the example config passes; every broken config is refused with exit 2
and exactly the located messages a user reads (`FILE:LINE:COL: path: message`)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.cli import main
from syncd.config import Config, ConfigInvalid, load_config

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config" / "syncd.example.yaml"

# A valid config; its lines, for reading the expected positions below:
#  1 version: 1
#  2 endpoints:
#  3   local: {uri: "mongodb://localhost:27017/dev"}
#  4   production: {uri_env: MONGODB_URI, protected: true}
#  5 flows:
#  6   to_production: {source: local, target: production}
#  7   from_production: {source: production, target: local}
#  8 collections:
#  9   - name: users
# Text added with `plus()` starts at line 10.
BASE = dedent("""\
    version: 1
    endpoints:
      local: {uri: "mongodb://localhost:27017/dev"}
      production: {uri_env: MONGODB_URI, protected: true}
    flows:
      to_production: {source: local, target: production}
      from_production: {source: production, target: local}
    collections:
      - name: users
    """)

# Appended after BASE: `hooks:` is line 10, `users:` line 16, a key added after it line 17.
HOOK = """\
    hooks:
      reset_passwords:
        collection: users
        match_field: email
        password_field: encrypted_password
        password_env: SYNCD_RESET_PASSWORD
        users: [admin@example.com]
"""


def plus(extra: str) -> str:
    """BASE with `extra` (dedented) appended from line 10."""
    return BASE + dedent(extra)


def variant(old: str, new: str, text: str = BASE) -> str:
    """`text` with the one occurrence of `old` replaced, so each case shows only its change."""
    assert text.count(old) == 1, old
    return text.replace(old, new)


def run_validate(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["validate", "-c", str(path)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def summary(count: int) -> str:
    return f"syncd: config has {count} error{'s' if count != 1 else ''}"


@dataclass(frozen=True)
class Broken:
    text: str
    errors: tuple[str, ...]  # "LINE:COL: path: message", in the order printed


def broken(text: str, *errors: str) -> Broken:
    return Broken(text, errors)


CASES: dict[str, Broken] = {
    # --- wrong types ---
    "keep_last_is_a_string": broken(
        plus("""\
            backups:
              keep_last: "5"
            """),
        "11:14: backups.keep_last: expected a whole number, got '5' (e.g. 5)",
    ),
    "endpoints_is_a_list": broken(
        dedent("""\
            version: 1
            endpoints: [local, production]
            flows:
              to_production: {source: local, target: production}
            collections:
              - name: users
            """),
        "2:12: endpoints: expected a mapping (key: value), got a list",
    ),
    "protected_is_a_string": broken(
        variant("protected: true", 'protected: "yes"'),
        "4:49: endpoints.production.protected: expected true or false, got 'yes' (e.g. true)",
    ),
    "interval_is_a_number": broken(
        plus("""\
            schedules:
              - name: pull
                flow: from_production
                interval: 300
            """),
        "13:15: schedules[0].interval: expected a string, got 300 (e.g. 15m)",
    ),
    "after_is_a_string": broken(
        variant("target: production}", "target: production, after: reset_passwords}", plus(HOOK)),
        "6:61: flows.to_production.after: expected a list, got 'reset_passwords' "
        "(e.g. [reset_passwords])",
    ),
    "collection_is_a_bare_name": broken(
        variant("- name: users", "- users"),
        "9:5: collections[0]: expected a mapping (key: value), got 'users' (e.g. {name: users})",
    ),
    # --- unknown keys, at several depths ---
    "unknown_top_level_key": broken(
        plus("""\
            metric:
              listen: 127.0.0.1:9647
            """),
        "10:1: metric: unknown key 'metric'; did you mean 'metrics'?",
    ),
    "unknown_endpoint_key": broken(
        variant("protected: true}", "protected: true, databse: prod}"),
        "4:55: endpoints.production.databse: unknown key 'databse'; did you mean 'database'?",
    ),
    "unknown_schedule_key": broken(
        plus("""\
            schedules:
              - name: push
                flow: to_production
                on_signal: true
                unatended: true
            """),
        "14:5: schedules[0].unatended: unknown key 'unatended'; did you mean 'unattended'?",
    ),
    "unknown_hook_key": broken(
        plus(HOOK + "        sheme: bcrypt\n"),
        "17:5: hooks.reset_passwords.sheme: unknown key 'sheme'; did you mean 'scheme'?",
    ),
    "unknown_key_without_close_match": broken(
        plus("metrics: {port: 9647}\n"),
        "10:11: metrics.port: unknown key 'port' (allowed: listen)",
    ),
    "unquoted_on_is_a_boolean_key": broken(
        plus("on: true\n"),
        "10:1: true: unknown key true (YAML reads an unquoted on/off/yes/no key as true/false)",
    ),
    # --- typos of enum values ---
    "drift_typo": broken(
        plus("drift: abrot\n"),
        "10:8: drift: 'abrot' is not one of abort, overwrite, merge; did you mean 'abort'?",
    ),
    "before_sync_typo": broken(
        plus("backups: {before_sync: ful}\n"),
        "10:24: backups.before_sync: 'ful' is not one of full, changes, none; did you mean 'full'?",
    ),
    "collection_drift_typo": broken(
        BASE + "    drift: overwrit\n",
        "10:12: collections[0].drift: 'overwrit' is not one of abort, overwrite, merge; "
        "did you mean 'overwrite'?",
    ),
    "compress_typo": broken(
        plus("backups: {compress: zip}\n"),
        "10:21: backups.compress: 'zip' is not one of gzip, none; did you mean 'gzip'?",
    ),
    # --- references to flows, endpoints, hooks that do not exist ---
    "flow_target_unknown_endpoint": broken(
        variant("target: production}", "target: prodution}"),
        "6:42: flows.to_production.target: unknown endpoint 'prodution'; "
        "did you mean 'production'?",
    ),
    "collection_unknown_flow": broken(
        BASE + "    flows: [from_prod]\n",
        "10:13: collections[0].flows[0]: unknown flow 'from_prod'; did you mean 'from_production'?",
    ),
    "schedule_unknown_flow": broken(
        plus("""\
            schedules:
              - name: pull
                flow: from_productoin
                cron: "0 3 * * *"
            """),
        "12:11: schedules[0].flow: unknown flow 'from_productoin'; did you mean 'from_production'?",
    ),
    "schedule_backup_unknown_endpoint": broken(
        plus("""\
            schedules:
              - name: backup
                backup: prodution
                interval: 1h
            """),
        "12:13: schedules[0].backup: unknown endpoint 'prodution'; did you mean 'production'?",
    ),
    "flow_after_hook_without_hooks": broken(
        variant("target: production}", "target: production, after: [reset_passwords]}"),
        "6:62: flows.to_production.after[0]: unknown hook 'reset_passwords' (defined: none)",
    ),
    "flow_after_hook_typo": broken(
        variant("target: production}", "target: production, after: [reset_pasword]}", plus(HOOK)),
        "6:62: flows.to_production.after[0]: unknown hook 'reset_pasword'; "
        "did you mean 'reset_passwords'?",
    ),
    # --- endpoint URIs and inline secrets ---
    "two_uri_sources": broken(
        variant("{uri_env: MONGODB_URI,", "{uri_env: MONGODB_URI, uri_file: /run/uri,"),
        "4:38: endpoints.production.uri_file: give exactly one URI source; "
        "found uri_env and uri_file",
    ),
    "no_uri_source": broken(
        variant("{uri_env: MONGODB_URI,", "{database: prod,"),
        "4:15: endpoints.production: needs one of uri, uri_env, uri_file or uri_command",
    ),
    "inline_password_in_hook": broken(
        plus(variant("password_env: SYNCD_RESET_PASSWORD", "password: Hunter2-Hunter2", HOOK)),
        "12:5: hooks.reset_passwords: needs exactly one of password_env or password_file",
        "15:5: hooks.reset_passwords.password: a literal password is not allowed in the config; "
        "use password_env or password_file",
    ),
    "inline_password_in_endpoint": broken(
        variant("protected: true}", "protected: true, password: Hunter2-Hunter2}"),
        "4:55: endpoints.production.password: a literal password is not allowed in the config; "
        "keep the credentials in the URI and give it with uri_env, uri_file or uri_command",
    ),
    "uri_is_not_mongodb": broken(
        variant("mongodb://localhost", "http://localhost"),
        "3:16: endpoints.local.uri: 'http://localhost:27017/dev' is not valid: "
        "a MongoDB URI starts with mongodb:// or mongodb+srv://",
    ),
    "uri_names_no_database": broken(
        variant("27017/dev", "27017"),
        "3:16: endpoints.local.uri: the uri names no database; add it to the uri "
        "(mongodb://host/NAME) or set database: NAME",
    ),
    "command_timeout_without_command": broken(
        variant("protected: true}", "protected: true, uri_command_timeout: 5}"),
        "4:55: endpoints.production.uri_command_timeout: only applies with uri_command",
    ),
    "database_name_with_dot": broken(
        variant("protected: true}", "protected: true, database: valkyria.prod}"),
        "4:65: endpoints.production.database: 'valkyria.prod' is not valid: "
        'a database name has 1 to 63 characters and none of / \\ . space " $',
    ),
    "database_name_with_slash": broken(
        variant("protected: true}", "protected: true, database: valkyria/prod}"),
        "4:65: endpoints.production.database: 'valkyria/prod' is not valid: "
        'a database name has 1 to 63 characters and none of / \\ . space " $',
    ),
    # --- cron and interval ---
    "cron_four_fields": broken(
        plus('schedules: [{name: pull, flow: from_production, cron: "0 3 * *"}]\n'),
        "10:55: schedules[0].cron: invalid cron expression '0 3 * *': "
        "needs 5 fields (minute hour day-of-month month day-of-week), got 4",
    ),
    "cron_six_fields": broken(
        plus('schedules: [{name: pull, flow: from_production, cron: "0 0 3 * * *"}]\n'),
        "10:55: schedules[0].cron: invalid cron expression '0 0 3 * * *': "
        "needs 5 fields (minute hour day-of-month month day-of-week), got 6",
    ),
    "cron_hour_out_of_range": broken(
        plus('schedules: [{name: pull, flow: from_production, cron: "0 25 * * *"}]\n'),
        "10:55: schedules[0].cron: invalid cron expression '0 25 * * *': "
        "hour field '25': the last value (25) is higher than the maximum value (23)",
    ),
    "cron_minute_out_of_range": broken(
        plus('schedules: [{name: pull, flow: from_production, cron: "61 3 * * *"}]\n'),
        "10:55: schedules[0].cron: invalid cron expression '61 3 * * *': "
        "minute field '61': the last value (61) is higher than the maximum value (59)",
    ),
    "cron_weekday_out_of_range": broken(
        plus('schedules: [{name: pull, flow: from_production, cron: "0 3 * * 8"}]\n'),
        "10:55: schedules[0].cron: invalid cron expression '0 3 * * 8': day-of-week field '8': "
        "'8' is not a weekday (0-7, 0 and 7 = Sunday, or sun-sat)",
    ),
    "interval_unknown_unit": broken(
        plus("schedules: [{name: pull, flow: from_production, interval: 2w}]\n"),
        "10:59: schedules[0].interval: invalid interval '2w': "
        "use a number with a unit s, m, h or d (e.g. 15m)",
    ),
    "interval_zero": broken(
        plus("schedules: [{name: pull, flow: from_production, interval: 0m}]\n"),
        "10:59: schedules[0].interval: invalid interval '0m': must be at least 1s",
    ),
    "interval_negative": broken(
        plus("schedules: [{name: pull, flow: from_production, interval: -5m}]\n"),
        "10:59: schedules[0].interval: invalid interval '-5m': must be positive, e.g. 15m",
    ),
    "interval_without_number": broken(
        plus("schedules: [{name: pull, flow: from_production, interval: m}]\n"),
        "10:59: schedules[0].interval: invalid interval 'm': "
        "use a number with a unit s, m, h or d (e.g. 15m)",
    ),
    "interval_longer_than_a_year": broken(
        plus("schedules: [{name: pull, flow: from_production, interval: 400d}]\n"),
        "10:59: schedules[0].interval: invalid interval '400d': "
        "must be at most 366d; use cron for rarer jobs",
    ),
    # --- metrics listen address ---
    "listen_without_port": broken(
        plus("metrics: {listen: 127.0.0.1}\n"),
        "10:19: metrics.listen: invalid listen address '127.0.0.1': "
        "use host:port, e.g. 127.0.0.1:9647 or [::1]:9647",
    ),
    "listen_port_70000": broken(
        plus('metrics: {listen: "127.0.0.1:70000"}\n'),
        "10:19: metrics.listen: invalid listen address '127.0.0.1:70000': "
        "the port must be a number from 0 to 65535",
    ),
    "listen_ipv6_without_brackets": broken(
        plus('metrics: {listen: "::1:9647"}\n'),
        "10:19: metrics.listen: invalid listen address '::1:9647': "
        "write an IPv6 address in brackets, e.g. [::1]:9647",
    ),
    "listen_bad_host": broken(
        plus('metrics: {listen: "metrics_host!:9647"}\n'),
        "10:19: metrics.listen: invalid listen address 'metrics_host!:9647': "
        "'metrics_host!' is not a valid host name or address",
    ),
    "listen_bad_ipv6": broken(
        plus('metrics: {listen: "[fe80::zz]:9647"}\n'),
        "10:19: metrics.listen: invalid listen address '[fe80::zz]:9647': "
        "'fe80::zz' is not an IPv6 address",
    ),
    # --- YAML syntax and file shape ---
    "yaml_bad_indentation": broken(
        variant("  production: {", " production: {"),
        "4:2: (top): YAML syntax error: expected <block end>, but found '<block mapping start>' "
        "(is this line indented like the lines above it?)",
    ),
    "yaml_unclosed_quote": broken(
        variant('27017/dev"', "27017/dev"),
        "3:16: (top): YAML syntax error: this quoted string is never closed",
    ),
    "yaml_tab_indentation": broken(
        variant("  - name: users", "\t- name: users"),
        "9:1: (top): YAML syntax error: a tab character here; indent YAML with spaces only",
    ),
    "yaml_two_documents": broken(
        BASE + "---\nversion: 1\n",
        "10:1: (top): YAML syntax error: a second YAML document ('---'); a config file holds one",
    ),
    "yaml_unquoted_colon_in_value": broken(
        variant("- name: users", "- name: users: admins"),
        "9:16: (top): YAML syntax error: mapping values are not allowed here "
        "(quote a value that contains ': ', or check the indentation)",
    ),
    "empty_file": broken(
        "", "1:1: (top): config file is empty; start from config/syncd.example.yaml"
    ),
    "only_comments": broken(
        "# syncd config\n# to do\n",
        "1:1: (top): config file is empty; start from config/syncd.example.yaml",
    ),
    "file_is_a_list": broken(
        "- version: 1\n- endpoints: {}\n",
        "1:1: (top): the config must be a mapping of keys (version, endpoints, ...)",
    ),
    # --- duplicates ---
    "duplicate_schedule_names": broken(
        plus("""\
            schedules:
              - {name: pull, flow: from_production, cron: "0 3 * * *"}
              - {name: pull, flow: from_production, interval: 5m}
            """),
        "12:12: schedules[1].name: schedule name 'pull' is already used by schedules[0]",
    ),
    "duplicate_yaml_key": broken(
        variant(
            "collections:",
            "flows:\n  from_production: {source: production, target: local}\ncollections:",
        ),
        "8:1: flows: 'flows' appears twice in the same mapping (first at line 5); keep one",
    ),
    "duplicate_collection_entry": broken(
        BASE + "  - name: users\n    drift: merge\n",
        "10:11: collections[1].name: 'users' is listed twice (first at collections[0]); "
        "the first entry would always win",
    ),
    "duplicate_hook_user": broken(
        plus(variant("[admin@example.com]", "[admin@example.com, admin@example.com]", HOOK)),
        "16:12: hooks.reset_passwords.users: 'admin@example.com' is listed twice; "
        "list each entry once",
    ),
    # --- version and required keys ---
    "version_2": broken(variant("version: 1", "version: 2"), "1:10: version: must be 1, got 2"),
    "version_missing": broken(
        variant("version: 1\n", ""), "1:1: (top): missing required key 'version'"
    ),
    "endpoints_missing": broken(
        "version: 1\nflows: {f: {source: a, target: b}}\ncollections: [{name: users}]\n",
        "1:1: (top): missing required key 'endpoints'",
    ),
    "flows_and_collections_missing": broken(
        "version: 1\nendpoints:\n  a: {uri: 'mongodb://h/a'}\n  b: {uri: 'mongodb://h/b'}\n",
        "1:1: (top): missing required key 'collections'",
        "1:1: (top): missing required key 'flows'",
    ),
    "flow_source_missing": broken(
        variant("{source: production, target: local}", "{target: local}"),
        "7:20: flows.from_production: missing required key 'source'",
    ),
    "single_endpoint": broken(
        dedent("""\
            version: 1
            endpoints:
              production: {uri_env: MONGODB_URI}
            flows:
              pull: {source: production, target: local}
            collections: [{name: users}]
            """),
        "3:3: endpoints: needs at least 2 entries",
        "5:38: flows.pull.target: unknown endpoint 'local' (defined: production)",
    ),
    # --- flows, schedules, collections: rules across keys ---
    "source_is_target": broken(
        variant("target: local}", "target: production}"),
        "7:49: flows.from_production.target: source and target are the same endpoint",
    ),
    "schedule_without_trigger": broken(
        plus("""\
            schedules:
              - name: pull
                flow: from_production
            """),
        "11:5: schedules[0]: schedule 'pull' needs a trigger: cron, interval, on_signal: true "
        "or continuous: true",
    ),
    "schedule_with_cron_and_interval": broken(
        plus("""\
            schedules:
              - name: pull
                flow: from_production
                cron: "0 3 * * *"
                interval: 1h
            """),
        "14:5: schedules[0].interval: give cron or interval, not both",
    ),
    "schedule_with_flow_and_backup": broken(
        plus("""\
            schedules:
              - name: pull
                flow: from_production
                backup: production
                interval: 1h
            """),
        "13:5: schedules[0].backup: give flow or backup, not both (one job per schedule)",
    ),
    "schedule_without_job": broken(
        plus("schedules: [{name: pull, interval: 1h}]\n"),
        "10:13: schedules[0]: schedule 'pull' needs a job: "
        "flow: FLOW, backup: ENDPOINT or verify: FLOW",
    ),
    "schedule_with_flow_and_verify": broken(
        plus("""\
            schedules:
              - name: weekly-verify
                flow: from_production
                verify: from_production
                cron: "0 4 * * 0"
            """),
        "13:5: schedules[0].verify: give flow or verify, not both (one job per schedule)",
    ),
    "verify_of_an_unknown_flow": broken(
        plus("schedules: [{name: weekly-verify, verify: to_prod, interval: 7d}]\n"),
        "10:43: schedules[0].verify: unknown flow 'to_prod'; did you mean 'to_production'?",
    ),
    "collections_on_a_backup_job": broken(
        plus("""\
            schedules:
              - name: backup
                backup: production
                collections: [users]
                interval: 1h
            """),
        "13:5: schedules[0].collections: collections only applies to flow and verify jobs",
    ),
    "scheduled_collection_outside_flow_policy": broken(
        BASE
        + dedent("""\
              - name: audit_events
                flows: [from_production]
            schedules:
              - name: push-audit
                flow: to_production
                collections: [audit_events]
                on_signal: true
            """),
        "15:19: schedules[0].collections[0]: 'audit_events' may not travel flow "
        "'to_production' (its policy allows: from_production)",
    ),
    "scheduled_collection_matching_no_entry": broken(
        plus(
            "schedules: [{name: pull, flow: from_production, collections: [orders], "
            "interval: 5m}]\n"
        ),
        "10:63: schedules[0].collections[0]: no entry of collections matches 'orders', "
        "so it never travels",
    ),
    "gridfs_files_and_chunks_on_different_flows": broken(
        BASE + "  - name: fs.files\n    flows: [from_production]\n  - name: fs.chunks\n",
        "12:5: collections[2].flows: fs.chunks must travel the same flows as fs.files "
        "(GridFS files and chunks always travel together)",
    ),
    # --- names and numbers out of range ---
    "bad_endpoint_name": broken(
        dedent("""\
            version: 1
            endpoints:
              local.dev: {uri: "mongodb://localhost:27017/dev"}
              production: {uri_env: MONGODB_URI}
            flows:
              pull: {source: production, target: local.dev}
            collections: [{name: users}]
            """),
        "3:3: endpoints.local.dev: endpoint name 'local.dev' is not valid: "
        "use letters, digits, '_' and '-', starting with a letter (at most 63 characters)",
    ),
    "bad_flow_name": broken(
        variant("from_production:", "9pull:"),
        "7:3: flows.9pull: flow name '9pull' is not valid: "
        "use letters, digits, '_' and '-', starting with a letter (at most 63 characters)",
    ),
    "bad_schedule_name": broken(
        plus('schedules: [{name: "nightly pull", flow: from_production, cron: "0 3 * * *"}]\n'),
        "10:20: schedules[0].name: 'nightly pull' is not valid: "
        "use letters, digits, '_' and '-', starting with a letter (at most 63 characters)",
    ),
    "bcrypt_cost_too_high": broken(
        plus(HOOK + "        cost: 20\n"),
        "17:11: hooks.reset_passwords.cost: 20 is too large (maximum 16)",
    ),
    "bcrypt_cost_too_low": broken(
        plus(HOOK + "        cost: 2\n"),
        "17:11: hooks.reset_passwords.cost: 2 is too small (minimum 4)",
    ),
    "keep_last_zero": broken(
        plus("backups: {keep_last: 0}\n"),
        "10:22: backups.keep_last: 0 is too small (minimum 1)",
    ),
    "empty_users_list": broken(
        plus(variant("[admin@example.com]", "[]", HOOK)),
        "16:12: hooks.reset_passwords.users: needs at least 1 entry",
    ),
    "both_password_sources": broken(
        plus(HOOK + "        password_file: /run/credentials/syncd.service/reset-password\n"),
        "12:5: hooks.reset_passwords: needs exactly one of password_env or password_file",
    ),
}


def test_example_config_validates(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_validate(EXAMPLE, capsys)
    assert (code, err) == (0, "")
    assert out == f"{EXAMPLE}: OK (2 endpoints, 2 flows, 21 collection rules, 4 schedules)\n"


@pytest.mark.parametrize("case", [pytest.param(case, id=name) for name, case in CASES.items()])
def test_broken_config_is_refused_with_located_messages(
    case: Broken, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(case.text, encoding="utf-8")
    code, out, err = run_validate(path, capsys)
    assert code == 2
    assert out == ""
    expected = [f"{path}:{error}" for error in case.errors]
    assert err.splitlines() == [*expected, summary(len(expected))]


def test_missing_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nowhere.yaml"
    code, out, err = run_validate(path, capsys)
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"{path}:1:1: (top): config file not found; pass -c FILE or set SYNCD_CONFIG",
        summary(1),
    ]


def test_directory_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_validate(tmp_path, capsys)
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"{tmp_path}:1:1: (top): is a directory, not a config file",
        summary(1),
    ]


def test_binary_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"version: 1\n\xff\xfe\n")
    code, _, err = run_validate(path, capsys)
    assert code == 2
    assert err.splitlines() == [
        f"{path}:1:1: (top): not UTF-8 text (invalid start byte)",
        summary(1),
    ]


@pytest.mark.parametrize(
    ("uri", "password"),
    [
        pytest.param(
            "mongodb://admin:S3cr3t-Pa55@db.example.com/prod", "S3cr3t-Pa55", id="userinfo"
        ),
        pytest.param(
            "mongodb+srv://admin:S3cr3t-Pa55@cluster0.example.net/prod?retryWrites=true",
            "S3cr3t-Pa55",
            id="srv",
        ),
        pytest.param(
            "mongodb://db.example.com/prod?authSource=admin&password=S3cr3t-Pa55",
            "S3cr3t-Pa55",
            id="password-parameter",
        ),
        pytest.param("mongodb://admin:pa@ss/w0rd@db.example.com/prod", "ss/w0rd", id="unescaped"),
    ],
)
def test_credentials_in_protected_uri_are_refused_and_never_shown(
    uri: str, password: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(variant("{uri_env: MONGODB_URI,", f"{{uri: '{uri}',"), encoding="utf-8")
    code, out, err = run_validate(path, capsys)
    assert code == 2
    assert err.splitlines() == [
        f"{path}:4:21: endpoints.production.uri: credentials in the uri of a protected "
        "endpoint; move the URI to uri_env, uri_file or uri_command",
        summary(1),
    ]
    assert password not in out + err


def test_credentials_in_unprotected_uri_are_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(variant("localhost:27017", "dev:devpass@localhost:27017"), encoding="utf-8")
    code, out, err = run_validate(path, capsys)
    assert (code, err) == (0, "")
    assert "devpass" not in out


def test_password_pasted_into_password_env_is_not_echoed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    hook = variant("password_env: SYNCD_RESET_PASSWORD", "password_env: 'my real pa$$word'", HOOK)
    path.write_text(plus(hook), encoding="utf-8")
    code, out, err = run_validate(path, capsys)
    assert code == 2
    assert err.splitlines() == [
        f"{path}:15:19: hooks.reset_passwords.password_env: the value is not valid: give the NAME "
        "of an environment variable (letters, digits and '_', not starting with a digit), "
        "not its value",
        summary(1),
    ]
    assert "pa$$word" not in out + err


def test_every_error_of_a_file_is_reported_at_once_sorted_by_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        dedent("""\
            version: 1
            endpoints:
              local: {uri: "mongodb://localhost:27017/dev"}
              production: {uri_env: MONGODB_URI, uri_file: /run/uri, protected: true}
            flows:
              to_production: {source: local, target: prodution}
              from_production: {source: production, target: local}
            collections:
              - name: users
              - name: users
            drift: abrot
            backups: {keep_last: 0}
            schedules:
              - {name: pull, flow: from_production, cron: "0 3 * *"}
              - {name: pull, flow: from_production}
            metrics: {listen: "127.0.0.1:70000", port: 1}
            """),
        encoding="utf-8",
    )
    code, _, err = run_validate(path, capsys)
    assert code == 2
    lines = err.splitlines()
    assert lines == [
        f"{path}:4:38: endpoints.production.uri_file: give exactly one URI source; "
        "found uri_env and uri_file",
        f"{path}:6:42: flows.to_production.target: unknown endpoint 'prodution'; "
        "did you mean 'production'?",
        f"{path}:10:11: collections[1].name: 'users' is listed twice (first at collections[0]); "
        "the first entry would always win",
        f"{path}:11:8: drift: 'abrot' is not one of abort, overwrite, merge; did you mean 'abort'?",
        f"{path}:12:22: backups.keep_last: 0 is too small (minimum 1)",
        f"{path}:14:47: schedules[0].cron: invalid cron expression '0 3 * *': "
        "needs 5 fields (minute hour day-of-month month day-of-week), got 4",
        f"{path}:15:5: schedules[1]: schedule 'pull' needs a trigger: "
        "cron, interval, on_signal: true or continuous: true",
        f"{path}:15:12: schedules[1].name: schedule name 'pull' is already used by schedules[0]",
        f"{path}:16:19: metrics.listen: invalid listen address '127.0.0.1:70000': "
        "the port must be a number from 0 to 65535",
        f"{path}:16:38: metrics.port: unknown key 'port' (allowed: listen)",
        summary(10),
    ]


def test_duplicate_keys_do_not_hide_other_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(plus("drift: merge\ndrift: abrot\n"), encoding="utf-8")
    code, _, err = run_validate(path, capsys)
    assert code == 2
    assert err.splitlines() == [
        f"{path}:11:1: drift: 'drift' appears twice in the same mapping (first at line 10); "
        "keep one",
        f"{path}:11:8: drift: 'abrot' is not one of abort, overwrite, merge; did you mean 'abort'?",
        summary(2),
    ]


def test_load_config_returns_typed_config_of_the_example() -> None:
    config = load_config(EXAMPLE)
    assert set(config.endpoints) == {"local", "production"}
    assert config.endpoints["production"].protected
    assert config.flows["to_production"].after == ("reset_passwords",)
    assert config.backups.keep_last == 5
    assert [s.interval_seconds for s in config.schedules] == [None, None, 3600.0, None]
    assert config.schedules[3].verify == "to_production"
    assert config.allows("from_production", "audit_events")
    assert not config.allows("to_production", "audit_events")


# --- robustness: whatever a user writes, validate answers with located messages ---

_EXAMPLE_DOC: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
_SECRET = "Fuzz-Pa55word"
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=70000),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(
        [
            "local",
            "production",
            "from_production",
            "fs.chunks",
            "users",
            "0 3 * * *",
            "15m",
            "[::1]:9647",
            f"mongodb://admin:{_SECRET}@db.example.com/prod",
        ]
    ),
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["name", "flow", "uri", "users", "x"]), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


_EXAMPLE_PATHS = [path for path in _paths(_EXAMPLE_DOC) if path]


def _replaced(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(doc, dict):
        return {k: (_replaced(v, rest, value) if k == head else v) for k, v in doc.items()}
    return [(_replaced(v, rest, value) if i == head else v) for i, v in enumerate(doc)]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(_EXAMPLE_PATHS), value=_values)
def test_any_mutation_of_the_example_is_accepted_or_located(path: Any, value: Any) -> None:
    text = yaml.safe_dump(_replaced(_EXAMPLE_DOC, path, value), sort_keys=False)
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "syncd.yaml"
        file.write_text(text, encoding="utf-8")
        try:
            assert isinstance(load_config(file), Config)
        except ConfigInvalid as exc:
            assert exc.issues
            for issue in exc.issues:
                assert issue.line >= 1 and issue.column >= 1
                assert str(issue).startswith(f"{file}:{issue.line}:{issue.column}: ")
            assert _SECRET not in str(exc)
