"""The daemon's pure parts, without a server: schedule triggers, reschedule on reload,
the notify protocol, signal queueing and the stop check between batches."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from syncd.config.cron import cron_weekdays
from syncd.config.model import Config, Endpoint, Flow, Schedule, SecretRef
from syncd.daemon import jobs
from syncd.daemon.jobs import Abandoned, DaemonReporter, StopCheck
from syncd.daemon.notify import Notifier
from syncd.daemon.ping import Pinger
from syncd.daemon.runner import JobRunner
from syncd.daemon.scheduler import Scheduler, grace_seconds, trigger_for
from syncd.daemon.signals import Inbox
from syncd.engine.context import RunContext
from syncd.log import TextFormatter
from syncd.metrics import SyncdMetrics

# -- triggers -------------------------------------------------------------------------------


def fire_times(schedule: Schedule, start: datetime, count: int) -> list[datetime]:
    trigger = trigger_for(schedule)
    times: list[datetime] = []
    previous = None
    now = start
    for _ in range(count):
        fire = trigger.get_next_fire_time(previous, now)
        times.append(fire)
        previous = now = fire
    return times


def test_cron_is_read_as_utc_crontab() -> None:
    nightly = Schedule("nightly-pull", flow="from_production", cron="0 3 * * *")
    start = datetime(2025, 3, 30, 0, 30, tzinfo=UTC)  # a DST change in Europe: not ours
    assert fire_times(nightly, start, 2) == [
        datetime(2025, 3, 30, 3, 0, tzinfo=UTC),
        datetime(2025, 3, 31, 3, 0, tzinfo=UTC),
    ]


def test_cron_weekday_numbers_mean_what_they_mean_in_crontab() -> None:
    # APScheduler 3's from_crontab reads 1-5 as Tuesday..Saturday (agronholm/apscheduler#286)
    weekdays = Schedule("workday-push", flow="to_production", cron="*/30 9 * * 1-5")
    friday = datetime(2025, 6, 13, 9, 40, tzinfo=UTC)
    assert fire_times(weekdays, friday, 2) == [
        datetime(2025, 6, 16, 9, 0, tzinfo=UTC),  # Monday
        datetime(2025, 6, 16, 9, 30, tzinfo=UTC),
    ]
    for sunday in ("0", "7", "sun"):
        weekly = Schedule("weekly", flow="f", cron=f"0 3 * * {sunday}")
        assert fire_times(weekly, friday, 1) == [datetime(2025, 6, 15, 3, 0, tzinfo=UTC)]


@pytest.mark.parametrize(
    ("field", "days"),
    [
        ("*", "*"),
        ("1-5", "mon,tue,wed,thu,fri"),
        ("*/2", "sun,tue,thu,sat"),
        ("1-7", "*"),
        ("5-7", "sun,fri,sat"),
        ("0,6", "sun,sat"),
        ("mon-fri", "mon,tue,wed,thu,fri"),
    ],
)
def test_cron_weekday_field_becomes_day_names(field: str, days: str) -> None:
    assert cron_weekdays(field) == days


def test_cron_day_of_month_or_day_of_week_as_in_crontab() -> None:
    # cron(8): "the 1st of the month, and every Monday", not "a Monday that is the 1st"
    both = Schedule("monthly-or-monday", flow="f", cron="0 3 1 * 1")
    start = datetime(2025, 6, 26, tzinfo=UTC)  # a Thursday
    assert fire_times(both, start, 3) == [
        datetime(2025, 6, 30, 3, 0, tzinfo=UTC),  # Monday
        datetime(2025, 7, 1, 3, 0, tzinfo=UTC),  # the 1st (a Tuesday)
        datetime(2025, 7, 7, 3, 0, tzinfo=UTC),  # Monday
    ]


def test_interval_and_signal_triggers() -> None:
    every = Schedule("audit", flow="from_production", interval_seconds=300)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    first, second = fire_times(every, start, 2)
    assert (second - first).total_seconds() == 300
    assert trigger_for(Schedule("deploy-push", flow="to_production", on_signal=True)) is None


def test_grace_time_is_half_an_interval_at_most_an_hour() -> None:
    assert grace_seconds(Schedule("a", flow="f", interval_seconds=1)) == 1
    assert grace_seconds(Schedule("b", flow="f", interval_seconds=300)) == 150
    assert grace_seconds(Schedule("c", flow="f", interval_seconds=86400)) == 3600
    assert grace_seconds(Schedule("d", flow="f", cron="0 3 * * *")) == 3600


# -- reschedule ------------------------------------------------------------------------------


def config_with(*schedules: Schedule) -> Config:
    endpoint = Endpoint("local", SecretRef("literal", "mongodb://127.0.0.1:1/db"))
    return Config(
        path=Path("syncd.yaml"),
        state_dir=Path("/nonexistent"),
        endpoints={"local": endpoint},
        flows={"f": Flow("f", "local", "local")},
        collections=(),
        schedules=schedules,
    )


@pytest.fixture
def scheduler() -> Iterator[Scheduler]:
    metrics = SyncdMetrics()
    notifier = Notifier({})
    current = [config_with()]
    runner = JobRunner(
        config=lambda: current[0], metrics=metrics, notifier=notifier, on_done=lambda: None
    )
    yield Scheduler(runner, Pinger(metrics), lambda: current[0])


def test_reload_adds_changes_and_removes_only_what_differs(scheduler: Scheduler) -> None:
    keep = Schedule("keep", flow="f", interval_seconds=60)
    retime = Schedule("retime", flow="f", cron="0 3 * * *")
    drop = Schedule("drop", flow="f", interval_seconds=30)
    signal_only = Schedule("push", flow="f", on_signal=True)
    first = scheduler.apply(config_with(keep, retime, drop, signal_only))
    assert sorted(first.added) == ["drop", "keep", "push", "retime"]

    changes = scheduler.apply(
        config_with(
            Schedule("keep", flow="f", interval_seconds=60, collections=("users",)),
            Schedule("retime", flow="f", cron="0 4 * * *"),
            Schedule("new", flow="f", interval_seconds=10),
        )
    )

    assert changes.added == ["new"]
    assert changes.changed == ["retime"]
    assert sorted(changes.removed) == ["drop", "push"]


# -- sd_notify ------------------------------------------------------------------------------


def receive(sock: socket.socket) -> dict[str, str]:
    sock.settimeout(5)
    lines = sock.recv(4096).decode().splitlines()
    return dict(line.split("=", 1) for line in lines)


def test_notify_reaches_a_socket_path(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "notify"))
        notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify")})
        notifier.ready("ready: 1 timed schedule(s)")
        assert receive(sock) == {"READY": "1", "STATUS": "ready: 1 timed schedule(s)"}


def test_notify_reaches_an_abstract_socket_and_reloading_carries_the_monotonic_time() -> None:
    name = f"syncd-unit-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        Notifier({"NOTIFY_SOCKET": "@" + name}).reloading()
        message = receive(sock)
    assert message["RELOADING"] == "1" and int(message["MONOTONIC_USEC"]) > 0


def test_notify_is_silent_without_a_socket_and_waits_once_for_a_receiver_that_stopped(
    tmp_path: Path,
) -> None:
    Notifier({}).ready("nobody listens")  # no socket: nothing happens, nothing raised
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "full"))
        notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "full")}, timeout=0.2)
        started = time.monotonic()
        for _ in range(100):  # far past the socket's queue: one bounded wait, then dropped
            notifier.status("busy")
        assert time.monotonic() - started < 5  # not 90 waits of 0.2 s


def test_notify_stopping_reaches_a_receiver_that_reads_slower_than_syncd_sends(
    tmp_path: Path,
) -> None:
    """Linux queues about 10 datagrams; a send into a full queue waits for room (as systemd's
    sd_notify does) instead of dropping, so STOPPING=1 after a burst of STATUS arrives."""
    path = str(tmp_path / "slow")
    received: list[dict[str, str]] = []
    done = threading.Event()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)

        def read_slowly() -> None:
            while not done.is_set():
                message = receive(sock)
                received.append(message)
                if "STOPPING" in message:
                    done.set()
                done.wait(0.02)  # the slow reader: 50 messages a second at most

        reader = threading.Thread(target=read_slowly, daemon=True)
        reader.start()
        notifier = Notifier({"NOTIFY_SOCKET": path})
        for n in range(40):
            notifier.status(f"batch {n}")
        notifier.stopping("stopping; running: nightly")
        assert done.wait(30), f"STOPPING=1 never arrived; got {len(received)} messages"
        reader.join(timeout=30)
    assert [m["STATUS"] for m in received[:40]] == [f"batch {n}" for n in range(40)]
    assert received[40] == {"STOPPING": "1", "STATUS": "stopping; running: nightly"}


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process_only() -> None:
    assert Notifier({"WATCHDOG_USEC": "60000000"}).watchdog_seconds == 30
    mine = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(mine).watchdog_seconds == 1
    other = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier(other).watchdog_seconds is None
    assert Notifier({}).watchdog_seconds is None


# -- signals and stopping -------------------------------------------------------------------


def test_signals_are_queued_for_the_main_loop_in_order() -> None:
    inbox = Inbox()
    inbox.install()
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGHUP)
        assert inbox.get(5) == signal.SIGUSR1
        assert inbox.get(5) == signal.SIGHUP
        assert inbox.get(0) is None
        inbox.post("job-done")  # from a job thread: wakes the loop too
        assert inbox.get(5) == "job-done"
    finally:
        inbox.restore()
        inbox.close()
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL


def test_stop_check_abandons_between_batches_but_not_inside_a_gridfs_pair() -> None:
    stopping = threading.Event()
    run = RunContext(DaemonReporter(), stop=StopCheck(stopping))
    scan = run.progress("users", "read source")
    chunks, users = run.before_batch("fs.chunks"), run.before_batch("users")
    scan(1000)
    stopping.set()
    chunks()  # fs.chunks then fs.files are written as a pair
    with pytest.raises(Abandoned):
        scan(2000)
    with pytest.raises(Abandoned):
        users()


# -- unexpected errors ----------------------------------------------------------------------


def test_a_job_that_fails_unexpectedly_is_logged_with_its_traceback(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_engine(*args: object) -> None:
        raise ZeroDivisionError("division by zero in the planner")

    monkeypatch.setattr(jobs, "sync_flow", broken_engine)
    schedule = Schedule("nightly", flow="f", interval_seconds=60)
    config = config_with(schedule)
    metrics = SyncdMetrics()
    runner = JobRunner(
        config=lambda: config, metrics=metrics, notifier=Notifier({}), on_done=lambda: None
    )

    with caplog.at_level(logging.INFO, logger="syncd.daemon"):
        runner("nightly", "interval")

    (failed,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert failed.getMessage() == (
        "sync failed: unexpected error: ZeroDivisionError: division by zero in the planner"
    )
    text = TextFormatter(timestamps=True).format(failed)
    assert "Traceback (most recent call last)" in text
    assert "in broken_engine" in text
    assert runner.last_runs()["nightly"].last_result == "failure"
