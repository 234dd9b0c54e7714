"""Storage contract: saving a poll's entries (new, unchanged, changed, regenerated ids)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import event

from feedsvc.model import FeedInfo, StoredEntry
from feedsvc.store import SourceSpec, SqlStorage

from .conftest import FEED, T0, make_entry

LATER = T0 + timedelta(minutes=10)


def ids(stored: list[StoredEntry]) -> list[int]:
    return [entry.entry_id for entry in stored]


@contextmanager
def count_statements(storage: SqlStorage) -> Iterator[list[str]]:
    """Records every SQL statement the storage sends (BEGIN included, COMMIT excluded)."""
    statements: list[str] = []

    def record(*args: object) -> None:
        statements.append(str(args[2]))

    event.listen(storage.engine.sync_engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(storage.engine.sync_engine, "before_cursor_execute", record)


async def test_new_entries_are_returned_in_feed_order_and_round_trip_exactly(
    storage: SqlStorage, source: str
) -> None:
    batch = [
        make_entry(1, title="  “臺灣”半導體 𠮷野家 — Ａｉ芯片  ", updated=T0, link=None),
        make_entry(2, published=None, authors=(), categories=()),
        make_entry(3, content="", summary="<b>仅摘要</b>", authors=("王五",)),
    ]

    saved = await storage.save_entries(source, FEED, batch, T0)

    assert [entry.data for entry in saved] == batch
    assert all(entry.feed == FEED and entry.source == source for entry in saved)
    assert all(entry.first_seen == entry.changed_at == T0 for entry in saved)
    assert await storage.get_entries(ids(saved)) == saved


async def test_an_unchanged_poll_returns_nothing(storage: SqlStorage, source: str) -> None:
    batch = [make_entry(n) for n in range(5)]
    await storage.save_entries(source, FEED, batch, T0)

    assert await storage.save_entries(source, FEED, batch, LATER) == []


async def test_a_changed_entry_is_updated_in_place(storage: SqlStorage, source: str) -> None:
    [first, _] = await storage.save_entries(source, FEED, [make_entry(1), make_entry(2)], T0)
    edited = make_entry(1, title="深圳新能源汽车产业报告（更正）", content_hash="hash-1b")

    [updated] = await storage.save_entries(source, FEED, [edited, make_entry(2)], LATER)

    assert (updated.entry_id, updated.first_seen, updated.changed_at) == (first.entry_id, T0, LATER)
    assert updated.data == edited
    assert await storage.get_entries([first.entry_id]) == [updated]


async def test_a_regenerated_id_with_the_same_link_and_title_is_the_same_entry(
    storage: SqlStorage, source: str
) -> None:
    [stored] = await storage.save_entries(
        source, FEED, [make_entry(1, title="Tesla 深圳  工厂")], T0
    )
    regenerated = make_entry(1, key="urn:uuid:新", id="urn:uuid:新", title="tesla 深圳 工厂 ")

    assert await storage.save_entries(source, FEED, [regenerated], LATER) == []
    [entry] = await storage.get_entries([stored.entry_id])
    assert (entry.data.key, entry.data.id) == ("urn:uuid:新", "urn:uuid:新")
    [status] = await storage.source_statuses()
    assert status.entry_count == 1


async def test_a_regenerated_id_with_new_content_is_a_change(
    storage: SqlStorage, source: str
) -> None:
    [stored] = await storage.save_entries(source, FEED, [make_entry(1)], T0)
    regenerated = make_entry(1, key="k-2", content_hash="hash-new")

    [changed] = await storage.save_entries(source, FEED, [regenerated], LATER)

    assert (changed.entry_id, changed.data.key, changed.changed_at) == (
        stored.entry_id,
        "k-2",
        LATER,
    )


async def test_an_entry_found_by_key_is_not_also_taken_by_its_twin(
    storage: SqlStorage, source: str
) -> None:
    await storage.save_entries(source, FEED, [make_entry(1)], T0)
    twin = make_entry(1, key="twin", id="twin")  # same link and title, another id

    [new] = await storage.save_entries(source, FEED, [make_entry(1), twin], LATER)

    assert (new.data.key, new.first_seen) == ("twin", LATER)


async def test_same_title_under_another_link_is_a_new_entry(
    storage: SqlStorage, source: str
) -> None:
    await storage.save_entries(source, FEED, [make_entry(1)], T0)
    moved = make_entry(1, key="k-2", link="https://finews.example.com/news/other.html")

    assert len(await storage.save_entries(source, FEED, [moved], LATER)) == 1


async def test_a_key_repeated_in_one_poll_is_stored_once(storage: SqlStorage, source: str) -> None:
    duplicate = make_entry(1, title="重复条目")

    saved = await storage.save_entries(source, FEED, [make_entry(1), duplicate, make_entry(2)], T0)

    assert [entry.data for entry in saved] == [make_entry(1), make_entry(2)]
    assert [entry.data for entry in await storage.get_entries(ids(saved))] == [
        make_entry(1),
        make_entry(2),
    ]


async def test_the_first_entry_of_a_poll_with_a_stored_link_and_title_is_the_stored_one(
    storage: SqlStorage, source: str
) -> None:
    [stored] = await storage.save_entries(source, FEED, [make_entry(1)], T0)
    first, second = (make_entry(1, key=k, id=k) for k in ("regenerated-a", "regenerated-b"))

    [new] = await storage.save_entries(source, FEED, [first, second], LATER)

    assert new.data == second and new.entry_id != stored.entry_id
    [rekeyed] = await storage.get_entries([stored.entry_id])
    assert rekeyed.data == first


async def test_of_stored_entries_with_one_link_and_title_the_first_stored_is_matched(
    storage: SqlStorage, source: str
) -> None:
    twins = [make_entry(1), make_entry(1, key="twin", id="twin")]
    [older, _] = await storage.save_entries(source, FEED, twins, T0)
    edited = make_entry(1, key="regenerated", id="regenerated", content_hash="edited")

    [changed] = await storage.save_entries(source, FEED, [edited], LATER)

    assert (changed.entry_id, changed.first_seen, changed.data) == (older.entry_id, T0, edited)


async def test_entries_are_keyed_per_source(storage: SqlStorage, source: str) -> None:
    await storage.sync_sources([SourceSpec(source, "u"), SourceSpec("emnews", "v")], T0)
    other_feed = FeedInfo(id="emnews", title="新兴市场")

    [a] = await storage.save_entries(source, FEED, [make_entry(1)], T0)
    [b] = await storage.save_entries("emnews", other_feed, [make_entry(1)], T0)

    assert a.entry_id != b.entry_id
    assert [e.feed for e in await storage.get_entries([a.entry_id, b.entry_id])] == [
        FEED,
        other_feed,
    ]


async def test_the_newest_feed_info_is_kept(storage: SqlStorage, source: str) -> None:
    [stored] = await storage.save_entries(source, FEED, [make_entry(1)], T0)
    renamed = replace(FEED, title="财经快讯（新版）", link=None, updated=None)

    await storage.save_entries(source, renamed, [], LATER)

    [entry] = await storage.get_entries([stored.entry_id])
    assert entry.feed == renamed


async def test_saving_entries_of_an_unknown_source_is_an_error(storage: SqlStorage) -> None:
    with pytest.raises(KeyError):
        await storage.save_entries("未知", FEED, [make_entry(1)], T0)


async def test_get_entries_keeps_the_order_given_and_skips_unknown_ids(
    storage: SqlStorage, source: str
) -> None:
    saved = await storage.save_entries(source, FEED, [make_entry(n) for n in range(3)], T0)

    got = await storage.get_entries([saved[2].entry_id, 999_999, saved[0].entry_id])

    assert got == [saved[2], saved[0]]


async def test_get_entries_returns_an_id_given_twice_twice(
    storage: SqlStorage, source: str
) -> None:
    [a, b] = await storage.save_entries(source, FEED, [make_entry(1), make_entry(2)], T0)

    assert await storage.get_entries([b.entry_id, a.entry_id, b.entry_id]) == [b, a, b]


@pytest.mark.parametrize("poll", ["new", "changed"])
async def test_a_50_entry_poll_is_a_handful_of_statements(
    storage: SqlStorage, source: str, poll: str
) -> None:
    batch = [make_entry(n) for n in range(50)]
    if poll == "changed":
        await storage.save_entries(source, FEED, batch, T0)
        batch = [replace(entry, content_hash="edited") for entry in batch]

    with count_statements(storage) as statements:
        saved = await storage.save_entries(source, FEED, batch, LATER)

    assert len(saved) == 50
    assert len(statements) <= 5, statements
