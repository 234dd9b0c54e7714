"""Digest windows from schedules (across DST changes) and the polling back-off."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from feedsvc.pipeline import backoff_delay, digest_message_id, latest_fire_time
from feedsvc.schedule import schedule_trigger

LONDON = ZoneInfo("Europe/London")
SHANGHAI = ZoneInfo("Asia/Shanghai")


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


def test_message_ids_differ_per_window_and_subscriber() -> None:
    t = datetime(2026, 11, 26, tzinfo=UTC)
    ids = {
        digest_message_id("a@example.com", t, "n@news.example"),
        digest_message_id("b@example.com", t, "n@news.example"),
        digest_message_id("a@example.com", t + timedelta(days=1), "n@news.example"),
    }
    assert len(ids) == 3 and all(i.endswith("@news.example>") for i in ids)


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
