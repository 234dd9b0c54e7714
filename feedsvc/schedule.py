"""Pure time rules: the digest-schedule language and when a schedule last fired.

No I/O and no configuration objects: every function takes plain values, so the rules are
tested with tables (tests/schedule/).
"""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")


def schedule_trigger(spec: str, timezone: str) -> BaseTrigger:
    """The APScheduler trigger of a digest schedule.

    ``immediate`` (every 5 minutes), ``hourly``, ``daily HH:MM``, ``weekly MON HH:MM``
    or a five-field cron expression, in the given time zone.
    """
    words = spec.strip().split()
    kind = words[0].lower() if words else ""
    tz = ZoneInfo(timezone)
    if kind == "immediate" and len(words) == 1:
        # A fixed anchor keeps the 5-minute batches identical on every node and restart.
        return IntervalTrigger(minutes=5, start_date=datetime(2000, 1, 1, tzinfo=tz), timezone=tz)
    if kind == "hourly" and len(words) == 1:
        return CronTrigger(minute=0, timezone=tz)
    if kind == "daily" and len(words) == 2:
        hour, minute = _parse_hhmm(words[1])
        return CronTrigger(hour=hour, minute=minute, timezone=tz)
    if kind == "weekly" and len(words) == 3 and words[1].lower()[:3] in _WEEKDAYS:
        hour, minute = _parse_hhmm(words[2])
        return CronTrigger(day_of_week=words[1].lower()[:3], hour=hour, minute=minute, timezone=tz)
    if len(words) == 5:
        try:
            return CronTrigger.from_crontab(
                " ".join([*words[:4], _cron_weekdays(words[4])]), timezone=tz
            )
        except ValueError as e:
            raise ValueError(f"invalid cron expression {spec!r}: {e}") from e
    raise ValueError(
        f"unknown digest schedule {spec!r}: use immediate, hourly, daily HH:MM, "
        "weekly MON HH:MM or a cron expression"
    )


def _cron_weekdays(field: str) -> str:
    """Standard cron numbers weekdays 0-7 from Sunday; APScheduler 3 numbers them from
    Monday. Names mean the same to both, so numbers become names; a range starting on
    Sunday (0-5) is split, since APScheduler's weeks run Monday to Sunday."""
    return ",".join(_cron_weekday_item(item) for item in field.split(","))


def _cron_weekday_item(item: str) -> str:
    days, slash, step = item.partition("/")
    first, dash, last = days.partition("-")
    if not (first.isdigit() and (not dash or last.isdigit())):
        return item
    if dash and int(first) == 0 and int(last) >= 1 and not slash:
        return f"sun,mon-{_CRON_DAYS[int(last)]}" if int(last) < 7 else "mon-sun"
    names = _CRON_DAYS[int(first)] + (f"-{_CRON_DAYS[int(last)]}" if dash else "")
    return names + slash + step


def _parse_hhmm(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", text)
    if not m:
        raise ValueError(f"not a time of day: {text!r} (use HH:MM)")
    return int(m.group(1)), int(m.group(2))
