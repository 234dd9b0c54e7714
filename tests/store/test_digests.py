"""Storage contract: subscribers, pending matches, the outbox and unsubscribes — the
bookkeeping behind "nothing lost, nothing twice"."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest

from feedsvc.errors import StorageError
from feedsvc.model import Match, MatchedEntry, OutboxMessage, StoredEntry
from feedsvc.store import SqlStorage, SubscriberSpec

from .conftest import FEED, LEASE, T0, make_entry

READER = "读者@example.com"
ANALYST = "analyst@example.com"
HOUR = timedelta(hours=1)
RAW = "Subject: =?utf-8?b?5paw6IO95rqQ?=\r\n\r\n深圳新能源 日报\r\n".encode()


async def match_entries(
    storage: SqlStorage, source: str, subscription: str, numbers: range, at: datetime
) -> list[int]:
    """Stores entries ``numbers`` and matches them to ``subscription`` at ``at``."""
    batch = [make_entry(n) for n in numbers]
    saved = await storage.save_entries(source, FEED, batch, at)
    entry_ids = [entry.entry_id for entry in saved]
    await storage.save_matches([Match(subscription, i, ("深圳",)) for i in entry_ids], at)
    return entry_ids


async def stored_entries(storage: SqlStorage, source: str, count: int) -> list[StoredEntry]:
    return await storage.save_entries(source, FEED, [make_entry(n) for n in range(count)], T0)


def pairs(pending: list[MatchedEntry]) -> list[tuple[str, int]]:
    return [(m.subscription, m.entry.entry_id) for m in pending]


@pytest.fixture
async def subscribed(storage: SqlStorage, source: str) -> SqlStorage:
    """READER follows 深圳 and 新能源 from T0, ANALYST 新能源 only."""
    await storage.sync_subscribers(
        [SubscriberSpec(READER, ("深圳", "新能源")), SubscriberSpec(ANALYST, ("新能源",))], T0
    )
    return storage


async def test_pending_matches_are_those_made_since_the_pair_started(
    subscribed: SqlStorage, source: str
) -> None:
    before = await match_entries(subscribed, source, "深圳", range(0, 2), T0 - HOUR)
    at_start = await match_entries(subscribed, source, "深圳", range(2, 3), T0)
    inside = await match_entries(subscribed, source, "新能源", range(3, 5), T0 + HOUR)
    too_late = await match_entries(subscribed, source, "深圳", range(5, 6), T0 + 3 * HOUR)

    pending = await subscribed.pending_matches(READER, T0 + 2 * HOUR)

    assert pairs(pending) == [("深圳", at_start[0]), ("新能源", inside[0]), ("新能源", inside[1])]
    assert before and too_late
    assert pending[0].terms == ("深圳",) and pending[0].matched_at == T0
    assert pending[0].entry.data == make_entry(2)
    assert pairs(await subscribed.pending_matches(ANALYST, T0 + 2 * HOUR)) == pairs(pending[1:])


async def test_pending_matches_are_oldest_first_then_by_entry_then_by_subscription(
    storage: SqlStorage, source: str
) -> None:
    await storage.sync_subscribers([SubscriberSpec(READER, ("solar", "battery"))], T0)
    a, b, c = (e.entry_id for e in await stored_entries(storage, source, 3))
    at_two = [("solar", b), ("battery", b), ("solar", a), ("battery", a)]
    await storage.save_matches([Match(s, e, ("光伏",)) for s, e in at_two], T0 + 2 * HOUR)
    await storage.save_matches([Match("solar", c, ("光伏",))], T0 + HOUR)

    pending = await storage.pending_matches(READER, T0 + 3 * HOUR)

    assert pairs(pending) == [
        ("solar", c),
        ("battery", a),
        ("solar", a),
        ("battery", b),
        ("solar", b),
    ]


async def test_a_subscription_added_later_starts_then(subscribed: SqlStorage, source: str) -> None:
    await match_entries(subscribed, source, "光伏", range(0, 1), T0)
    await subscribed.sync_subscribers([SubscriberSpec(READER, ("深圳", "光伏"))], T0 + HOUR)
    later = await match_entries(subscribed, source, "光伏", range(1, 2), T0 + 2 * HOUR)

    assert pairs(await subscribed.pending_matches(READER, T0 + 3 * HOUR)) == [("光伏", later[0])]


async def test_a_subscription_removed_from_the_config_stops_and_restarts_afresh(
    subscribed: SqlStorage, source: str
) -> None:
    await match_entries(subscribed, source, "新能源", range(0, 1), T0 + HOUR)
    await subscribed.sync_subscribers([SubscriberSpec(READER, ("深圳",))], T0 + 2 * HOUR)
    assert await subscribed.pending_matches(READER, T0 + 3 * HOUR) == []
    assert await subscribed.pending_matches(ANALYST, T0 + 3 * HOUR) == []

    await subscribed.sync_subscribers([SubscriberSpec(READER, ("深圳", "新能源"))], T0 + 4 * HOUR)
    assert await subscribed.pending_matches(READER, T0 + 5 * HOUR) == []


async def test_an_enqueued_digest_delivers_its_matches_once(
    subscribed: SqlStorage, source: str
) -> None:
    await match_entries(subscribed, source, "新能源", range(0, 3), T0 + HOUR)
    pending = await subscribed.pending_matches(READER, T0 + HOUR)

    outbox_id = await subscribed.enqueue_digest(READER, "<d1@feedsvc>", RAW, pending, T0 + HOUR)

    assert outbox_id is not None
    assert await subscribed.pending_matches(READER, T0 + 2 * HOUR) == []
    assert len(await subscribed.pending_matches(ANALYST, T0 + 2 * HOUR)) == 3
    assert await subscribed.last_digest_at(READER) == T0 + HOUR
    assert await subscribed.last_digest_at(ANALYST) is None


async def test_a_digest_is_never_stored_twice(subscribed: SqlStorage, source: str) -> None:
    await match_entries(subscribed, source, "新能源", range(0, 2), T0 + HOUR)
    pending = await subscribed.pending_matches(READER, T0 + HOUR)
    first = await subscribed.enqueue_digest(READER, "<d1@feedsvc>", RAW, pending[:1], T0 + HOUR)

    second = await subscribed.enqueue_digest(READER, "<d1@feedsvc>", RAW, pending, T0 + HOUR)

    assert (first, second) == (first, None)
    assert pairs(await subscribed.pending_matches(READER, T0 + HOUR)) == pairs(pending[1:])
    assert await subscribed.outbox_counts() == {"pending": 1, "sent": 0, "failed": 0}


async def test_unsubscribed_pairs_are_not_pending_until_resubscribed(
    subscribed: SqlStorage, source: str
) -> None:
    await match_entries(subscribed, source, "深圳", range(0, 1), T0 + HOUR)
    await match_entries(subscribed, source, "新能源", range(1, 2), T0 + HOUR)

    assert await subscribed.unsubscribe(READER, "深圳", T0 + HOUR) is True
    assert await subscribed.unsubscribe(READER, "深圳", T0 + 2 * HOUR) is False
    assert await subscribed.unsubscribed() == {(READER, "深圳")}
    assert [m.subscription for m in await subscribed.pending_matches(READER, T0 + HOUR)] == [
        "新能源"
    ]

    await subscribed.resubscribe(READER, "深圳", T0 + 2 * HOUR)
    assert await subscribed.unsubscribed() == set()
    # What matched while the subscriber was away is never sent; what matches after is.
    assert [m.subscription for m in await subscribed.pending_matches(READER, T0 + 3 * HOUR)] == [
        "新能源"
    ]
    await match_entries(subscribed, source, "深圳", range(2, 3), T0 + 3 * HOUR)
    later = await subscribed.pending_matches(READER, T0 + 3 * HOUR)
    assert sorted(m.subscription for m in later) == ["新能源", "深圳"]


async def test_unsubscribing_before_subscribing_is_recorded(subscribed: SqlStorage) -> None:
    assert await subscribed.unsubscribe("新人@example.com", "光伏", T0) is True
    assert await subscribed.unsubscribed() == {("新人@example.com", "光伏")}


async def enqueue(storage: SqlStorage, count: int) -> list[int]:
    ids = []
    for n in range(count):
        outbox_id = await storage.enqueue_digest(READER, f"<d{n}@feedsvc>", RAW, [], T0 + n * HOUR)
        assert outbox_id is not None
        ids.append(outbox_id)
    return ids


def claim_ids(claimed: list[OutboxMessage]) -> list[int]:
    return [message.id for message in claimed]


async def test_claimed_messages_carry_the_digest_and_count_attempts(storage: SqlStorage) -> None:
    [outbox_id] = await enqueue(storage, 1)

    [message] = await storage.claim_outbox(T0, "node-1", T0 + LEASE, 10)

    assert message == OutboxMessage(outbox_id, READER, "<d0@feedsvc>", RAW, 1, T0)
    assert await storage.claim_outbox(T0, "node-2", T0 + LEASE, 10) == []
    [again] = await storage.claim_outbox(T0 + LEASE, "node-2", T0 + 2 * LEASE, 10)
    assert again.attempts == 2


async def test_claim_outbox_takes_due_messages_oldest_first(storage: SqlStorage) -> None:
    ids = await enqueue(storage, 3)

    first_two = await storage.claim_outbox(T0 + 2 * HOUR, "node-1", T0 + 3 * HOUR, 2)
    not_due = await storage.claim_outbox(T0 + HOUR, "node-2", T0 + 2 * HOUR, 10)

    assert (claim_ids(first_two), not_due) == (ids[:2], [])


async def test_claim_outbox_takes_the_first_enqueued_even_when_a_later_one_fell_due_first(
    storage: SqlStorage,
) -> None:
    ids = await enqueue(storage, 3)
    await storage.claim_outbox(T0, "node-1", T0 + LEASE, 1)
    await storage.mark_failed(ids[0], T0, "451 稍后再试", permanent=False, retry_at=T0 + 3 * HOUR)

    claimed = await storage.claim_outbox(T0 + 4 * HOUR, "node-1", T0 + 5 * HOUR, 2)

    assert claim_ids(claimed) == ids[:2]


async def test_a_sent_message_is_done(storage: SqlStorage) -> None:
    [outbox_id] = await enqueue(storage, 1)
    await storage.claim_outbox(T0, "node-1", T0 + LEASE, 10)

    await storage.mark_sent(outbox_id, T0 + timedelta(seconds=5))

    assert await storage.claim_outbox(T0 + HOUR, "node-2", T0 + 2 * HOUR, 10) == []
    assert await storage.outbox_counts() == {"pending": 0, "sent": 1, "failed": 0}


async def test_a_failed_message_is_retried_at_the_given_time(storage: SqlStorage) -> None:
    [outbox_id] = await enqueue(storage, 1)
    await storage.claim_outbox(T0, "node-1", T0 + LEASE, 10)

    await storage.mark_failed(outbox_id, T0, "451 稍后再试", permanent=False, retry_at=T0 + HOUR)

    assert await storage.claim_outbox(T0 + HOUR - timedelta(seconds=1), "n", T0 + HOUR, 10) == []
    assert claim_ids(await storage.claim_outbox(T0 + HOUR, "n", T0 + 2 * HOUR, 10)) == [outbox_id]
    assert await storage.outbox_counts() == {"pending": 1, "sent": 0, "failed": 0}


async def test_a_permanently_failed_message_is_never_retried(storage: SqlStorage) -> None:
    [outbox_id, other_id] = await enqueue(storage, 2)
    await storage.claim_outbox(T0, "node-1", T0 + LEASE, 1)

    await storage.mark_failed(outbox_id, T0, "550 无此用户", permanent=True, retry_at=T0)

    retried = await storage.claim_outbox(T0 + 9 * HOUR, "n", T0 + 10 * HOUR, 10)
    assert claim_ids(retried) == [other_id]
    assert await storage.outbox_counts() == {"pending": 1, "sent": 0, "failed": 1}


async def test_delivery_problems_show_the_server_s_reply_newest_first(
    storage: SqlStorage,
) -> None:
    [refused, delayed, fine] = await enqueue(storage, 3)
    await storage.claim_outbox(T0, "node-1", T0 + LEASE, 10)
    await storage.mark_failed(refused, T0, "550 无此用户", permanent=True, retry_at=T0)
    await storage.mark_failed(
        delayed, T0 + HOUR, "451 稍后再试", permanent=False, retry_at=T0 + 2 * HOUR
    )
    await storage.mark_sent(fine, T0)

    problems = await storage.delivery_problems(10)
    assert [(p.outbox_id, p.error, p.permanent) for p in problems] == [
        (delayed, "451 稍后再试", False),
        (refused, "550 无此用户", True),
    ]
    assert problems[0].at == T0 + HOUR and problems[0].next_attempt == T0 + 2 * HOUR
    await storage.claim_outbox(T0 + 2 * HOUR, "node-1", T0 + 3 * HOUR, 10)
    await storage.mark_sent(delayed, T0 + 2 * HOUR)
    assert [p.outbox_id for p in await storage.delivery_problems(10)] == [refused]


async def test_delivery_problems_of_one_instant_show_the_last_enqueued_first(
    storage: SqlStorage,
) -> None:
    ids = await enqueue(storage, 3)
    await storage.claim_outbox(T0 + 2 * HOUR, "node-1", T0 + 3 * HOUR, 10)
    for outbox_id in ids:
        await storage.mark_failed(outbox_id, T0, "421 忙", permanent=False, retry_at=T0 + HOUR)

    assert [p.outbox_id for p in await storage.delivery_problems(2)] == ids[:0:-1]


async def test_marking_an_unknown_message_is_an_error(storage: SqlStorage) -> None:
    with pytest.raises(KeyError):
        await storage.mark_sent(424242, T0)


async def test_two_nodes_never_claim_the_same_message(
    storage: SqlStorage, other_node: SqlStorage
) -> None:
    ids = await enqueue(storage, 30)
    now = T0 + 30 * HOUR

    claimed: list[int] = []
    for _ in range(5):
        rounds = await asyncio.gather(
            *(
                node.claim_outbox(now, owner, now + LEASE, 2)
                for node, owner in [(storage, "a"), (other_node, "b")] * 2
            )
        )
        claimed.extend(message.id for messages in rounds for message in messages)

    assert sorted(claimed) == ids


async def test_two_nodes_syncing_the_same_subscribers_at_once(
    storage: SqlStorage, other_node: SqlStorage, source: str
) -> None:
    await other_node.outbox_counts()  # both nodes connected: the syncs really overlap
    specs: list[SubscriberSpec] = []
    for round_ in range(3):
        specs += [SubscriberSpec(f"读者{round_}{i}@example.com", ("深圳",)) for i in range(5)]

        await asyncio.gather(
            storage.sync_subscribers(specs, T0), other_node.sync_subscribers(specs, T0)
        )

    [entry_id] = await match_entries(storage, source, "深圳", range(0, 1), T0)
    assert pairs(await other_node.pending_matches("读者24@example.com", T0)) == [("深圳", entry_id)]


async def test_the_database_refuses_a_second_digest_with_a_delivered_pair(
    subscribed: SqlStorage, source: str
) -> None:
    await match_entries(subscribed, source, "新能源", range(0, 2), T0 + HOUR)
    pending = await subscribed.pending_matches(READER, T0 + HOUR)
    await subscribed.enqueue_digest(READER, "<window-1@feedsvc>", RAW, pending[:1], T0 + HOUR)

    with pytest.raises(StorageError):
        await subscribed.enqueue_digest(READER, "<window-2@feedsvc>", RAW, pending, T0 + HOUR)

    assert await subscribed.outbox_counts() == {"pending": 1, "sent": 0, "failed": 0}
    assert pairs(await subscribed.pending_matches(READER, T0 + HOUR)) == pairs(pending[1:])


async def test_delivered_entries_are_those_in_the_subscriber_s_recent_digests(
    subscribed: SqlStorage, source: str
) -> None:
    early = await match_entries(subscribed, source, "深圳", range(0, 2), T0 + HOUR)
    pending = await subscribed.pending_matches(READER, T0 + HOUR)
    await subscribed.enqueue_digest(READER, "<early@feedsvc>", RAW, pending, T0 + HOUR)
    late = await match_entries(subscribed, source, "新能源", range(2, 3), T0 + 3 * HOUR)
    pending = await subscribed.pending_matches(READER, T0 + 3 * HOUR)
    await subscribed.enqueue_digest(READER, "<late@feedsvc>", RAW, pending, T0 + 3 * HOUR)

    everything = await subscribed.delivered_entries(READER, T0)
    assert [e.entry_id for e in everything] == early + late
    assert everything[0].data == make_entry(0)
    recent = await subscribed.delivered_entries(READER, T0 + 2 * HOUR)
    assert [e.entry_id for e in recent] == late
    assert await subscribed.delivered_entries("别人@example.com", T0) == []


async def test_delivered_entries_come_in_the_order_they_were_stored(
    subscribed: SqlStorage, source: str
) -> None:
    first, second = await stored_entries(subscribed, source, 2)
    await subscribed.save_matches([Match("深圳", second.entry_id, ("深圳",))], T0 + HOUR)
    pending = await subscribed.pending_matches(READER, T0 + HOUR)
    await subscribed.enqueue_digest(READER, "<second@feedsvc>", RAW, pending, T0 + HOUR)
    await subscribed.save_matches([Match("深圳", first.entry_id, ("深圳",))], T0 + 2 * HOUR)
    pending = await subscribed.pending_matches(READER, T0 + 2 * HOUR)
    await subscribed.enqueue_digest(READER, "<first@feedsvc>", RAW, pending, T0 + 2 * HOUR)

    assert await subscribed.delivered_entries(READER, T0) == [first, second]


async def test_a_pair_given_twice_is_delivered_once(subscribed: SqlStorage, source: str) -> None:
    await match_entries(subscribed, source, "深圳", range(0, 2), T0 + HOUR)
    pending = await subscribed.pending_matches(READER, T0 + HOUR)

    outbox_id = await subscribed.enqueue_digest(
        READER, "<twice@feedsvc>", RAW, pending + pending[:1], T0 + HOUR
    )

    assert outbox_id is not None
    assert len(await subscribed.delivered_entries(READER, T0)) == 2
    assert await subscribed.pending_matches(READER, T0 + 2 * HOUR) == []
