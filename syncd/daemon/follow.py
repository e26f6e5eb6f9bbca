"""Continuous schedules: keep a target within seconds of its source.

A `Follower` is one thread per `continuous: true` schedule. It syncs (an ordinary
incremental sync: the flow's policy, drift, backups, hooks, verification, memory), then
waits for either side's change stream to show activity and syncs again, in batches of at
most `BATCH_CHANGES` source changes. Every rule of a sync therefore holds in continuous
mode too, and a restart resumes where the last batch stopped: the resume points are the
sync memory's, advanced only by a batch that was applied, verified and remembered.

- Drift under `abort` stops only the collections it is found in: the batch runs again
  without them, and they are tried again when either side changes them (a sync back that
  resolves the drift; at most every 2 s) and every half minute, until someone resolves it.
- A manual sync or restore of the same target holds the target's lease; the follower
  waits for it between batches ("paused") and goes on from its resume points after.
- Faults (a side down, a batch failing) are logged, counted and retried with backoff.
- A source without change streams is said once, and synced every minute instead.
- A target without change streams (a standalone local) is not watched: only the source's
  activity wakes the follower. Each batch follows the source's stream and checks the
  documents it writes for drift by `_id`; the target is read whole for the rest at most
  every `target_scan` (and after a failed batch). The source is never read whole for want
  of the target's stream.
- The endpoints stay connected from one batch to the next (`Connections`).

The activity watch only wakes the follower; what is applied always comes from the
resume points, so a missed wake-up costs latency, never data.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient

from syncd.config.model import OWN_PREFIX, Config, Schedule
from syncd.daemon.jobs import Outcome, StopCheck, run_sync
from syncd.daemon.runner import JobRunner
from syncd.endpoints import Connections, client_options, resolve_uri
from syncd.errors import SyncdError
from syncd.metrics import SyncdMetrics
from syncd.mongo.changestream import unsupported_reason

log = logging.getLogger("syncd.daemon")

BATCH_CHANGES = 2000  # source changes per batch at most
WATCH_AWAIT_MS = 1000  # an idle watch asks the server once a second
RECHECK_SECONDS = 60.0  # a batch at least this often (drift resolved? a missed wake-up?)
UNSUPPORTED_SECONDS = 60.0  # a source without change streams: every minute
BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)
PAUSE_SECONDS = 0.5
TOUCHED_RECHECK_SECONDS = 2.0  # a collection stopped by drift and changed: tried this soon


@dataclass
class FollowState:
    """What `status`/healthz/STATUS= say of a continuous job."""

    state: str = "starting"  # starting | following | paused | retrying | stopped
    lag_seconds: float = 0.0
    blocked: tuple[str, ...] = ()
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "lag_seconds": round(self.lag_seconds, 3),
            "stopped_by_drift": list(self.blocked),
            "detail": self.detail,
        }

    def describe(self) -> str:
        text = f"{self.state}, lag {self.lag_seconds:.1f} s"
        if self.blocked:
            text += f", stopped by drift: {', '.join(self.blocked)}"
        return text + (f" ({self.detail})" if self.detail else "")


class Activity:
    """Watches one endpoint's database from now on and wakes the follower on any change.

    `since` is when the oldest change not yet taken by a batch was seen (for the lag);
    `touched` the collections changed since the last `touched_since()`."""

    def __init__(self, uri: str, database: str, wake: threading.Event, *, source: bool) -> None:
        self.uri, self.database, self.wake, self.source = uri, database, wake, source
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.since: float | None = None
        self.touched: set[str] = set()
        self.thread = threading.Thread(target=self._run, name="watch", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def take(self) -> float | None:
        """The oldest pending change's arrival, handed to a batch about to start."""
        with self.lock:
            since, self.since = self.since, None
        return since

    def touched_since(self) -> set[str]:
        """The collections changed since the last call (drift may have been resolved)."""
        with self.lock:
            touched, self.touched = self.touched, set()
        return touched

    def _run(self) -> None:
        attempt = 0
        while not self.stop.is_set():
            try:
                self._watch()
                attempt = 0
            except Exception as exc:  # noqa: BLE001 - a watch must never stop the follower
                log.debug("change watch interrupted: %s", type(exc).__name__)
                self.wake.set()  # let a batch run and report what is wrong
                self.stop.wait(BACKOFF[min(attempt, len(BACKOFF) - 1)])
                attempt += 1

    def _watch(self) -> None:
        options = client_options(self.uri) | {"serverSelectionTimeoutMS": 5000}
        with MongoClient(self.uri, **options) as client:
            db = client[self.database].with_options(
                codec_options=CodecOptions(document_class=RawBSONDocument)
            )
            pipeline: list[dict[str, Any]] = [
                {"$match": {"ns.coll": {"$not": {"$regex": f"^{OWN_PREFIX}"}}}},
                {"$project": {"_id": 1, "operationType": 1, "ns": 1}},
            ]
            with db.watch(pipeline, max_await_time_ms=WATCH_AWAIT_MS) as stream:
                while not self.stop.is_set():
                    event = stream.try_next()
                    if event is not None:
                        with self.lock:
                            if self.source and self.since is None:
                                self.since = time.monotonic()
                            self.touched.add(str((event.get("ns") or {}).get("coll")))
                        self.wake.set()


class Follower:
    """The thread of one continuous schedule (see the module docstring)."""

    def __init__(
        self,
        schedule: Schedule,
        runner: JobRunner,
        metrics: SyncdMetrics,
        config: Callable[[], Config],
        status: Callable[[str], None],
    ) -> None:
        self.schedule, self.runner, self.metrics = schedule, runner, metrics
        self.config, self.status = config, status
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.check = StopCheck(_Either(runner.stopping, self.stop))
        self.state = FollowState()
        self.blocked: dict[str, int] = {}
        self.blocked_checked = 0.0  # when the collections drift stopped were last tried
        self.touched: set[str] = set()  # of those, the ones changed since on either side
        self.watches: list[Activity] = []
        self.connections = Connections()
        self.pending_since: float | None = None
        self.target_scan: float | None = None  # the target has no change streams: scan so often
        self.scanned_at: float | None = None  # when a batch last read that target whole
        self.thread = threading.Thread(
            target=self._run, name=f"follow-{schedule.name}", daemon=True
        )

    @property
    def name(self) -> str:
        return self.schedule.name

    def start(self) -> None:
        log.info("continuous sync started", extra={"job": self.name, "flow": self.schedule.flow})
        self.thread.start()

    def request_stop(self) -> None:
        self.stop.set()
        self.wake.set()
        for watch in self.watches:
            watch.stop.set()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)

    @property
    def stopping(self) -> bool:
        return self.stop.is_set() or self.runner.stopping.is_set()

    # -- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            every = self._start_watches()
            failures = 0
            while not self.stopping:
                self.wake.clear()
                outcome = self._batch()
                if outcome is None:
                    break
                if outcome.result == "failure":
                    self.scanned_at = None  # the next batch reads the target whole
                    delay = BACKOFF[min(failures, len(BACKOFF) - 1)]
                    failures += 1
                    self._set("retrying", f"next try in {delay:.0f} s: {outcome.reason[:200]}")
                    self.stop.wait(delay)
                    continue
                failures = 0
                if outcome.result == "skipped":  # a manual sync holds the target: wait for it
                    self._set("paused", "another run writes the target")
                    self.stop.wait(PAUSE_SECONDS)
                    continue
                self._set("following")
                if not outcome.more:
                    wait = min(every, self._recheck_in()) if self.touched else every
                    self._wait(min(wait, self._scan_in()))
        finally:
            for watch in self.watches:
                watch.stop.set()
            self.connections.close()
            self.state.state = "stopped"
            self.metrics.set_lag(self._flow, 0.0)
            log.info("continuous sync stopped", extra={"job": self.name})

    @property
    def _flow(self) -> str:
        assert self.schedule.flow is not None  # noqa: S101 - validated: continuous has a flow
        return self.schedule.flow

    def _start_watches(self) -> float:
        """Watch both sides; the interval of batches when nothing wakes us."""
        config = self.config()
        flow = config.flows[self._flow]
        for endpoint, source in ((flow.source, True), (flow.target, False)):
            ep = config.endpoints[endpoint]
            try:
                uri = resolve_uri(ep)
                database = ep.database or _database_of(uri)
                if source and (why := _no_streams(uri)) is not None:
                    log.warning(
                        f"{endpoint}: {why}; continuous job {self.name} syncs every minute instead",
                        extra={"job": self.name},
                    )
                    return UNSUPPORTED_SECONDS
                if not source and (why := _no_streams(uri)) is not None:
                    self.target_scan = self.schedule.target_scan_seconds
                    log.info(
                        f"{endpoint}: {why}; continuous job {self.name} checks the documents "
                        f"it writes there by _id and reads {endpoint} whole every "
                        f"{self.target_scan:g} s for the rest",
                        extra={"job": self.name},
                    )
                    continue
            except (SyncdError, Exception) as exc:  # noqa: BLE001 - a batch reports it
                log.debug("no change watch on %s: %s", endpoint, type(exc).__name__)
                continue
            watch = Activity(uri, database, self.wake, source=source)
            self.watches.append(watch)
            watch.start()
        return RECHECK_SECONDS

    def _wait(self, every: float) -> None:
        deadline = time.monotonic() + every
        while not self.stopping and not self.wake.is_set():
            self.wake.wait(min(1.0, max(0.0, deadline - time.monotonic())))
            self._update_lag()
            if time.monotonic() >= deadline:
                return

    def _batch(self) -> Outcome | None:
        """One incremental sync; drift stops only the collections it is found in."""
        since = self._take_pending()
        done = self.runner.cycle(self.name, self._sync)
        if done is None:
            return None
        _, outcome = done
        if outcome.result != "failure" and outcome.result != "skipped":
            self.pending_since = None
        self._update_lag()
        if outcome.result == "failure" and since is not None:
            self.pending_since = since
        return outcome

    def _take_pending(self) -> float | None:
        oldest = [t for t in (w.take() for w in self.watches if w.source) if t is not None]
        if oldest and (self.pending_since is None or min(oldest) < self.pending_since):
            self.pending_since = min(oldest)
        return self.pending_since

    def _sync(self, config: Config, schedule: Schedule) -> Outcome:
        self.touched |= set().union(*(w.touched_since() for w in self.watches))
        self.touched &= self.blocked.keys()
        if self.blocked and self._recheck_in() > 0:
            others = self._others(config, schedule, set(self.blocked))
            if others:
                rest = self._run_sync(config, schedule, others)
                rest.drift = {**self.blocked, **rest.drift}
                return rest
        self.blocked_checked = time.monotonic()
        self.touched = set()
        outcome = self._run_sync(config, schedule, None)
        if outcome.result != "refused" or not outcome.refused:
            self._unblock(outcome)
            return outcome
        blocked = {name: outcome.drift.get(name, 0) for name in outcome.refused}
        if blocked != self.blocked:
            log.warning(
                f"continuous job {self.name}: {', '.join(sorted(blocked))} stopped applying: "
                f"{outcome.reason}; the other collections go on",
                extra={"job": self.name, "flow": schedule.flow},
            )
        self.blocked = blocked
        self.state.blocked = tuple(sorted(blocked))
        others = self._others(config, schedule, set(blocked))
        if not others:
            return outcome
        rest = self._run_sync(config, schedule, others)
        rest.drift = {**outcome.drift, **rest.drift}
        return rest

    def _run_sync(self, config: Config, schedule: Schedule, only: list[str] | None) -> Outcome:
        scan = self._scan_in() <= 0
        started = time.monotonic()
        outcome = run_sync(
            config,
            schedule,
            self.check,
            collections=only,
            change_limit=BATCH_CHANGES,
            hooks_when_written=True,
            connections=self.connections,
            scan_unfollowed=scan,
        )
        if scan and outcome.result in ("success", "refused"):
            self.scanned_at = started
        return outcome

    def _scan_in(self) -> float:
        """Seconds until a batch reads a target without change streams whole (never when
        the target has change streams)."""
        if self.target_scan is None:
            return float("inf")
        if self.scanned_at is None:
            return 0.0
        return max(0.0, self.scanned_at + self.target_scan - time.monotonic())

    def _recheck_in(self) -> float:
        """Seconds until the collections drift stopped are tried again: soon after either
        side changed one of them (a sync back may have resolved it), else every half minute."""
        since = time.monotonic() - self.blocked_checked
        if self.touched:
            return max(0.0, TOUCHED_RECHECK_SECONDS - since)
        return max(0.0, RECHECK_SECONDS / 2 - since)

    def _others(self, config: Config, schedule: Schedule, blocked: set[str]) -> list[str]:
        from syncd.config.model import GRIDFS_PAIRS

        wanted = schedule.collections or _flow_collections(config, schedule, self.connections)
        partners = {GRIDFS_PAIRS.get(name) for name in blocked}
        return [n for n in wanted if n not in blocked and n not in partners]

    def _unblock(self, outcome: Outcome) -> None:
        if self.blocked and outcome.result == "success":
            log.info(
                f"continuous job {self.name}: {', '.join(sorted(self.blocked))} applying again",
                extra={"job": self.name},
            )
            self.blocked = {}
            self.state.blocked = ()

    def _update_lag(self) -> None:
        pending = [t for t in (w.since for w in self.watches if w.source) if t is not None]
        if self.pending_since is not None:
            pending.append(self.pending_since)
        lag = time.monotonic() - min(pending) if pending else 0.0
        self.state.lag_seconds = lag
        self.metrics.set_lag(self._flow, lag)

    def _set(self, state: str, detail: str = "") -> None:
        changed = (state, detail) != (self.state.state, self.state.detail)
        self.state.state, self.state.detail = state, detail
        if changed:
            self.status(f"{self.name}: {self.state.describe()}")


def _flow_collections(config: Config, schedule: Schedule, kept: Connections) -> list[str]:
    """The flow's collections as the sources list them now (for leaving some out)."""
    from syncd.endpoints import opened
    from syncd.mongo.source import MongoSource

    assert schedule.flow is not None  # noqa: S101
    flow = config.flows[schedule.flow]
    with opened(config.endpoints[flow.source], config.endpoints[flow.target], kept=kept) as sides:
        names: set[str] = set()
        for side in sides:
            names |= set(MongoSource(side.db, side.label).list_collections())
    return sorted(n for n in names if config.allows(flow.name, n))


def _database_of(uri: str) -> str:
    from syncd.config.secrets import uri_database

    return uri_database(uri) or ""


def _no_streams(uri: str) -> str | None:
    options = client_options(uri) | {"serverSelectionTimeoutMS": 5000}
    with MongoClient(uri, **options) as client:
        return unsupported_reason(client.get_database("admin"))


class _Either:
    """Set when either event is (the daemon stops, or this follower is stopped)."""

    def __init__(self, first: threading.Event, second: threading.Event) -> None:
        self.first, self.second = first, second

    def is_set(self) -> bool:
        return self.first.is_set() or self.second.is_set()
