"""Storage contract: sources, their leases and their health."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from feedsvc.model import SourceForUpdate
from feedsvc.store import FetchOutcome, SourceSpec, SqlStorage

from .conftest import FEED, LEASE, T0, make_entry

FINEWS = SourceSpec("finews", "https://finews.example.com/feed.xml")
EMNEWS = SourceSpec("emnews", "https://emnews.example.com/rss")
LATER = T0 + timedelta(minutes=10)
MINUTE = timedelta(minutes=1)


def ok(*, at: timedelta = timedelta(0), **fields: Any) -> FetchOutcome:
    """A successful poll at T0 + ``at``, next due at LATER."""
    return FetchOutcome(at=T0 + at, next_poll=LATER, ok=True, **fields)


def failed(kind: str = "timeout", **fields: Any) -> FetchOutcome:
    """A failed poll at T0, retried at LATER."""
    return FetchOutcome(
        at=T0, next_poll=LATER, ok=False, error_kind=kind, error="读取超时", **fields
    )


def names(claimed: list[SourceForUpdate]) -> list[str]:
    return [source.name for source in claimed]


async def claim_names(
    storage: SqlStorage, owner: str = "node-1", at: timedelta = timedelta(0), limit: int = 100
) -> list[str]:
    now = T0 + at
    return names(await storage.claim_due_sources(now, owner, now + LEASE, limit))


async def test_new_sources_are_due_at_once(storage: SqlStorage) -> None:
    await storage.sync_sources([FINEWS, EMNEWS], T0)

    claimed = await storage.claim_due_sources(T0, "node-1", T0 + LEASE, 10)

    assert sorted(claimed, key=lambda s: s.name) == [
        SourceForUpdate("emnews", EMNEWS.url),
        SourceForUpdate("finews", FINEWS.url),
    ]


async def test_claim_respects_the_limit_and_due_time(storage: SqlStorage) -> None:
    await storage.sync_sources([FINEWS, EMNEWS], T0)

    assert len(await storage.claim_due_sources(T0, "node-1", T0 + LEASE, 1)) == 1
    assert await claim_names(storage, at=-timedelta(seconds=1)) == []


async def test_a_limited_claim_takes_the_sources_added_first_among_equally_due(
    storage: SqlStorage,
) -> None:
    await storage.sync_sources([SourceSpec(n, f"https://{n}.example.com/") for n in "cab"], T0)

    assert await claim_names(storage, limit=2) == ["a", "c"]


async def test_claims_take_the_longest_due_and_return_them_by_next_poll_then_name(
    storage: SqlStorage,
) -> None:
    due_in = {"a": 3, "b": 1, "c": 2, "d": 1, "e": 4}
    await storage.sync_sources([SourceSpec(n, f"https://{n}.example.com/") for n in due_in], T0)
    await storage.record_fetches(
        {n: FetchOutcome(at=T0, next_poll=T0 + m * MINUTE, ok=True) for n, m in due_in.items()}
    )

    claimed = await claim_names(storage, at=5 * MINUTE, limit=3)
    named = await storage.claim_sources(["e", "a"], T0, "cli", T0 + LEASE)

    assert (claimed, names(named)) == (["b", "d", "c"], ["a", "e"])


async def test_a_claimed_source_is_held_until_its_lease_expires(storage: SqlStorage) -> None:
    await storage.sync_sources([FINEWS], T0)
    assert await claim_names(storage, "node-1") == ["finews"]

    held = await claim_names(storage, "node-2", at=LEASE - timedelta(seconds=1))
    expired = await claim_names(storage, "node-2", at=LEASE)

    assert (held, expired) == ([], ["finews"])


async def test_record_fetch_releases_the_lease_and_sets_the_next_poll(storage: SqlStorage) -> None:
    await storage.sync_sources([FINEWS], T0)
    await claim_names(storage)

    await storage.record_fetch("finews", ok(etag='"v1"', body_hash="abc"))

    assert await claim_names(storage, "node-2", at=timedelta(minutes=9)) == []
    [again] = await storage.claim_due_sources(LATER, "node-2", LATER + LEASE, 10)
    assert again == SourceForUpdate("finews", FINEWS.url, etag='"v1"', body_hash="abc")


async def test_failures_count_up_and_success_resets_them(storage: SqlStorage) -> None:
    await storage.sync_sources([FINEWS, EMNEWS], T0)
    await storage.record_fetch("finews", failed())
    await storage.record_fetch("finews", failed("http"))

    [failing, healthy] = await storage.source_statuses()
    [claimed] = [
        s for s in await storage.claim_due_sources(LATER, "n", LATER, 10) if s.name == "finews"
    ]

    assert (failing.name, failing.consecutive_failures, claimed.consecutive_failures) == (
        "finews",
        2,
        2,
    )
    assert (failing.last_error_kind, failing.last_error, failing.last_error_at) == (
        "http",
        "读取超时",
        T0,
    )
    assert failing.last_success is None
    assert healthy.name == "emnews"

    await storage.record_fetch("finews", ok(at=timedelta(minutes=1)))
    statuses = {s.name: s for s in await storage.source_statuses()}
    assert statuses["finews"].consecutive_failures == 0
    assert statuses["finews"].last_success == T0 + timedelta(minutes=1)


async def test_statuses_list_failing_sources_first_then_by_name(storage: SqlStorage) -> None:
    specs = [SourceSpec(name, f"https://{name}.example.com/") for name in ("b", "d", "a", "c")]
    await storage.sync_sources(specs, T0)
    await storage.record_fetch("d", failed())
    await storage.record_fetch("c", failed())

    assert [s.name for s in await storage.source_statuses()] == ["c", "d", "a", "b"]


async def test_statuses_count_entries(storage: SqlStorage) -> None:
    await storage.sync_sources([FINEWS, EMNEWS], T0)
    await storage.save_entries("finews", FEED, [make_entry(1), make_entry(2)], T0)

    counts = {s.name: s.entry_count for s in await storage.source_statuses()}

    assert counts == {"finews": 2, "emnews": 0}


async def test_not_modified_keeps_validators_a_new_body_replaces_them(storage: SqlStorage) -> None:
    await storage.sync_sources([FINEWS], T0)
    await storage.record_fetch(
        "finews", ok(etag='"v1"', last_modified="Sun, 01 Mar 2026 08:00:00 GMT", body_hash="h1")
    )

    await storage.record_fetch("finews", ok(not_modified=True, etag='"v2"'))
    [after_304] = await storage.claim_sources(["finews"], T0, "n", T0 + LEASE)
    await storage.record_fetch("finews", ok(body_hash="h2"))
    [after_200] = await storage.claim_sources(["finews"], T0, "n", T0 + LEASE)

    assert after_304 == SourceForUpdate(
        "finews", FINEWS.url, '"v2"', "Sun, 01 Mar 2026 08:00:00 GMT", "h1"
    )
    assert after_200 == SourceForUpdate("finews", FINEWS.url, None, None, "h2")


async def test_a_permanent_redirect_moves_the_source_until_the_config_changes(
    storage: SqlStorage,
) -> None:
    await storage.sync_sources([FINEWS], T0)
    await storage.record_fetch("finews", ok(moved_to="https://finews.example.com/atom", etag="e"))
    await storage.sync_sources([FINEWS], T0)

    [moved] = await storage.claim_sources(["finews"], T0, "n", T0)
    new_config = SourceSpec("finews", "https://finews.example.org/feed.xml")
    await storage.sync_sources([new_config], LATER)
    [replaced] = await storage.claim_due_sources(LATER, "n", LATER, 10)

    assert moved.url == "https://finews.example.com/atom"
    assert replaced == SourceForUpdate("finews", new_config.url)


async def test_a_gone_source_stays_disabled_until_its_url_changes(storage: SqlStorage) -> None:
    await storage.sync_sources([FINEWS], T0)
    await storage.record_fetch("finews", failed("http", disable=True))
    await storage.sync_sources([FINEWS], T0)

    [status] = await storage.source_statuses()
    assert status.enabled is False
    assert await claim_names(storage, at=timedelta(hours=1)) == []
    assert await storage.claim_sources(["finews"], T0, "n", T0 + LEASE) == []

    await storage.sync_sources([SourceSpec("finews", "https://finews.example.org/")], LATER)
    [status] = await storage.source_statuses()
    assert status.enabled is True
    assert await claim_names(storage, at=timedelta(minutes=10)) == ["finews"]


async def test_sources_left_out_of_the_config_are_disabled_and_keep_entries(
    storage: SqlStorage,
) -> None:
    await storage.sync_sources([FINEWS, EMNEWS], T0)
    await storage.save_entries("finews", FEED, [make_entry(1)], T0)

    await storage.sync_sources([EMNEWS], T0)

    statuses = {s.name: s for s in await storage.source_statuses()}
    assert (statuses["finews"].enabled, statuses["finews"].entry_count) == (False, 1)
    assert await claim_names(storage) == ["emnews"]

    await storage.sync_sources([FINEWS, EMNEWS], T0)
    assert sorted(await claim_names(storage, "node-2", at=LEASE)) == ["emnews", "finews"]


async def test_a_source_disabled_in_the_config_is_not_claimed(storage: SqlStorage) -> None:
    await storage.sync_sources([SourceSpec(FINEWS.name, FINEWS.url, enabled=False)], T0)

    assert await claim_names(storage) == []
    [status] = await storage.source_statuses()
    assert status.enabled is False


async def test_claim_sources_claims_named_sources_that_are_not_due(storage: SqlStorage) -> None:
    await storage.sync_sources([FINEWS, EMNEWS], T0)
    await storage.record_fetch("finews", ok())
    await storage.record_fetch("emnews", ok())

    claimed = await storage.claim_sources(["finews", "unknown"], T0, "cli", T0 + LEASE)

    assert names(claimed) == ["finews"]
    assert await storage.claim_sources(["finews"], T0, "node-1", T0 + LEASE) == []


async def test_record_fetch_of_an_unknown_source_is_an_error(storage: SqlStorage) -> None:
    with pytest.raises(KeyError):
        await storage.record_fetch("未知", ok())


async def test_two_nodes_never_claim_the_same_source(
    storage: SqlStorage, other_node: SqlStorage
) -> None:
    specs = [SourceSpec(f"源{i:02d}", f"https://example.com/{i}.xml") for i in range(40)]
    await storage.sync_sources(specs, T0)

    claims: list[list[str]] = []
    for _ in range(6):
        rounds = await asyncio.gather(
            *(
                node.claim_due_sources(T0, owner, T0 + LEASE, 3)
                for node, owner in [(storage, "a"), (other_node, "b")] * 2
            )
        )
        claims.extend([names(claimed) for claimed in rounds])

    claimed_names = [name for claim in claims for name in claim]
    assert len(claimed_names) == len(set(claimed_names)) == 40


async def test_two_nodes_syncing_the_same_config_at_once(
    storage: SqlStorage, other_node: SqlStorage
) -> None:
    await other_node.source_statuses()  # both nodes connected: the syncs really overlap
    specs: list[SourceSpec] = []
    for round_ in range(3):
        specs += [SourceSpec(f"源{round_}-{i}", f"https://example.com/{i}") for i in range(5)]

        await asyncio.gather(storage.sync_sources(specs, T0), other_node.sync_sources(specs, T0))

    assert sorted(s.name for s in await storage.source_statuses()) == sorted(s.name for s in specs)


async def test_adaptive_polling_state_is_kept_until_a_poll_changes_it(
    storage: SqlStorage,
) -> None:
    await storage.sync_sources([FINEWS], T0)
    gap, ttl = timedelta(minutes=3), timedelta(hours=1)
    await storage.record_fetch("finews", ok(last_new_at=T0, publish_gap=gap, feed_min_interval=ttl))
    await storage.record_fetch("finews", ok(not_modified=True, at=timedelta(minutes=5)))
    [after_304] = await storage.claim_sources(["finews"], LATER, "n", LATER)
    await storage.record_fetch("finews", failed())
    [after_error] = await storage.claim_sources(["finews"], LATER, "n", LATER)
    # A parsed success replaces the feed's hint, also with "none" (it dropped <ttl>).
    await storage.record_fetch("finews", ok(body_hash="h2"))
    [after_200] = await storage.claim_sources(["finews"], LATER, "n", LATER)

    for seen in (after_304, after_error):
        assert (seen.last_new_at, seen.publish_gap, seen.feed_min_interval) == (T0, gap, ttl)
    assert (after_200.last_new_at, after_200.publish_gap) == (T0, gap)
    assert after_200.feed_min_interval is None


async def test_record_fetches_records_several_sources_in_one_call(storage: SqlStorage) -> None:
    await storage.sync_sources([FINEWS, EMNEWS], T0)
    await storage.claim_due_sources(T0, "node-1", T0 + LEASE, 10)

    await storage.record_fetches({"finews": ok(etag='"a"'), "emnews": failed("http")})

    statuses = {s.name: s for s in await storage.source_statuses()}
    assert statuses["finews"].last_success == T0 and statuses["finews"].consecutive_failures == 0
    assert statuses["emnews"].last_error_kind == "http"
    assert statuses["emnews"].consecutive_failures == 1
    assert await claim_names(storage, "node-2", at=timedelta(minutes=10)) == ["emnews", "finews"]


async def test_record_fetches_records_a_mixed_batch_each_by_its_own_outcome(
    storage: SqlStorage,
) -> None:
    specs = [SourceSpec(f"s{n}", f"https://s{n}.example.com/feed") for n in range(5)]
    await storage.sync_sources(specs, T0)
    await storage.record_fetches({"s0": failed("http"), "s1": failed("dns")})

    await storage.record_fetches(
        {
            "s0": failed("http"),
            "s1": ok(etag='"b"'),
            "s2": failed("timeout"),
            "s3": ok(not_modified=True),
            "s4": ok(etag='"a"', last_modified="Sun, 01 Mar 2026 08:00:00 GMT"),
        }
    )

    statuses = {s.name: s for s in await storage.source_statuses()}
    assert [statuses[f"s{n}"].consecutive_failures for n in range(5)] == [2, 0, 1, 0, 0]
    assert statuses["s0"].last_error_kind == "http" and statuses["s2"].last_error_kind == "timeout"
    assert statuses["s1"].last_error_kind == "dns"  # the last error stays on record
    assert [statuses[f"s{n}"].last_success for n in range(5)] == [None, T0, None, T0, T0]
    claimed = {s.name: s for s in await storage.claim_due_sources(LATER, "n", LATER + LEASE, 9)}
    assert (claimed["s1"].etag, claimed["s4"].etag, claimed["s3"].etag) == ('"b"', '"a"', None)
    assert claimed["s4"].last_modified == "Sun, 01 Mar 2026 08:00:00 GMT"


async def test_record_fetches_with_an_unknown_source_records_nothing(
    storage: SqlStorage,
) -> None:
    await storage.sync_sources([FINEWS], T0)

    with pytest.raises(KeyError, match="未知"):
        await storage.record_fetches({"finews": failed(), "未知": ok()})

    [status] = await storage.source_statuses()
    assert status.consecutive_failures == 0 and status.last_error is None


async def test_status_shows_where_a_permanent_redirect_moved_the_source(
    storage: SqlStorage,
) -> None:
    await storage.sync_sources([FINEWS, EMNEWS], T0)
    await storage.record_fetch("finews", ok(moved_to="https://finews.example.com/新/atom"))

    statuses = {s.name: s for s in await storage.source_statuses()}

    assert statuses["finews"].url == "https://finews.example.com/新/atom"
    assert statuses["finews"].moved_from == FINEWS.url
    assert statuses["emnews"].moved_from is None


async def test_a_new_config_url_forgets_the_adaptive_polling_state(storage: SqlStorage) -> None:
    await storage.sync_sources([FINEWS], T0)
    await storage.record_fetch(
        "finews",
        ok(last_new_at=T0, publish_gap=timedelta(minutes=3), feed_min_interval=timedelta(hours=1)),
    )

    await storage.sync_sources([SourceSpec("finews", "https://finews.example.org/rss")], LATER)
    [moved] = await storage.claim_due_sources(LATER, "n", LATER + LEASE, 10)

    assert moved == SourceForUpdate("finews", "https://finews.example.org/rss")
