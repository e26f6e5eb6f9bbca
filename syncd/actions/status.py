"""`syncd status [FLOW] [--json]`: what a sync would do now, and what the last one did."""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from syncd.compare import last_verify
from syncd.config.model import Config
from syncd.endpoints import Reached
from syncd.engine.flow import SyncOptions, get_flow, sync_flow
from syncd.engine.render import deletes_cell, table
from syncd.errors import EXIT_FAILED, EXIT_OK, SyncdError
from syncd.lease.status import lease_state


def run(config: Config, args: argparse.Namespace) -> int:
    flows = [get_flow(config, args.flow).name] if args.flow else sorted(config.flows)
    # Every endpoint reached once and all at once: with all of them down, `status` takes one
    # server selection timeout, and each flow that needs one says so without waiting again.
    # The flows are planned at once too: over a slow link status costs the round trips of
    # one no-op sync, not their sum.
    reached = Reached(config.endpoints[name] for name in sorted(config.endpoints))
    try:
        with ThreadPoolExecutor(max_workers=8, thread_name_prefix="status") as pool:
            planned = {flow: pool.submit(_flow_status, config, flow, reached) for flow in flows}
            report: dict[str, Any] = {"endpoints": _endpoints(config, reached), "flows": {}}
            for flow in flows:
                report["flows"][flow] = planned[flow].result()
    finally:
        reached.close()
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        _print(report)
    healthy = all(e["reachable"] for e in report["endpoints"].values())
    return EXIT_OK if healthy else EXIT_FAILED


def _endpoints(config: Config, reached: Reached) -> dict[str, dict[str, Any]]:
    result = {}
    for name, endpoint in sorted(config.endpoints.items()):
        entry: dict[str, Any] = {"reachable": False, "protected": endpoint.protected}
        connected = reached.connected.get(name)
        if connected is None:
            entry["error"] = str(reached.failures[name])
        else:
            entry.update(
                reachable=True, version=connected.server_version(), database=connected.database
            )
            entry["lease"] = lease_state(config.state, connected).as_json()
        result[name] = entry
    return result


def _flow_status(config: Config, flow_name: str, reached: Reached) -> dict[str, Any]:
    flow = config.flows[flow_name]
    status: dict[str, Any] = {"source": flow.source, "target": flow.target}
    status["last_verify"] = _last_verify(config, flow_name)
    down = [name for name in (flow.source, flow.target) if name in reached.failures]
    if down:
        status["unreachable"] = down
        status["error"] = (
            f"endpoint '{down[0]}' is unreachable"
            if len(down) == 1
            else f"endpoints '{down[0]}' and '{down[1]}' are unreachable"
        )
        return status
    try:
        result = sync_flow(config, flow_name, SyncOptions(dry_run=True, connections=reached))
    except SyncdError as exc:
        status["error"] = str(exc)
        return status
    pair = result.plan.pair
    collections = []
    memory = config.state.memory(readonly=True)
    try:
        for c in result.plan.collections:
            entry = c.summary()
            last = memory.last_run(pair, c.name) if pair is not None else None
            entry["last_sync"] = (
                None
                if last is None
                else {
                    "when": datetime.fromtimestamp(last.finished, UTC).isoformat(
                        timespec="seconds"
                    ),
                    "flow": last.flow,
                    "direction": f"{last.source} -> {last.target}",
                    "result": last.result,
                    "verified": last.verified,
                }
            )
            collections.append(entry)
    finally:
        memory.close()
    status["collections"] = collections
    return status


def _last_verify(config: Config, flow: str) -> dict[str, Any] | None:
    """When `syncd verify FLOW` last ran and what it found (recorded by syncd.compare)."""
    last = last_verify(config.state, flow)
    if last is None:
        return None
    try:
        collections = last["collections"]
        return {
            "when": datetime.fromtimestamp(float(last["finished"]), UTC).isoformat(
                timespec="seconds"
            ),
            "result": str(last["result"]),
            "mismatched": sum(c["missing"] + c["extra"] + c["different"] for c in collections),
            "collections_differ": [c["name"] for c in collections if not c["equal"]],
        }
    except (KeyError, TypeError, ValueError):  # a record written by hand or another version
        return None


def _print(report: dict[str, Any]) -> None:
    rows = []
    for name, e in report["endpoints"].items():
        state = f"up, MongoDB {e.get('version')}" if e["reachable"] else "UNREACHABLE"
        rows.append([name, e.get("database", "-"), state, "yes" if e["protected"] else "no"])
    print(table(["endpoint", "database", "state", "protected"], rows))
    for name, e in report["endpoints"].items():
        if not e["reachable"]:
            for line in e["error"].splitlines():
                print(f"  {line}")
        elif e["lease"]["summary"]:
            print(f"  {name}: {e['lease']['summary']}")
    for flow, status in report["flows"].items():
        print(f"\n{flow}: {status['source']} -> {status['target']}")
        verified = status["last_verify"]
        print(
            "  last verify: never (`syncd verify " + flow + "` compares both sides)"
            if verified is None
            else f"  last verify: {verified['when']} {verified['result']}"
            + (f" ({verified['mismatched']} document(s))" if verified["mismatched"] else "")
        )
        if "unreachable" in status:
            print(f"  cannot plan: {status['error']} (see above)", file=sys.stderr)
            continue
        if "error" in status:
            print(f"  cannot plan: {status['error']}", file=sys.stderr)
            continue
        rows = []
        for c in status["collections"]:
            last = c["last_sync"]
            when = (
                "never"
                if last is None
                else (f"{last['when']} {last['result']}{' verified' if last['verified'] else ''}")
            )
            rows.append(
                [
                    c["collection"],
                    c["source_docs"],
                    c["target_docs"],
                    c["inserts"],
                    c["updates"],
                    deletes_cell(c["deletes"], c["kept_deletes"]),
                    c["drift"] or "-",
                    _found_by(c),
                    when,
                ]
            )
        headers = [
            "collection",
            status["source"],
            status["target"],
            "insert",
            "update",
            "delete",
            "drift",
            "changes found by",
            "last sync",
        ]
        print(table(headers, rows))


def _found_by(entry: dict[str, Any]) -> str:
    if entry["mode"] == "changes":
        return "change streams"
    if entry["mode"] == "full":
        return f"full read ({entry['full_read_reason']})"
    return "; ".join(f"{endpoint}: {how}" for endpoint, how in entry["found_by"].items())
