"""Pure time rules: the digest-schedule language, when a schedule last fired, how often
a source is polled, and the back-off after failures (sources and outbox alike).

No I/O and no configuration objects: every function takes plain values, so the rules are
tested with tables (tests/schedule/).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from feedsvc.model import SourceForUpdate

#: Weight of the newest observed gap in the moving average of a source's publish gap.
GAP_WEIGHT = 0.3
#: Retries of an outbox message back off from one minute up to six hours.
OUTBOX_RETRY_BASE = timedelta(minutes=1)
OUTBOX_RETRY_MAX = timedelta(hours=6)
#: Back-off doubles at most this many times: beyond, every cap has long been reached.
_MAX_DOUBLINGS = 30

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


def latest_fire_time(trigger: BaseTrigger, now: datetime) -> datetime | None:
    """The latest time at or before ``now`` at which the schedule fires (None: not yet).

    Looks back over growing spans so that frequent schedules cost few iterations.
    """
    for lookback in (timedelta(hours=1), timedelta(days=1), timedelta(days=8), timedelta(days=366)):
        fire = trigger.get_next_fire_time(None, now - lookback)
        if fire is None or fire > now:
            continue
        while True:
            following = trigger.get_next_fire_time(fire, fire + timedelta(seconds=1))
            if following is None or following > now:
                # UTC: a local time in a DST gap never compares equal across zones.
                return fire.astimezone(UTC)  # type: ignore[no-any-return]
            fire = following
    return None


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


# -- polling ----------------------------------------------------------------------------


def observe_new_entries(
    source: SourceForUpdate, now: datetime, new: int
) -> tuple[datetime | None, timedelta | None]:
    """The source's (last_new_at, publish_gap) after a poll that found ``new`` entries.

    The gap since the last poll with new entries is divided by their number: a feed
    publishing every two minutes polled every ten shows five new entries, and its gap
    is two minutes, not ten. The first poll of a source only sets ``last_new_at``
    (everything is new then, which says nothing about the rhythm).
    """
    if not new:
        return source.last_new_at, source.publish_gap
    if source.last_new_at is None:
        return now, source.publish_gap
    observed = (now - source.last_new_at) / new
    if source.publish_gap is None:
        return now, observed
    return now, source.publish_gap * (1 - GAP_WEIGHT) + observed * GAP_WEIGHT


def poll_interval(
    every: timedelta,
    gap: timedelta | None,
    last_new_at: datetime | None,
    now: datetime,
    hints: Iterable[timedelta | None],
    *,
    min_every: timedelta,
    max_every: timedelta,
) -> timedelta:
    """The normal time until a source's next poll.

    The source's average publish gap (``every`` until one is known), longer when the
    source has been quiet for more than twice that (half the silence: a source that
    stopped publishing slows down step by step), at least the feed's own hints (ttl,
    ``sy:update*``, ``Cache-Control: max-age``), all within ``[min_every, max_every]``
    widened to include ``every``. The operator's maximum wins over a feed's hint: a
    ``<ttl>`` of a year must not silence a source.
    """
    low, high = min(min_every, every), max(max_every, every)
    estimate = every if gap is None else gap
    if last_new_at is not None:
        estimate = max(estimate, (now - last_new_at) / 2)
    floor = max((hint for hint in hints if hint is not None), default=low)
    return min(high, max(low, estimate, floor))


# -- back-off ---------------------------------------------------------------------------


def backoff_delay(
    interval: timedelta,
    failures: int,
    cap: timedelta,
    retry_after: float | None = None,
    rng: random.Random | None = None,
    *,
    jitter: float = 0.2,
) -> timedelta:
    """Exponential back-off from ``interval`` with ± ``jitter`` (a fraction), capped; a
    server's Retry-After (seconds) wins if longer.

    Jitter spreads the retries of many sources that failed together (one host down).
    """
    doublings = min(failures - 1, _MAX_DOUBLINGS)
    base = min(cap.total_seconds(), interval.total_seconds() * 2**doublings)
    jittered = base * (rng or random).uniform(1 - jitter, 1 + jitter) if jitter else base
    seconds = min(cap.total_seconds(), jittered)
    if retry_after is not None:
        seconds = max(seconds, min(retry_after, cap.total_seconds()))
    return timedelta(seconds=seconds)


def outbox_retry_delay(attempts: int) -> timedelta:
    """The wait before retrying a digest after ``attempts`` failed deliveries: one minute,
    doubling per attempt up to six hours, without jitter."""
    return backoff_delay(OUTBOX_RETRY_BASE, attempts, OUTBOX_RETRY_MAX, jitter=0.0)
