"""Entries: a poll's entries saved (new, changed, re-keyed) and read back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from feedsvc.model import EntryData, FeedInfo, StoredEntry
from feedsvc.store.engine import Database, execute_many
from feedsvc.store.records import JSON_TUPLE, AnyRow, Record
from feedsvc.store.schema import entries, sources
from feedsvc.store.sources import FEED_INFO, store_feed_info

#: An entry as parsed; ``EntryData.id``, the feed's own id, is ``feed_entry_id``.
ENTRY_DATA = Record(
    EntryData,
    entries,
    columns={"id": entries.c.feed_entry_id},
    codecs={"authors": JSON_TUPLE, "categories": JSON_TUPLE},
)

#: An entry with its source's name and feed (select it with :func:`stored_entry_select`).
STORED_ENTRY = Record(
    StoredEntry,
    entries,
    columns={
        "entry_id": entries.c.id,
        "source": sources.c.name,
        "feed": FEED_INFO,
        "data": ENTRY_DATA,
    },
)

#: Statements of the polling hot path, built once: building one costs more than the
#: cached compilation saves (SQLAlchemy generates a cache key from the construct).
_FIND_STORED = (
    select(
        entries.c.id,
        entries.c.key,
        entries.c.link,
        entries.c.title_norm,
        entries.c.content_hash,
        entries.c.first_seen,
    )
    .where(
        entries.c.source_id == bindparam("b_source_id"),
        or_(
            entries.c.key.in_(bindparam("b_keys", expanding=True)),
            entries.c.link.in_(bindparam("b_links", expanding=True)),
        ),
    )
    .order_by(entries.c.id)
)
_INSERT_ENTRIES = insert(entries).returning(entries.c.key, entries.c.id)
_UPDATE_ENTRY_BY_ID = update(entries).where(entries.c.id == bindparam("b_id"))


def normalise_title(title: str) -> str:
    """The title as the "same link and title" rule compares it: case-folded, white
    space collapsed."""
    return " ".join(title.casefold().split())


def stored_entry_select() -> Select[Any]:
    """Selects :data:`STORED_ENTRY`: entries joined to their sources."""
    return select(*STORED_ENTRY.columns).select_from(entries.join(sources))


class EntryStorage(Database):
    """The entries part of ``SqlStorage``."""

    async def save_entries(
        self, source: str, feed: FeedInfo, entries: Sequence[EntryData], now: datetime
    ) -> list[StoredEntry]:
        """Store a poll's entries and return only those that are new or changed, in
        feed order (a key repeated within the feed counts once, first wins).

        Four statements whatever the number of entries: store the FeedInfo, look up the
        stored entries by key or by link, insert the new ones, update the changed ones
        (plus one to re-key unchanged entries whose feed regenerated their ids).

        Raises:
            KeyError: no source has this name.
        """
        batch = _first_per_key(entries)
        async with self._transaction(writes=True) as conn:
            source_id = await store_feed_info(conn, source, feed)
            stored = await _find_stored(conn, source_id, batch)
            new = [data for data in batch if data.key not in stored]
            changed = [data for data in batch if _is_changed(stored.get(data.key), data)]
            rekeyed = [d for d in batch if _is_rekeyed(stored.get(d.key), d)]
            new_ids = await _insert_entries(conn, source_id, new, now)
            await _update_entries(conn, stored, changed, now)
            await _rekey_entries(conn, stored, rekeyed)
        ids = new_ids | {data.key: stored[data.key].id for data in changed}
        first_seen = {data.key: stored[data.key].first_seen for data in changed}
        return [
            StoredEntry(ids[data.key], source, feed, data, first_seen.get(data.key, now), now)
            for data in batch
            if data.key in ids
        ]

    async def get_entries(self, entry_ids: Sequence[int]) -> list[StoredEntry]:
        """The stored entries with these ids, in the order given (unknown ids skipped)."""
        statement = stored_entry_select().where(entries.c.id.in_(entry_ids))
        async with self._transaction() as conn:
            rows = (await conn.execute(statement)).all()
        by_id = {entry.entry_id: entry for entry in map(STORED_ENTRY.from_row, rows)}
        return [by_id[entry_id] for entry_id in entry_ids if entry_id in by_id]


async def _find_stored(
    conn: AsyncConnection, source_id: int, batch: Sequence[EntryData]
) -> dict[str, AnyRow]:
    """The stored entries that the batch's entries are, by the batch entry's key.

    An entry is its stored namesake by key; failing that, a stored entry not already
    taken by key with the same link and normalised title (feeds that regenerate ids).
    """
    keys = [data.key for data in batch]
    links = [data.link for data in batch if data.link]
    parameters = {"b_source_id": source_id, "b_keys": keys, "b_links": links}
    rows = (await conn.execute(_FIND_STORED, parameters)).all()
    return _pair_with_stored(batch, rows)


def _pair_with_stored(batch: Sequence[EntryData], rows: Sequence[AnyRow]) -> dict[str, AnyRow]:
    by_key = {row.key: row for row in rows}
    found = {data.key: by_key[data.key] for data in batch if data.key in by_key}
    taken = {row.id for row in found.values()}
    by_link_title: dict[tuple[str, str], AnyRow] = {}
    for row in rows:
        if row.id not in taken:
            by_link_title.setdefault((row.link, row.title_norm), row)
    for data in batch:
        if data.key not in found and data.link:
            twin = by_link_title.pop((data.link, normalise_title(data.title)), None)
            if twin is not None:
                found[data.key] = twin
    return found


def _first_per_key(batch: Sequence[EntryData]) -> list[EntryData]:
    first: dict[str, EntryData] = {}
    for data in batch:
        first.setdefault(data.key, data)
    return list(first.values())


def _is_rekeyed(stored: AnyRow | None, data: EntryData) -> bool:
    """Found by link and title, unchanged, but under a new key: keep the new key."""
    return stored is not None and stored.key != data.key and not _is_changed(stored, data)


def _is_changed(stored: AnyRow | None, data: EntryData) -> bool:
    return stored is not None and stored.content_hash != data.content_hash


def _entry_values(data: EntryData) -> dict[str, Any]:
    values = ENTRY_DATA.values(data)
    values["title_norm"] = normalise_title(data.title)
    return values


async def _insert_entries(
    conn: AsyncConnection, source_id: int, new: Sequence[EntryData], now: datetime
) -> dict[str, int]:
    """Insert new entries in one round trip; returns their ids by key."""
    if not new:
        return {}
    rows = [
        {"source_id": source_id, **_entry_values(d), "first_seen": now, "changed_at": now}
        for d in new
    ]
    # Keys, not parameter order, pair rows with ids: asking SQLAlchemy to keep the
    # order makes it insert row by row on SQLite.
    result = await conn.execute(_INSERT_ENTRIES, rows)
    return {row.key: row.id for row in result}


async def _update_entries(
    conn: AsyncConnection, stored: Mapping[str, AnyRow], changed: Sequence[EntryData], now: datetime
) -> None:
    """Store the changed entries' new data over the stored entries they are."""
    rows = [{"b_id": stored[d.key].id, **_entry_values(d), "changed_at": now} for d in changed]
    await execute_many(conn, _UPDATE_ENTRY_BY_ID, rows)


async def _rekey_entries(
    conn: AsyncConnection, stored: Mapping[str, AnyRow], rekeyed: Sequence[EntryData]
) -> None:
    """Give unchanged entries found by link and title the key (and id) their feed uses now."""
    rows = [{"b_id": stored[d.key].id, "key": d.key, "feed_entry_id": d.id} for d in rekeyed]
    await execute_many(conn, _UPDATE_ENTRY_BY_ID, rows)
