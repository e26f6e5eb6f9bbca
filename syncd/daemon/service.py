"""`syncd run`: start, then a main loop that acts on signals; jobs run on scheduler threads.

SIGHUP reloads the config (kept when invalid), SIGUSR1 runs the on_signal schedules,
SIGTERM/SIGINT stop: no new jobs, running ones stop at their next batch boundary, exit 0
within 30 s; a second SIGTERM/SIGINT exits at once.
"""

from __future__ import annotations

import logging
import os
import signal
import time

from syncd import __version__
from syncd.config import ConfigInvalid, load_config
from syncd.config.model import Config
from syncd.daemon.follow import Follower
from syncd.daemon.notify import Notifier
from syncd.daemon.ping import Pinger
from syncd.daemon.runner import JobRunner
from syncd.daemon.scheduler import Scheduler
from syncd.daemon.signals import JOB_DONE, Event, Inbox
from syncd.daemon.state import restore_metrics
from syncd.errors import EXIT_OK, SyncdError
from syncd.health import HealthState, ListenAddressError, Listener, start_listener
from syncd.lease import release_all
from syncd.metrics import SyncdMetrics

log = logging.getLogger("syncd.daemon")

# systemd's TimeoutStopSec is 35 s and we promise 30: 25 s for jobs, the rest for exiting.
STOP_GRACE_SECONDS = 25.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Daemon:
    def __init__(self, config: Config, *, notifier: Notifier | None = None) -> None:
        self.config = config
        self.metrics = SyncdMetrics()
        self.notifier = notifier or Notifier()
        self.inbox = Inbox()
        self.runner = JobRunner(
            config=lambda: self.config,
            metrics=self.metrics,
            notifier=self.notifier,
            on_done=lambda: self.inbox.post(JOB_DONE),
        )
        self.pinger = Pinger(self.metrics)
        self.scheduler = Scheduler(self.runner, self.pinger, lambda: self.config)
        self.listener: Listener | None = None
        self.followers: dict[str, Follower] = {}
        self._next_watchdog = 0.0
        self._stopping = signal.SIGTERM

    def serve(self) -> int:
        self.inbox.install()
        try:
            self._start()
            self._loop()
            return self._stop()
        finally:
            self.inbox.restore()
            self.inbox.close()
            self.scheduler.shutdown()
            if self.listener is not None:
                self.listener.close()
            self.pinger.close()

    def health(self) -> HealthState:
        running = self.scheduler.running and not self.runner.stopping.is_set()
        return HealthState(
            config_loaded=True,
            scheduler_running=running,
            jobs=self.runner.last_runs(),
            continuous={name: f.state.as_dict() for name, f in self.followers.items()},
        )

    # -- start ----------------------------------------------------------------------------

    def _start(self) -> None:
        config = self.config
        restore_metrics(config, self.metrics)
        self.metrics.record_reload(True)
        try:
            self.listener = start_listener(config.metrics.listen, self.metrics, self.health)
        except (OSError, ListenAddressError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise SyncdError(
                f"cannot serve metrics on {config.metrics.listen}: {why}; "
                "change `metrics.listen` or stop what uses the port"
            ) from None
        log.info("metrics listening on %s", self.listener.url, extra={"port": self.listener.port})
        self.scheduler.start(config)
        self._follow(config)
        log.info(
            "syncd started",
            extra={
                "version": __version__,
                "pid": os.getpid(),
                "config": str(config.path),
                "schedules": len(config.schedules),
            },
        )
        self.notifier.ready(self._idle_status())

    def _idle_status(self) -> str:
        timed = sum(1 for s in self.config.schedules if s.cron or s.interval_seconds)
        on_signal = sum(1 for s in self.config.schedules if s.on_signal)
        status = f"ready: {timed} timed schedule(s), {on_signal} on SIGUSR1"
        if self.followers:
            status += f", {len(self.followers)} continuous"
        return status

    def _follow(self, config: Config) -> tuple[list[str], list[str], list[str]]:
        """Make the continuous followers match `config`: a changed schedule restarts its
        follower, an unchanged one keeps going. Returns (added, changed, removed)."""
        wanted = {s.name: s for s in config.schedules if s.continuous}
        added: list[str] = []
        changed: list[str] = []
        removed: list[str] = []
        for name, follower in list(self.followers.items()):
            if wanted.get(name) != follower.schedule:
                follower.request_stop()
                follower.join(STOP_GRACE_SECONDS)
                del self.followers[name]
                (changed if name in wanted else removed).append(name)
        for name, schedule in wanted.items():
            if name not in self.followers:
                if name not in changed:
                    added.append(name)
                follower = Follower(
                    schedule, self.runner, self.metrics, lambda: self.config, self.notifier.status
                )
                self.followers[name] = follower
                follower.start()
        return added, changed, removed

    # -- main loop --------------------------------------------------------------------------

    def _next_event(self, deadline: float | None = None) -> Event | None:
        """Wait for a signal or a job's end, waking in time for the watchdog and `deadline`."""
        now = time.monotonic()
        waits = [deadline - now] if deadline is not None else []
        interval = self.notifier.watchdog_seconds
        if interval is not None:
            if now >= self._next_watchdog:
                # No ping without a scheduler: systemd then restarts a daemon that stopped working.
                if self.scheduler.running or self.runner.stopping.is_set():
                    self.notifier.watchdog()
                self._next_watchdog = now + interval
            waits.append(self._next_watchdog - now)
        return self.inbox.get(max(0.0, min(waits)) if waits else None)

    def _loop(self) -> None:
        while True:
            event = self._next_event()
            if event == signal.SIGHUP:
                self.reload()
            elif event == signal.SIGUSR1:
                self.run_on_signal()
            elif event in STOP_SIGNALS:
                assert isinstance(event, signal.Signals)  # noqa: S101
                self._stopping = event
                return

    def reload(self) -> None:
        self.notifier.reloading()
        log.info("SIGHUP: reloading the config", extra={"config": str(self.config.path)})
        try:
            new = load_config(self.config.path)
        except ConfigInvalid as exc:
            for issue in exc.issues:
                log.error("config error: %s", issue)
            self._reload_failed(f"{len(exc.issues)} error(s)")
            return
        except (SyncdError, OSError) as exc:
            self._reload_failed(str(exc))
            return
        old, self.config = self.config, new
        changes = self.scheduler.apply(new)
        added, changed, removed = self._follow(new)
        changes.added += added
        changes.changed += changed
        changes.removed += removed
        self.pinger.forget(new)
        self.metrics.prime_from_config(new)
        self.metrics.record_reload(True)
        if new.metrics.listen != old.metrics.listen:
            log.warning("metrics.listen changed: restart syncd to move the metrics listener")
        log.info(
            "config reloaded",
            extra={
                "schedules": len(new.schedules),
                "added": ",".join(changes.added) or "-",
                "changed": ",".join(changes.changed) or "-",
                "removed": ",".join(changes.removed) or "-",
            },
        )
        self.notifier.ready(self._idle_status())

    def _reload_failed(self, why: str) -> None:
        log.error("config reload failed (%s): still running the previous config", why)
        self.metrics.record_reload(False)
        self.notifier.ready("config reload failed; running the previous config")

    def run_on_signal(self) -> None:
        names = self.scheduler.run_on_signal(self.config)
        if names:
            log.info("SIGUSR1: running the on_signal schedules", extra={"jobs": ",".join(names)})
        else:
            log.warning("SIGUSR1: no schedule has on_signal: true; nothing to run")

    # -- stop -------------------------------------------------------------------------------

    def _stop(self) -> int:
        started = time.monotonic()
        name = self._stopping.name
        running = self.runner.active()
        self.runner.stopping.set()
        for follower in self.followers.values():
            follower.request_stop()
        self.scheduler.shutdown()
        self.notifier.stopping(f"stopping; running: {', '.join(running) or 'none'}")
        log.info(
            f"{name}: stopping; no new jobs, running ones stop at their next batch",
            extra={"running": ",".join(running) or "-", "grace_seconds": STOP_GRACE_SECONDS},
        )
        deadline = started + STOP_GRACE_SECONDS
        while running := self.runner.active():
            if time.monotonic() >= deadline:
                log.warning(
                    f"still running after {STOP_GRACE_SECONDS:.0f} s: abandoning them",
                    extra={"running": ",".join(running)},
                )
                _exit_now()
            event = self._next_event(deadline)
            if event in STOP_SIGNALS:
                assert isinstance(event, signal.Signals)  # noqa: S101
                log.warning(
                    f"second {event.name}: stopping now, abandoning the running job(s)",
                    extra={"running": ",".join(running)},
                )
                _exit_now()
            if isinstance(event, signal.Signals):
                log.info(f"{event.name} ignored: syncd is stopping")
        log.info("stopped", extra={"seconds": round(time.monotonic() - started, 3)})
        return EXIT_OK


def _exit_now() -> None:
    """Leave without waiting for job threads. Lease files are flocks: the kernel frees them;
    database leases are given back here (or expire), and a sync cut short converges on its
    next run."""
    release_all()
    logging.shutdown()
    os._exit(EXIT_OK)
