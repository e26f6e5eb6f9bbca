"""Crontab expressions as APScheduler 3 triggers, with crontab's meaning.

APScheduler counts weekday numbers from Monday (0 = mon) and rejects 7, while crontab counts
from Sunday (0 and 7 = sun): `CronTrigger.from_crontab("0 3 * * 1-5")` fires Tuesday to
Saturday. So the day-of-week field is expanded here into weekday names, which both agree on.
"""

from __future__ import annotations

import re
from datetime import tzinfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

FIELDS = (
    ("minute", "minute"),
    ("hour", "hour"),
    ("day", "day-of-month"),
    ("month", "month"),
    ("day_of_week", "day-of-week"),
)
DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def crontab_trigger(expression: str, timezone: tzinfo | str = "UTC") -> BaseTrigger:
    """The trigger of a five-field crontab line; ValueError says which field is wrong.

    With both day-of-month and day-of-week restricted, cron(8) runs when *either* matches
    (`0 3 1 * 1`: the 1st and every Monday) while a CronTrigger needs both: an OrTrigger."""
    fields = expression.split()
    if len(fields) != len(FIELDS):
        raise ValueError(
            f"needs 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}"
        )
    values = _field_values(fields)
    if fields[2] != "*" and values["day_of_week"] != "*":
        return OrTrigger(
            [
                CronTrigger(timezone=timezone, **{**values, "day_of_week": "*"}),
                CronTrigger(timezone=timezone, **{**values, "day": "*"}),
            ]
        )
    return CronTrigger(timezone=timezone, **values)


def _field_values(fields: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for (name, label), raw in zip(FIELDS, fields, strict=True):
        try:
            values[name] = cron_weekdays(raw) if name == "day_of_week" else raw
            CronTrigger(timezone="UTC", **{name: values[name]})
        except ValueError as exc:
            detail = re.sub(r"^Error validating expression '[^']*': ", "", str(exc))
            raise ValueError(f"{label} field '{raw}': {detail}") from None
    return values


def cron_weekdays(field: str) -> str:
    """Crontab's day-of-week field (0-7, sun-sat, ranges, lists, steps) as names."""
    if field == "*":
        return "*"
    days: set[int] = set()
    for part in field.lower().split(","):
        base, slash, step_text = part.partition("/")
        step = _step(step_text) if slash else 1
        if base == "*":
            first, last = 0, 6
        elif "-" in base:
            start, _, end = base.partition("-")
            first, last = _day(start), _day(end)
        else:
            first = _day(base)
            last = 6 if slash else first
        if first > last:
            raise ValueError(f"range '{base}' runs backwards")
        days.update(day % 7 for day in range(first, last + 1, step))
    if days == set(range(7)):
        return "*"
    return ",".join(DAY_NAMES[day] for day in sorted(days))


def _day(token: str) -> int:
    name = token.lower()
    if name.isdigit() and int(name) <= 7:
        return int(name)
    if name in DAY_NAMES:
        return DAY_NAMES.index(name)
    raise ValueError(f"'{token}' is not a weekday (0-7, 0 and 7 = Sunday, or sun-sat)")


def _step(text: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise ValueError(f"step '{text}' must be a whole number above 0")
    return int(text)
