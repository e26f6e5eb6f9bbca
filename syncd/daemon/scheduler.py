"""Schedules as APScheduler 3 jobs: cron (crontab meaning, see `cron`) and interval triggers
in UTC; on_signal runs on demand.

Every job runs `JobRunner(name, trigger)`. A job never overlaps itself (`max_instances=1`,
and the runner's own guard across a schedule's timed and signal runs); a run that could not
start on time is coalesced into one and still starts within its grace time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from syncd.config.cron import crontab_trigger
from syncd.config.model import Config, Schedule
from syncd.daemon.ping import PING_SECONDS, Pinger
from syncd.daemon.runner import JobRunner

log = logging.getLogger("syncd.daemon")

PING_JOB = "syncd:endpoint-ping"
SIGNAL_SUFFIX = "@signal"
MAX_WORKERS = 8
MAX_GRACE_SECONDS = 3600


def trigger_for(schedule: Schedule) -> Any | None:
    """The APScheduler trigger of a timed schedule; None for on_signal-only ones."""
    if schedule.cron is not None:
        return crontab_trigger(schedule.cron, UTC)
    if schedule.interval_seconds is not None:
        return IntervalTrigger(seconds=schedule.interval_seconds, timezone=UTC)
    return None


def grace_seconds(schedule: Schedule) -> int:
    """How late a run may still start (busy workers, a suspended host): half an interval,
    at most an hour; a cron run up to an hour late. Later than that, the next one is waited for."""
    if schedule.interval_seconds is not None:
        return max(1, min(MAX_GRACE_SECONDS, int(schedule.interval_seconds / 2)))
    return MAX_GRACE_SECONDS


def _trigger_key(schedule: Schedule) -> tuple[str | None, float | None]:
    return schedule.cron, schedule.interval_seconds


@dataclass
class Changes:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


class Scheduler:
    def __init__(self, runner: JobRunner, pinger: Pinger, config: Callable[[], Config]) -> None:
        self.runner, self.pinger, self.config = runner, pinger, config
        self._aps = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(max_workers=MAX_WORKERS)},
            job_defaults={"coalesce": True, "max_instances": 1},
        )
        self._aps.add_listener(self._on_event, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
        self._timed: dict[str, tuple[str | None, float | None]] = {}
        self._signal_only: set[str] = set()

    @property
    def running(self) -> bool:
        return bool(self._aps.running)

    def start(self, config: Config) -> None:
        # Our own log lines say what APScheduler's warnings would, with the schedule's name.
        logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)
        logging.getLogger("apscheduler.executors").setLevel(logging.ERROR)
        self.apply(config)
        self._aps.add_job(
            self._ping,
            IntervalTrigger(seconds=PING_SECONDS, timezone=UTC),
            id=PING_JOB,
            name="endpoint ping",
            next_run_time=datetime.now(UTC),
            misfire_grace_time=PING_SECONDS,
        )
        self._aps.start()
        for schedule in config.schedules:
            self._log_scheduled(schedule)

    def apply(self, config: Config) -> Changes:
        """Make the jobs match `config`. Unchanged triggers keep their timing; a running job
        goes on (removing or replacing a job never stops a run already started)."""
        wanted = {s.name: s for s in config.schedules if trigger_for(s) is not None}
        changes = Changes()
        for name in list(self._timed):
            if name not in wanted:
                self._remove(name)
                changes.removed.append(name)
        for name, schedule in wanted.items():
            key = _trigger_key(schedule)
            if self._timed.get(name) == key:
                continue
            (changes.changed if name in self._timed else changes.added).append(name)
            self._aps.add_job(
                self.runner,
                trigger_for(schedule),
                args=(name, "cron" if schedule.cron is not None else "interval"),
                id=name,
                name=name,
                misfire_grace_time=grace_seconds(schedule),
                replace_existing=True,
            )
            self._timed[name] = key
        signal_only = {
            s.name for s in config.schedules if trigger_for(s) is None and not s.continuous
        }
        changes.added += sorted(signal_only - set(self._signal_only))
        changes.removed += sorted(set(self._signal_only) - signal_only)
        self._signal_only = signal_only
        return changes

    def run_on_signal(self, config: Config) -> list[str]:
        """Start every on_signal schedule now (SIGUSR1); returns their names."""
        names = [s.name for s in config.schedules if s.on_signal]
        for name in names:
            self._aps.add_job(
                self.runner,
                args=(name, "signal"),
                id=name + SIGNAL_SUFFIX,
                name=name,
                misfire_grace_time=None,
                replace_existing=True,
            )
        return names

    def shutdown(self) -> None:
        """Stop starting jobs; running ones go on (the caller waits for them)."""
        if self._aps.running:
            self._aps.shutdown(wait=False)

    def next_run(self, name: str) -> datetime | None:
        job = self._aps.get_job(name)
        return None if job is None else job.next_run_time

    def _remove(self, name: str) -> None:
        try:
            self._aps.remove_job(name)
        except JobLookupError:
            pass
        self._timed.pop(name, None)

    def _ping(self) -> None:
        if self.runner.stopping.is_set():
            return
        try:
            self.pinger(self.config())
        except Exception as exc:  # the ping must never stop; the traceback says why
            log.error("endpoint ping failed unexpectedly", exc_info=exc)

    def _on_event(self, event: JobEvent) -> None:
        name = str(event.job_id).removesuffix(SIGNAL_SUFFIX)
        schedule = next((s for s in self.config().schedules if s.name == name), None)
        if schedule is None:
            return
        if event.code == EVENT_JOB_MAX_INSTANCES:
            self.runner.overlap(schedule)
        else:
            log.warning(
                "run missed: it could not start within its grace time; waiting for the next one",
                extra={"job": name, "grace_seconds": grace_seconds(schedule)},
            )

    def _log_scheduled(self, schedule: Schedule) -> None:
        extra: dict[str, Any] = {"job": schedule.name}
        if schedule.cron is not None:
            extra["cron"] = schedule.cron
        if schedule.interval_seconds is not None:
            extra["interval_seconds"] = schedule.interval_seconds
        if schedule.on_signal:
            extra["on_signal"] = "SIGUSR1"
        next_run = self.next_run(schedule.name)
        if next_run is not None:
            extra["next_run"] = next_run.isoformat(timespec="seconds")
        log.info("scheduled", extra=extra)
