"""Rules that span keys, which JSON Schema cannot express (borgmatic's logical validation).

Runs on whatever parts of the document are well-formed, so one run reports every problem.
"""

from __future__ import annotations

import difflib
import fnmatch
import ipaddress
import re
from collections.abc import Iterable
from typing import Any

from syncd.config.cron import crontab_trigger
from syncd.config.load import ConfigIssue, LoadedYaml
from syncd.config.model import own_collection
from syncd.config.policy_rules import policy_issues
from syncd.config.secrets import uri_database, uri_has_credentials

URI_KEYS = ("uri", "uri_env", "uri_file", "uri_command")
JOB_KEYS = ("flow", "backup", "verify")  # what a schedule runs: exactly one
INTERVAL = re.compile(r"^\s*(?P<amount>\d+(?:\.\d+)?)\s*(?P<unit>[smhd])\s*$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_INTERVAL_SECONDS = 366 * 86400
HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")


def parse_interval(text: str) -> float | None:
    """Seconds of an interval like `15m`, or None when it is not one."""
    match = INTERVAL.match(text)
    if not match:
        return None
    return float(match["amount"]) * UNIT_SECONDS[match["unit"]]


def logical_issues(loaded: LoadedYaml) -> list[ConfigIssue]:
    doc = loaded.data if isinstance(loaded.data, dict) else {}
    # None: the section is missing or malformed (already reported), so references into it
    # are not checked; that would only repeat the same problem.
    endpoints = _catalog(doc.get("endpoints"))
    flows = _catalog(doc.get("flows"))
    hooks = _catalog(doc.get("hooks", {}))
    collections = _sequence(doc.get("collections"))
    issues: list[ConfigIssue] = []
    issues += _endpoint_issues(loaded, endpoints or {})
    issues += _flow_issues(loaded, flows or {}, endpoints, hooks)
    issues += _collection_issues(loaded, collections, flows)
    issues += policy_issues(loaded, collections, flows, endpoints, doc.get("masking"))
    issues += _schedule_issues(loaded, _sequence(doc.get("schedules")), doc, flows, endpoints)
    issues += _metrics_issues(loaded, _mapping(doc.get("metrics")))
    return issues


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _catalog(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _sequence(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _is_unknown(ref: Any, known: dict[str, Any] | None) -> bool:
    return isinstance(ref, str) and known is not None and ref not in known


def _unknown(kind: str, name: Any, known: Iterable[str]) -> str:
    known = sorted(known)
    message = f"unknown {kind} '{name}'"
    close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.6)
    if close:
        return f"{message}; did you mean '{close[0]}'?"
    return f"{message} (defined: {', '.join(known) or 'none'})"


def _endpoint_issues(loaded: LoadedYaml, endpoints: dict[str, Any]) -> list[ConfigIssue]:
    issues = []
    for name, endpoint in endpoints.items():
        if not isinstance(endpoint, dict):
            continue
        path: list[str | int] = ["endpoints", name]
        sources = [key for key in URI_KEYS if key in endpoint]
        if not sources:
            issues.append(loaded.issue(path, "needs one of uri, uri_env, uri_file or uri_command"))
        elif len(sources) > 1:
            issues.append(
                loaded.issue(
                    [*path, sources[1]],
                    f"give exactly one URI source; found {' and '.join(sources)}",
                    key=True,
                )
            )
        uri = endpoint.get("uri")
        if isinstance(uri, str) and endpoint.get("protected") is True and uri_has_credentials(uri):
            issues.append(
                loaded.issue(
                    [*path, "uri"],
                    "credentials in the uri of a protected endpoint; move the URI to "
                    "uri_env, uri_file or uri_command",
                )
            )
        if isinstance(uri, str) and uri_database(uri) is None and "database" not in endpoint:
            issues.append(
                loaded.issue(
                    [*path, "uri"],
                    "the uri names no database; add it to the uri (mongodb://host/NAME) "
                    "or set database: NAME",
                )
            )
        if "uri_command_timeout" in endpoint and "uri_command" not in endpoint:
            issues.append(
                loaded.issue(
                    [*path, "uri_command_timeout"], "only applies with uri_command", key=True
                )
            )
    return issues


def _flow_issues(
    loaded: LoadedYaml,
    flows: dict[str, Any],
    endpoints: dict[str, Any] | None,
    hooks: dict[str, Any] | None,
) -> list[ConfigIssue]:
    issues = []
    for name, flow in flows.items():
        if not isinstance(flow, dict):
            continue
        for side in ("source", "target"):
            ref = flow.get(side)
            if _is_unknown(ref, endpoints):
                issues.append(
                    loaded.issue(["flows", name, side], _unknown("endpoint", ref, endpoints or {}))
                )
        if flow.get("source") is not None and flow.get("source") == flow.get("target"):
            issues.append(
                loaded.issue(["flows", name, "target"], "source and target are the same endpoint")
            )
        for index, hook in enumerate(_sequence(flow.get("after"))):
            if _is_unknown(hook, hooks):
                issues.append(
                    loaded.issue(
                        ["flows", name, "after", index], _unknown("hook", hook, hooks or {})
                    )
                )
    return issues


def _collection_issues(
    loaded: LoadedYaml, collections: list[Any], flows: dict[str, Any] | None
) -> list[ConfigIssue]:
    issues = []
    seen: dict[str, int] = {}
    flows_of: dict[str, Any] = {}
    for index, entry in enumerate(collections):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            continue
        name = entry["name"]
        if own_collection(name):
            issues.append(
                loaded.issue(
                    ["collections", index, "name"],
                    f"'{name}': collections named _syncd* are syncd's own (the write lease) "
                    "and never travel; remove this entry",
                )
            )
        if name in seen:
            issues.append(
                loaded.issue(
                    ["collections", index, "name"],
                    f"'{name}' is listed twice (first at collections[{seen[name]}]); "
                    "the first entry would always win",
                )
            )
        seen.setdefault(name, index)
        flows_of.setdefault(name, entry.get("flows"))
        for flow_index, flow in enumerate(_sequence(entry.get("flows"))):
            if _is_unknown(flow, flows):
                issues.append(
                    loaded.issue(
                        ["collections", index, "flows", flow_index],
                        _unknown("flow", flow, flows or {}),
                    )
                )
    files, chunks = "fs.files", "fs.chunks"
    if files in flows_of and chunks in flows_of and flows_of[files] != flows_of[chunks]:
        issues.append(
            loaded.issue(
                ["collections", seen[chunks], "flows"],
                f"{chunks} must travel the same flows as {files} (GridFS files and chunks "
                "always travel together)",
            )
        )
    return issues


def _schedule_issues(
    loaded: LoadedYaml,
    schedules: list[Any],
    doc: dict[str, Any],
    flows: dict[str, Any] | None,
    endpoints: dict[str, Any] | None,
) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    names: dict[str, int] = {}
    for index, job in enumerate(schedules):
        if not isinstance(job, dict):
            continue
        path: list[str | int] = ["schedules", index]
        name = job.get("name")
        if isinstance(name, str):
            if name in names:
                issues.append(
                    loaded.issue(
                        [*path, "name"],
                        f"schedule name '{name}' is already used by schedules[{names[name]}]",
                    )
                )
            names.setdefault(name, index)
        issues += _schedule_target_issues(loaded, path, job, flows, endpoints)
        issues += _schedule_collection_issues(loaded, path, job, doc)
        issues += _trigger_issues(loaded, path, job)
    return issues


def _schedule_named(job: dict[str, Any]) -> str:
    """How a message names a schedule: by its `name` where it has a usable one."""
    name = job.get("name")
    return f"schedule '{name}'" if isinstance(name, str) and name.strip() else "a schedule"


def _schedule_target_issues(
    loaded: LoadedYaml,
    path: list[str | int],
    job: dict[str, Any],
    flows: dict[str, Any] | None,
    endpoints: dict[str, Any] | None,
) -> list[ConfigIssue]:
    issues = []
    kinds = [key for key in JOB_KEYS if key in job]
    if not kinds:
        issues.append(
            loaded.issue(
                path,
                f"{_schedule_named(job)} needs a job: flow: FLOW, backup: ENDPOINT or verify: FLOW",
            )
        )
    elif len(kinds) > 1:
        issues.append(
            loaded.issue(
                [*path, kinds[1]],
                f"give {' or '.join(kinds)}, not both (one job per schedule)",
                key=True,
            )
        )
    for key in ("flow", "verify"):
        flow = job.get(key)
        if _is_unknown(flow, flows):
            issues.append(loaded.issue([*path, key], _unknown("flow", flow, flows or {})))
    backup = job.get("backup")
    if _is_unknown(backup, endpoints):
        issues.append(
            loaded.issue([*path, "backup"], _unknown("endpoint", backup, endpoints or {}))
        )
    if "backup" in job and "collections" in job:
        issues.append(
            loaded.issue(
                [*path, "collections"], "collections only applies to flow and verify jobs", key=True
            )
        )
    return issues


def _trigger_issues(
    loaded: LoadedYaml, path: list[str | int], job: dict[str, Any]
) -> list[ConfigIssue]:
    issues = []
    cron, interval = job.get("cron"), job.get("interval")
    continuous = job.get("continuous") is True
    if cron is None and interval is None and job.get("on_signal") is not True and not continuous:
        issues.append(
            loaded.issue(
                path,
                f"{_schedule_named(job)} needs a trigger: cron, interval, on_signal: true "
                "or continuous: true",
            )
        )
    if continuous and (cron is not None or interval is not None or job.get("on_signal") is True):
        issues.append(
            loaded.issue(
                [*path, "continuous"],
                "continuous is a trigger of its own: drop cron, interval and on_signal here",
                key=True,
            )
        )
    if continuous and "flow" not in job:
        issues.append(
            loaded.issue(
                [*path, "continuous"], "continuous only applies to flow jobs (flow: FLOW)", key=True
            )
        )
    if cron is not None and interval is not None:
        issues.append(
            loaded.issue([*path, "interval"], "give cron or interval, not both", key=True)
        )
    if isinstance(cron, str):
        problem = cron_problem(cron)
        if problem is not None:
            issues.append(
                loaded.issue([*path, "cron"], f"invalid cron expression '{cron}': {problem}")
            )
    if isinstance(interval, str):
        problem = interval_problem(interval)
        if problem is not None:
            issues.append(
                loaded.issue([*path, "interval"], f"invalid interval '{interval}': {problem}")
            )
    scan = job.get("target_scan")
    if isinstance(scan, str) and (problem := interval_problem(scan)) is not None:
        issues.append(
            loaded.issue([*path, "target_scan"], f"invalid target_scan '{scan}': {problem}")
        )
    if scan is not None and not continuous:
        issues.append(
            loaded.issue(
                [*path, "target_scan"], "target_scan is for continuous jobs only", key=True
            )
        )
    return issues


def interval_problem(text: str) -> str | None:
    seconds = parse_interval(text)
    if seconds is None and text.strip().startswith("-"):
        return "must be positive, e.g. 15m"
    if seconds is None:
        return "use a number with a unit s, m, h or d (e.g. 15m)"
    if seconds < 1:
        return "must be at least 1s"
    if seconds > MAX_INTERVAL_SECONDS:
        return "must be at most 366d; use cron for rarer jobs"
    return None


def cron_problem(expression: str) -> str | None:
    """Why a five-field crontab expression is not usable, naming the field; None when it is."""
    try:
        crontab_trigger(expression)
    except ValueError as exc:
        return str(exc)
    return None


def _schedule_collection_issues(
    loaded: LoadedYaml, path: list[str | int], job: dict[str, Any], doc: dict[str, Any]
) -> list[ConfigIssue]:
    """A scheduled collection must be one the flow's policy lets travel, or every run fails."""
    flow = job.get("flow", job.get("verify"))
    policies = [p for p in _sequence(doc.get("collections")) if isinstance(p, dict)]
    if not isinstance(flow, str) or not policies:
        return []
    issues = []
    for index, name in enumerate(_sequence(job.get("collections"))):
        if not isinstance(name, str):
            continue
        policy = next((p for p in policies if fnmatch.fnmatchcase(name, str(p.get("name")))), None)
        if policy is None:
            problem = f"no entry of collections matches '{name}', so it never travels"
        elif isinstance(policy.get("flows"), list) and flow not in policy["flows"]:
            allowed = ", ".join(map(str, policy["flows"])) or "none"
            problem = f"'{name}' may not travel flow '{flow}' (its policy allows: {allowed})"
        else:
            continue
        issues.append(loaded.issue([*path, "collections", index], problem))
    return issues


def _metrics_issues(loaded: LoadedYaml, metrics: dict[str, Any]) -> list[ConfigIssue]:
    listen = metrics.get("listen")
    if not isinstance(listen, str):
        return []
    problem = listen_problem(listen)
    if problem is None:
        return []
    return [loaded.issue(["metrics", "listen"], f"invalid listen address '{listen}': {problem}")]


def listen_problem(listen: str) -> str | None:
    """Why `listen` is not a usable host:port, or None when it is."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host:
        return "use host:port, e.g. 127.0.0.1:9647 or [::1]:9647"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        return "the port must be a number from 0 to 65535"
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"'{host}' is not an IPv6 address"
        return None
    if ":" in host:
        return "write an IPv6 address in brackets, e.g. [::1]:9647"
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        if not HOSTNAME.match(host) or host.replace(".", "").isdigit():
            return f"'{host}' is not a valid host name or address"
    return None
