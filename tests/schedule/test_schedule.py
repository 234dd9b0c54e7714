"""The time rules, alone: digest windows from schedules (across DST changes), the polling
interval, and the back-off of sources and of the outbox."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from feedsvc.digest import digest_message_id
from feedsvc.model import SourceForUpdate
from feedsvc.schedule import (
    backoff_delay,
    latest_fire_time,
    observe_new_entries,
    outbox_retry_delay,
    poll_interval,
    schedule_trigger,
)

LONDON = ZoneInfo("Europe/London")
SHANGHAI = ZoneInfo("Asia/Shanghai")
EVERY = timedelta(minutes=10)
BOUNDS = {"min_every": timedelta(minutes=5), "max_every": timedelta(hours=12)}


def local(tz: ZoneInfo, *args: int) -> datetime:
    return datetime(*args, tzinfo=tz).astimezone(UTC)


@pytest.mark.parametrize(
    ("spec", "tz", "now", "expected"),
    [
        # daily 08:00 London: 08:00 GMT in winter, 08:00 BST (07:00 UTC) in summer
        ("daily 08:00", LONDON, local(LONDON, 2026, 3, 28, 9, 0), local(LONDON, 2026, 3, 28, 8, 0)),
        ("daily 08:00", LONDON, local(LONDON, 2026, 3, 29, 9, 0), local(LONDON, 2026, 3, 29, 8, 0)),
        (
            "daily 08:00",
            LONDON,
            local(LONDON, 2026, 3, 29, 7, 59),
            local(LONDON, 2026, 3, 28, 8, 0),
        ),
        (
            "daily 08:00",
            LONDON,
            local(LONDON, 2026, 10, 25, 8, 30),
            local(LONDON, 2026, 10, 25, 8, 0),
        ),
        # 01:30 does not exist in London on 2026-03-29 (clocks jump 01:00 → 02:00):
        # the digest still goes out once that day, an hour late (02:30 BST)
        (
            "daily 01:30",
            LONDON,
            local(LONDON, 2026, 3, 29, 12, 0),
            datetime(2026, 3, 29, 1, 30, tzinfo=UTC),
        ),
        # weekly on Monday, the week of the autumn change
        (
            "weekly MON 09:00",
            LONDON,
            local(LONDON, 2026, 10, 28, 12, 0),
            local(LONDON, 2026, 10, 26, 9, 0),
        ),
        # cron: weekdays at 18:30 Shanghai (no DST); Saturday evening → Friday's
        (
            "30 18 * * 1-5",
            SHANGHAI,
            local(SHANGHAI, 2026, 11, 28, 20, 0),
            local(SHANGHAI, 2026, 11, 27, 18, 30),
        ),
        (
            "hourly",
            SHANGHAI,
            local(SHANGHAI, 2026, 11, 26, 10, 59),
            local(SHANGHAI, 2026, 11, 26, 10, 0),
        ),
        (
            "immediate",
            SHANGHAI,
            local(SHANGHAI, 2026, 11, 26, 10, 7),
            local(SHANGHAI, 2026, 11, 26, 10, 5),
        ),
    ],
)
def test_latest_fire_time_is_the_last_scheduled_local_time(
    spec: str, tz: ZoneInfo, now: datetime, expected: datetime
) -> None:
    assert latest_fire_time(schedule_trigger(spec, str(tz)), now) == expected


def test_a_window_is_the_same_on_every_node_and_restart() -> None:
    now = local(SHANGHAI, 2026, 11, 26, 10, 7)
    first = latest_fire_time(schedule_trigger("immediate", "Asia/Shanghai"), now)
    again = latest_fire_time(schedule_trigger("immediate", "Asia/Shanghai"), now)
    assert first == again
    assert digest_message_id("a@example.com", first, "x <n@news.example>") == digest_message_id(
        "A@example.com", again, "x <n@news.example>"
    )


# -- the polling interval --------------------------------------------------------------


def test_the_gap_divides_the_time_since_the_last_new_entries_by_their_number() -> None:
    t0 = datetime(2026, 11, 26, 8, tzinfo=UTC)
    first = SourceForUpdate("news", "http://x/")
    assert observe_new_entries(first, t0, 50) == (t0, None)  # everything is new at first
    seen = SourceForUpdate("news", "http://x/", last_new_at=t0)
    assert observe_new_entries(seen, t0 + EVERY, 5) == (t0 + EVERY, timedelta(minutes=2))
    averaged = SourceForUpdate("news", "http://x/", last_new_at=t0, publish_gap=EVERY)
    _, gap = observe_new_entries(averaged, t0 + timedelta(minutes=20), 1)
    assert gap == EVERY * 0.7 + timedelta(minutes=20) * 0.3
    assert observe_new_entries(averaged, t0 + EVERY, 0) == (t0, EVERY)


@pytest.mark.parametrize(
    ("gap", "silence", "hints", "expected"),
    [
        pytest.param(None, None, (), EVERY, id="unknown rhythm: every"),
        pytest.param(timedelta(minutes=1), None, (), timedelta(minutes=5), id="busy: min"),
        pytest.param(timedelta(minutes=30), timedelta(0), (), timedelta(minutes=30), id="gap"),
        pytest.param(
            timedelta(minutes=30), timedelta(hours=4), (), timedelta(hours=2), id="quiet: slower"
        ),
        pytest.param(timedelta(days=3), None, (), timedelta(hours=12), id="very quiet: max"),
        pytest.param(
            timedelta(minutes=1), None, (timedelta(hours=1),), timedelta(hours=1), id="ttl floor"
        ),
        pytest.param(None, None, (timedelta(days=365), None), timedelta(hours=12), id="ttl capped"),
    ],
)
def test_poll_interval(
    gap: timedelta | None,
    silence: timedelta | None,
    hints: tuple[timedelta | None, ...],
    expected: timedelta,
) -> None:
    now = datetime(2026, 11, 26, 8, tzinfo=UTC)
    last_new_at = None if silence is None else now - silence
    assert poll_interval(EVERY, gap, last_new_at, now, hints, **BOUNDS) == expected


def test_an_every_outside_the_bounds_widens_them_for_that_source() -> None:
    now = datetime(2026, 11, 26, 8, tzinfo=UTC)
    assert poll_interval(timedelta(seconds=30), None, None, now, (), **BOUNDS) == timedelta(
        seconds=30
    )
    assert poll_interval(timedelta(days=2), None, None, now, (), **BOUNDS) == timedelta(days=2)


# -- back-off ---------------------------------------------------------------------------


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap() -> None:
    rng = random.Random(7)
    every, cap = timedelta(minutes=10), timedelta(hours=24)
    delays = [backoff_delay(every, n, cap, rng=rng) for n in range(1, 12)]
    for n, delay in enumerate(delays[:5], start=1):
        base = every * 2 ** (n - 1)
        assert base * 0.8 <= delay <= base * 1.2
    assert all(d <= cap for d in delays) and delays[-1] >= cap * 0.8


def test_retry_after_wins_when_longer_and_is_capped() -> None:
    every, cap = timedelta(minutes=1), timedelta(hours=1)
    assert backoff_delay(every, 1, cap, retry_after=600) == timedelta(seconds=600)
    assert backoff_delay(every, 1, cap, retry_after=10**9) == cap


@pytest.mark.parametrize(
    ("failures", "expected"),
    [
        (1, timedelta(minutes=10)),
        (2, timedelta(minutes=20)),
        (4, timedelta(minutes=80)),
        (5, timedelta(hours=2)),
        (1_000, timedelta(hours=2)),
    ],
)
def test_backoff_without_jitter_doubles_from_the_interval_up_to_the_cap(
    failures: int, expected: timedelta
) -> None:
    assert backoff_delay(EVERY, failures, timedelta(hours=2), jitter=0.0) == expected


@pytest.mark.parametrize(
    ("attempts", "expected"),
    [
        (1, timedelta(minutes=1)),
        (2, timedelta(minutes=2)),
        (3, timedelta(minutes=4)),
        (9, timedelta(minutes=256)),
        (10, timedelta(hours=6)),
        (100, timedelta(hours=6)),
    ],
)
def test_an_outbox_retry_waits_a_minute_doubling_up_to_six_hours(
    attempts: int, expected: timedelta
) -> None:
    assert outbox_retry_delay(attempts) == expected
