"""Run one schedule: no overlap with itself, one log line per start and end, metrics, status."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from syncd.config.model import Config, Schedule
from syncd.daemon.jobs import Outcome, StopCheck, run_backup, run_sync, run_verify
from syncd.daemon.notify import Notifier
from syncd.health import JobHealth
from syncd.metrics import COLLECTION_PATTERN, Result, SyncdMetrics, UnsafeLabelValue

log = logging.getLogger("syncd.daemon")

LEVELS = {
    "success": logging.INFO,
    "skipped": logging.WARNING,
    "refused": logging.WARNING,
    "failure": logging.ERROR,
}
VERBS = {"success": "done", "skipped": "skipped", "refused": "refused", "failure": "failed"}


class JobRunner:
    """The function every schedule job calls, shared by all of them (APScheduler threads).

    `config` gives the config in force when a job starts; a job keeps that one to its end,
    even when a reload swaps in another meanwhile.
    """

    def __init__(
        self,
        *,
        config: Callable[[], Config],
        metrics: SyncdMetrics,
        notifier: Notifier,
        on_done: Callable[[], None],
    ) -> None:
        self.config, self.metrics, self.notifier, self.on_done = config, metrics, notifier, on_done
        self.stopping = threading.Event()
        self.check = StopCheck(self.stopping)
        self._lock = threading.Lock()
        self._guards: dict[str, threading.Lock] = {}
        self._active: dict[str, float] = {}
        self.last: dict[str, JobHealth] = {}

    def active(self) -> list[str]:
        with self._lock:
            return sorted(self._active)

    def last_runs(self) -> dict[str, JobHealth]:
        with self._lock:
            return dict(self.last)

    def __call__(self, name: str, trigger: str) -> None:
        if self.stopping.is_set():
            return
        config = self.config()
        schedule = next((s for s in config.schedules if s.name == name), None)
        if schedule is None:
            log.info("schedule no longer configured, not run", extra={"job": name})
            return
        with self._lock:
            guard = self._guards.setdefault(name, threading.Lock())
        if not guard.acquire(blocking=False):
            self.overlap(schedule)
            return
        try:
            with self._lock:
                self._active[name] = time.monotonic()
            outcome = self._execute(config, schedule, trigger)
        finally:
            with self._lock:
                self._active.pop(name, None)
            guard.release()
        try:
            self._report(schedule, trigger, outcome)
        finally:
            self.on_done()

    def cycle(
        self, name: str, work: Callable[[Config, Schedule], Outcome]
    ) -> tuple[Schedule, Outcome] | None:
        """One batch of a continuous job: tracked as running (a stop waits for it), counted
        in the metrics, logged only when it wrote, failed or was refused (a quiet follower
        would otherwise log twice a second). None when the schedule is gone or stopping."""
        if self.stopping.is_set():
            return None
        config = self.config()
        schedule = next((s for s in config.schedules if s.name == name), None)
        if schedule is None:
            return None
        with self._lock:
            self._active[name] = time.monotonic()
        try:
            outcome = work(config, schedule)
        finally:
            with self._lock:
                self._active.pop(name, None)
            if self.stopping.is_set():
                self.on_done()  # a stop waiting for running work hears of it at once
        if outcome.result != "success" or outcome.wrote:
            self._report(schedule, "continuous", outcome)
        else:
            self._record(schedule, outcome)
            with self._lock:
                self.last[schedule.name] = JobHealth(outcome.result, time.time())
        return schedule, outcome

    def overlap(self, schedule: Schedule) -> None:
        """A run due while the previous run of the same schedule is still going: skipped."""
        outcome = Outcome("skipped", "the previous run of this schedule is still running")
        self._report(schedule, "overlap", outcome)

    def _execute(self, config: Config, schedule: Schedule, trigger: str) -> Outcome:
        log.info(f"{_kind(schedule)} started", extra=_labels(schedule, trigger))
        self.notifier.status(f"running {schedule.name}")
        if schedule.flow is not None:
            return run_sync(config, schedule, self.check)
        if schedule.verify is not None:
            return run_verify(config, schedule, self.check)
        return run_backup(config, schedule, self.check)

    def _report(self, schedule: Schedule, trigger: str, outcome: Outcome) -> None:
        verb = "abandoned" if outcome.abandoned else VERBS[outcome.result]
        level = logging.WARNING if outcome.abandoned else LEVELS[outcome.result]
        if outcome.verify == "different":  # the job ran; what it found needs a person
            verb, level = "found differences", logging.WARNING
        message = f"{_kind(schedule)} {verb}"
        if outcome.reason:  # one line per event: an error of several lines (two endpoints) too
            message += ": " + "; ".join(outcome.reason.splitlines())
        extra: dict[str, Any] = {**_labels(schedule, trigger)}
        extra["result"] = outcome.verify or outcome.result
        extra.update(outcome.fields)
        extra["seconds"] = round(outcome.seconds, 3)
        log.log(level, message, extra=extra, exc_info=outcome.unexpected)
        self._record(schedule, outcome)
        with self._lock:
            self.last[schedule.name] = JobHealth(outcome.result, time.time())
        target = schedule.flow or (
            f"verify {schedule.verify}" if schedule.verify else f"backup {schedule.backup}"
        )
        result = outcome.verify or outcome.result
        self.notifier.status(
            f"last job {schedule.name}: {result} ({target}, {outcome.seconds:.1f} s)"
        )

    def _record(self, schedule: Schedule, outcome: Outcome) -> None:
        try:
            if schedule.flow is not None:
                docs = {
                    (coll, op): n
                    for (coll, op), n in outcome.docs.items()
                    if COLLECTION_PATTERN.fullmatch(coll)
                }
                drift = {c: n for c, n in outcome.drift.items() if COLLECTION_PATTERN.fullmatch(c)}
                self.metrics.record_sync(
                    schedule.flow,
                    outcome.result,
                    outcome.seconds,
                    docs,  # type: ignore[arg-type]  # ops come from SyncResult.documents()
                    drift,
                    modes=outcome.modes,
                )
                if outcome.presync is not None:
                    self._record_backup(*outcome.presync, outcome)
            elif schedule.verify is not None and outcome.result != "skipped":
                mismatched = {
                    c: n for c, n in outcome.mismatched.items() if COLLECTION_PATTERN.fullmatch(c)
                }
                self.metrics.record_verify(schedule.verify, outcome.verify or "failure", mismatched)
            elif schedule.backup is not None:
                self._record_backup(schedule.backup, outcome.result, outcome)
        except (UnsafeLabelValue, ValueError) as exc:
            log.warning("metrics not recorded: %s", exc, extra={"job": schedule.name})

    def _record_backup(self, endpoint: str, result: Result, outcome: Outcome) -> None:
        """A scheduled backup or a flow's backup before writing, and what is kept after it."""
        kept, size, newest = outcome.backups or (None, None, None)
        self.metrics.record_backup(endpoint, result, kept, size)
        if newest is not None:
            self.metrics.set_backup_inventory(endpoint, None, None, newest)


def _kind(schedule: Schedule) -> str:
    if schedule.flow is not None:
        return "sync"
    return "verify" if schedule.verify is not None else "backup"


def _labels(schedule: Schedule, trigger: str) -> dict[str, str]:
    labels = {"job": schedule.name, "trigger": trigger}
    if schedule.flow is not None:
        labels["flow"] = schedule.flow
    if schedule.verify is not None:
        labels["flow"] = schedule.verify
    if schedule.backup is not None:
        labels["endpoint"] = schedule.backup
    return labels
