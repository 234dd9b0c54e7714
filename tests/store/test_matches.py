"""Storage contract: matches and the subscription feeds built from them."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from feedsvc.model import Match, StoredEntry
from feedsvc.store import SqlStorage

from .conftest import FEED, T0, make_entry

LATER = T0 + timedelta(minutes=10)


async def stored_entries(storage: SqlStorage, source: str, count: int) -> list[StoredEntry]:
    return await storage.save_entries(source, FEED, [make_entry(n) for n in range(count)], T0)


async def test_save_matches_counts_new_pairs_and_keeps_the_first_match_time(
    storage: SqlStorage, source: str
) -> None:
    a, b = await stored_entries(storage, source, 2)
    assert await storage.save_matches([Match("新能源", a.entry_id, ("新能源",))], T0) == 1

    again = [Match("新能源", a.entry_id, ("光伏", "储能")), Match("新能源", b.entry_id, ("光伏",))]
    assert await storage.save_matches(again, LATER) == 1

    by_entry = {m.entry.entry_id: m for m in await storage.recent_matches("新能源", 10)}
    assert (by_entry[a.entry_id].terms, by_entry[a.entry_id].matched_at) == (("光伏", "储能"), T0)
    assert (by_entry[b.entry_id].entry, by_entry[b.entry_id].matched_at) == (b, LATER)


async def test_a_pair_given_twice_counts_once_with_its_last_terms(
    storage: SqlStorage, source: str
) -> None:
    [a] = await stored_entries(storage, source, 1)
    twice = [Match("新能源", a.entry_id, ("光伏",)), Match("新能源", a.entry_id, ("储能",))]
    assert await storage.save_matches(twice, T0) == 1
    [first] = await storage.recent_matches("新能源", 10)

    again = [Match("新能源", a.entry_id, ("电池",)), Match("新能源", a.entry_id, ("风电",))]
    assert await storage.save_matches(again, LATER) == 0
    [second] = await storage.recent_matches("新能源", 10)

    assert (first.terms, second.terms) == (("储能",), ("风电",))


async def test_save_no_matches(storage: SqlStorage) -> None:
    assert await storage.save_matches([], T0) == 0


async def test_delete_matches_forgets_only_the_named_pairs(
    storage: SqlStorage, source: str
) -> None:
    a, b = await stored_entries(storage, source, 2)
    await storage.save_matches(
        [
            Match("新能源", a.entry_id, ("光伏",)),
            Match("新能源", b.entry_id, ("光伏",)),
            Match("深圳", a.entry_id, ("深圳",)),
        ],
        T0,
    )

    await storage.delete_matches("新能源", [a.entry_id])

    assert [m.entry.entry_id for m in await storage.recent_matches("新能源", 10)] == [b.entry_id]
    assert [m.entry.entry_id for m in await storage.recent_matches("深圳", 10)] == [a.entry_id]


async def test_recent_matches_are_newest_entry_first(storage: SqlStorage, source: str) -> None:
    # make_entry(n) is published n hours before T0, entry 0 a minute after; entry 3 was
    # updated after entries 1 and 2, which does not move it: an entry's time is its
    # publication; entry 4 carries no date (its first-seen time counts).
    batch = (
        [make_entry(0, published=T0 + timedelta(minutes=1))]
        + [make_entry(n) for n in range(1, 3)]
        + [
            make_entry(3, updated=T0 - timedelta(minutes=30)),
            make_entry(4, published=None),
        ]
    )
    saved = await storage.save_entries(source, FEED, batch, T0)
    await storage.save_matches([Match("深圳", e.entry_id, ("深圳",)) for e in saved], T0)

    recent = await storage.recent_matches("深圳", 4)

    assert [m.entry.data.key for m in recent] == [batch[n].key for n in (0, 4, 1, 2)]


async def test_an_entry_without_publication_time_counts_its_update_time(
    storage: SqlStorage, source: str
) -> None:
    batch = [
        make_entry(1),
        make_entry(2, published=None, updated=T0 - timedelta(minutes=90)),
        make_entry(3, published=None, updated=None),
    ]
    saved = await storage.save_entries(source, FEED, batch, T0 - timedelta(hours=2))
    await storage.save_matches([Match("深圳", e.entry_id, ("深圳",)) for e in saved], T0)

    recent = await storage.recent_matches("深圳", 3)

    assert [m.entry.data.key for m in recent] == [batch[n].key for n in (0, 1, 2)]


async def test_recent_matches_of_the_same_time_are_last_seen_then_last_stored_first(
    storage: SqlStorage, source: str
) -> None:
    same_time = T0 - timedelta(hours=5)
    [first] = await storage.save_entries(source, FEED, [make_entry(1, published=same_time)], T0)
    later = [make_entry(n, published=same_time) for n in (2, 3)]
    [second, third] = await storage.save_entries(source, FEED, later, LATER)
    stored = [first, second, third]
    await storage.save_matches([Match("深圳", e.entry_id, ("深圳",)) for e in stored], LATER)

    recent = await storage.recent_matches("深圳", 3)

    assert [m.entry for m in recent] == [third, second, first]


async def test_latest_match_change_is_the_newest_match_or_entry_change(
    storage: SqlStorage, source: str
) -> None:
    assert await storage.latest_match_change("深圳") is None
    [entry] = await stored_entries(storage, source, 1)
    await storage.save_matches([Match("深圳", entry.entry_id, ("深圳",))], T0)
    assert await storage.latest_match_change("深圳") == T0

    edited = replace(entry.data, content_hash="edited")
    await storage.save_entries(source, FEED, [edited], LATER)

    assert await storage.latest_match_change("深圳") == LATER
    assert await storage.latest_match_change("新能源") is None
