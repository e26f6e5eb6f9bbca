"""A schedule's `cron:` means what it means in crontab, weekdays included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from syncd.config.cron import crontab_trigger

SATURDAY = datetime(2026, 1, 3, 12, 0, tzinfo=UTC)


def fire_days(expression: str, count: int = 14) -> list[str]:
    """Weekday names of the next `count` runs after Saturday 2026-01-03 noon UTC."""
    trigger = crontab_trigger(expression)
    days, previous, now = [], None, SATURDAY
    for _ in range(count):
        fire = trigger.get_next_fire_time(previous, now)
        assert fire is not None
        days.append(fire.strftime("%a"))
        previous, now = fire, fire
    return days


@pytest.mark.parametrize(
    ("expression", "weekdays"),
    [
        ("0 3 * * *", {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"}),
        ("0 3 * * 1-5", {"Mon", "Tue", "Wed", "Thu", "Fri"}),
        ("0 3 * * MON-FRI", {"Mon", "Tue", "Wed", "Thu", "Fri"}),
        ("0 3 * * 0", {"Sun"}),
        ("0 3 * * 7", {"Sun"}),
        ("0 3 * * 6,0", {"Sat", "Sun"}),
        ("0 3 * * 5-7", {"Fri", "Sat", "Sun"}),
        ("0 3 * * */2", {"Sun", "Tue", "Thu", "Sat"}),
        ("0 3 * * 1/3", {"Mon", "Thu"}),
    ],
)
def test_weekdays_follow_crontab(expression: str, weekdays: set[str]) -> None:
    assert set(fire_days(expression)) == weekdays


def test_trigger_fires_at_the_given_time_in_utc() -> None:
    fire = crontab_trigger("30 2 * * 1").get_next_fire_time(None, SATURDAY)
    assert fire == datetime(2026, 1, 5, 2, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        (
            "0 3 * * 8",
            "day-of-week field '8': '8' is not a weekday (0-7, 0 and 7 = Sunday, or sun-sat)",
        ),
        ("0 3 * * 5-1", "day-of-week field '5-1': range '5-1' runs backwards"),
        ("0 3 * * */0", "day-of-week field '*/0': step '0' must be a whole number above 0"),
        (
            "0 3 * * funday",
            "day-of-week field 'funday': 'funday' is not a weekday "
            "(0-7, 0 and 7 = Sunday, or sun-sat)",
        ),
        (
            "0 3 32 * *",
            "day-of-month field '32': the last value (32) is higher than the maximum value (31)",
        ),
        (
            "0 3 * 13 *",
            "month field '13': the last value (13) is higher than the maximum value (12)",
        ),
        ("*/0 * * * *", "minute field '*/0': Increment must be higher than 0"),
        ("0 3 * *", "needs 5 fields (minute hour day-of-month month day-of-week), got 4"),
    ],
)
def test_bad_expression_names_the_field(expression: str, problem: str) -> None:
    with pytest.raises(ValueError) as caught:
        crontab_trigger(expression)
    assert str(caught.value) == problem


def test_day_of_month_and_weekday_together_run_on_either_as_in_crontab() -> None:
    # cron(8): "0 3 1 * 1" is the 1st of every month AND every Monday
    trigger = crontab_trigger("0 3 1 * 1")
    thursday = datetime(2025, 6, 26, tzinfo=UTC)
    first = trigger.get_next_fire_time(None, thursday)
    second = trigger.get_next_fire_time(first, first + timedelta(seconds=1))
    assert (first, second) == (
        datetime(2025, 6, 30, 3, 0, tzinfo=UTC),  # a Monday
        datetime(2025, 7, 1, 3, 0, tzinfo=UTC),  # the 1st, a Tuesday
    )
