"""Crontab expressions with crontab's meaning, on APScheduler 3.

APScheduler 3's `CronTrigger.from_crontab` differs from cron(8) in two ways that move runs
to other days (agronholm/apscheduler#286, kept for compatibility in 3.x, fixed in 4.0):
- day-of-week numbers: cron counts 0 (or 7) = Sunday, APScheduler 0 = Monday, so
  `0 3 * * 1-5` would run Tuesday to Saturday, and steps (`*/2`) pick other days;
- day-of-month and day-of-week both restricted: cron runs when *either* matches
  (`0 3 1 * 1` = the 1st and every Monday), APScheduler only when both do.
Here the day-of-week field is expanded to day names, and such pairs become an OrTrigger.
"""

from __future__ import annotations

from datetime import tzinfo
from typing import Any

from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def crontab_trigger(expression: str, timezone: tzinfo) -> Any:
    """A trigger firing when cron(8) would run `expression` (five fields)."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"a crontab expression has 5 fields, not {len(fields)}: {expression!r}")
    minute, hour, day, month, day_of_week = fields
    weekdays = cron_weekdays(day_of_week)

    def cron(day: str, day_of_week: str) -> CronTrigger:
        return CronTrigger(
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=day_of_week,
            timezone=timezone,
        )

    if day != "*" and weekdays != "*":
        return OrTrigger([cron(day, "*"), cron("*", weekdays)])
    return cron(day, weekdays)


def cron_weekdays(field: str) -> str:
    """A cron day-of-week field as APScheduler day names: `1-5` -> `mon,tue,wed,thu,fri`."""
    if field == "*":
        return "*"
    days: set[int] = set()
    for part in field.lower().split(","):
        days |= _expand(part)
    if days == set(range(7)):
        return "*"
    return ",".join(DAY_NAMES[day] for day in sorted(days))


def _expand(part: str) -> set[int]:
    span, _, step_text = part.partition("/")
    step = int(step_text) if step_text else 1
    if step < 1:
        raise ValueError(f"day-of-week step must be positive: {part!r}")
    if span == "*":
        first, last = 0, 6
    elif "-" in span:
        low, _, high = span.partition("-")
        first, last = _day(low), _day(high, end=True)
    else:
        first = last = _day(span)
        if step_text:  # `1/2` means from 1 to the end, every 2
            last = 6
    if last < first:  # `fri-mon`: wrap around the weekend
        numbers = [*range(first, 7), *range(0, last + 1)]
    else:
        numbers = list(range(first, last + 1))
    return {number % 7 for number in numbers[::step]}


def _day(text: str, *, end: bool = False) -> int:
    """0..6 (Sunday = 0); 7 is Sunday too, kept as 7 at the end of a range (`1-7`)."""
    if text in DAY_NAMES:
        return DAY_NAMES.index(text)
    if not text.isdigit() or int(text) > 7:
        raise ValueError(f"invalid day of week {text!r}: use 0-7 (0 and 7 are Sunday) or sun-sat")
    number = int(text)
    return number if end or number < 7 else 0
