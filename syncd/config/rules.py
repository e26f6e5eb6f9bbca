"""Rules that span keys, which JSON Schema cannot express (borgmatic's logical validation).

Runs on whatever parts of the document are well-formed, so one run reports every problem.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Iterable
from typing import Any

from apscheduler.triggers.cron import CronTrigger

from syncd.config.load import ConfigIssue, LoadedYaml
from syncd.config.secrets import uri_has_credentials

URI_KEYS = ("uri", "uri_env", "uri_file", "uri_command")
INTERVAL = re.compile(r"^\s*(?P<amount>\d+(?:\.\d+)?)\s*(?P<unit>[smhd])\s*$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")


def parse_interval(text: str) -> float | None:
    """Seconds of an interval like `15m`, or None when it is not one."""
    match = INTERVAL.match(text)
    if not match:
        return None
    return float(match["amount"]) * UNIT_SECONDS[match["unit"]]


def logical_issues(loaded: LoadedYaml) -> list[ConfigIssue]:
    doc = loaded.data if isinstance(loaded.data, dict) else {}
    endpoints = _mapping(doc.get("endpoints"))
    flows = _mapping(doc.get("flows"))
    hooks = _mapping(doc.get("hooks"))
    issues: list[ConfigIssue] = []
    issues += _endpoint_issues(loaded, endpoints)
    issues += _flow_issues(loaded, flows, endpoints, hooks)
    issues += _collection_issues(loaded, _sequence(doc.get("collections")), flows)
    issues += _schedule_issues(loaded, _sequence(doc.get("schedules")), flows, endpoints)
    issues += _metrics_issues(loaded, _mapping(doc.get("metrics")))
    return issues


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _sequence(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


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
        if "uri_command_timeout" in endpoint and "uri_command" not in endpoint:
            issues.append(
                loaded.issue(
                    [*path, "uri_command_timeout"], "only applies with uri_command", key=True
                )
            )
    return issues


def _flow_issues(
    loaded: LoadedYaml, flows: dict[str, Any], endpoints: dict[str, Any], hooks: dict[str, Any]
) -> list[ConfigIssue]:
    issues = []
    for name, flow in flows.items():
        if not isinstance(flow, dict):
            continue
        for side in ("source", "target"):
            ref = flow.get(side)
            if isinstance(ref, str) and ref not in endpoints:
                issues.append(
                    loaded.issue(["flows", name, side], _unknown("endpoint", ref, endpoints))
                )
        if flow.get("source") is not None and flow.get("source") == flow.get("target"):
            issues.append(
                loaded.issue(["flows", name, "target"], "source and target are the same endpoint")
            )
        for index, hook in enumerate(_sequence(flow.get("after"))):
            if isinstance(hook, str) and hook not in hooks:
                issues.append(
                    loaded.issue(["flows", name, "after", index], _unknown("hook", hook, hooks))
                )
    return issues


def _collection_issues(
    loaded: LoadedYaml, collections: list[Any], flows: dict[str, Any]
) -> list[ConfigIssue]:
    issues = []
    seen: dict[str, int] = {}
    flows_of: dict[str, Any] = {}
    for index, entry in enumerate(collections):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            continue
        name = entry["name"]
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
            if isinstance(flow, str) and flow not in flows:
                issues.append(
                    loaded.issue(
                        ["collections", index, "flows", flow_index], _unknown("flow", flow, flows)
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
    loaded: LoadedYaml, schedules: list[Any], flows: dict[str, Any], endpoints: dict[str, Any]
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
        issues += _trigger_issues(loaded, path, job)
    return issues


def _schedule_target_issues(
    loaded: LoadedYaml,
    path: list[str | int],
    job: dict[str, Any],
    flows: dict[str, Any],
    endpoints: dict[str, Any],
) -> list[ConfigIssue]:
    issues = []
    has_flow, has_backup = "flow" in job, "backup" in job
    if has_flow == has_backup:
        issues.append(loaded.issue(path, "a schedule needs exactly one of flow or backup"))
    flow = job.get("flow")
    if isinstance(flow, str) and flow not in flows:
        issues.append(loaded.issue([*path, "flow"], _unknown("flow", flow, flows)))
    backup = job.get("backup")
    if isinstance(backup, str) and backup not in endpoints:
        issues.append(loaded.issue([*path, "backup"], _unknown("endpoint", backup, endpoints)))
    if has_backup and "collections" in job:
        issues.append(
            loaded.issue([*path, "collections"], "collections only applies to flow jobs", key=True)
        )
    return issues


def _trigger_issues(
    loaded: LoadedYaml, path: list[str | int], job: dict[str, Any]
) -> list[ConfigIssue]:
    issues = []
    cron, interval = job.get("cron"), job.get("interval")
    if cron is None and interval is None and job.get("on_signal") is not True:
        issues.append(
            loaded.issue(path, "a schedule needs a trigger: cron, interval or on_signal: true")
        )
    if cron is not None and interval is not None:
        issues.append(
            loaded.issue([*path, "interval"], "give cron or interval, not both", key=True)
        )
    if isinstance(cron, str):
        try:
            CronTrigger.from_crontab(cron, timezone="UTC")
        except ValueError as exc:
            issues.append(loaded.issue([*path, "cron"], f"invalid cron expression '{cron}': {exc}"))
    if isinstance(interval, str):
        seconds = parse_interval(interval)
        if seconds is None or seconds <= 0:
            issues.append(
                loaded.issue(
                    [*path, "interval"],
                    f"invalid interval '{interval}': use a positive number with a unit "
                    "s, m, h or d (e.g. 15m)",
                )
            )
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
