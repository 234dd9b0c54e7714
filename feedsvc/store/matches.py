"""Matches: which entries each subscription's query selected, and its feed of them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Executable, Select, bindparam, delete, func, select, update

from feedsvc.model import Match, MatchedEntry
from feedsvc.store.engine import Database, execute_many, insert_on_conflict
from feedsvc.store.entries import STORED_ENTRY
from feedsvc.store.records import JSON_TUPLE, Record
from feedsvc.store.schema import entries, matches, sources

#: A match as the matcher makes it.
MATCH = Record(Match, matches, codecs={"terms": JSON_TUPLE})

#: A stored entry with the match that selected it (select it with
#: :func:`matched_entry_select`).
MATCHED_ENTRY = Record(
    MatchedEntry, matches, columns={"entry": STORED_ENTRY}, codecs={"terms": JSON_TUPLE}
)

#: An entry's time: its ``published``, else its ``updated``, else when it was first seen.
_ENTRY_TIME = func.coalesce(entries.c.published, entries.c.updated, entries.c.first_seen)

_UPDATE_MATCH_TERMS = update(matches).where(
    matches.c.subscription == bindparam("b_subscription"),
    matches.c.entry_id == bindparam("b_entry_id"),
)


@cache
def _insert_new_matches(postgres: bool) -> Executable:
    # Built once per database kind: a cycle saves matches for every new entry.
    return (
        insert_on_conflict(matches, postgres)
        .on_conflict_do_nothing(index_elements=[matches.c.subscription, matches.c.entry_id])
        .returning(matches.c.subscription, matches.c.entry_id)
    )


def matched_entry_select() -> Select[Any]:
    """Selects :data:`MATCHED_ENTRY`: matches joined to their entries and sources."""
    return select(*MATCHED_ENTRY.columns).select_from(
        entries.join(sources).join(matches, matches.c.entry_id == entries.c.id)
    )


class MatchStorage(Database):
    """The matches part of ``SqlStorage``."""

    async def save_matches(self, matches: Sequence[Match], now: datetime) -> int:
        """Record matches; a pair already stored gets its terms updated and
        ``matched_at`` kept. Returns the number of new pairs."""
        by_pair = {(m.subscription, m.entry_id): m for m in matches}
        if not by_pair:
            return 0
        # Insert what is new (usually everything: the entries are new), then update the
        # terms of the pairs already stored: one statement in the usual case.
        async with self._transaction(writes=True) as conn:
            inserted = await conn.execute(
                _insert_new_matches(self._postgres),
                [MATCH.values(m) | {"matched_at": now} for m in by_pair.values()],
            )
            new = {(row.subscription, row.entry_id) for row in inserted}
            await execute_many(
                conn,
                _UPDATE_MATCH_TERMS,
                [
                    {"b_subscription": s, "b_entry_id": e, "terms": list(m.terms)}
                    for (s, e), m in by_pair.items()
                    if (s, e) not in new
                ],
            )
        return len(new)

    async def delete_matches(self, subscription: str, entry_ids: Sequence[int]) -> None:
        """Forget matches that no longer hold (an updated entry stopped matching)."""
        async with self._transaction(writes=True) as conn:
            await conn.execute(
                delete(matches).where(
                    matches.c.subscription == subscription, matches.c.entry_id.in_(entry_ids)
                )
            )

    async def recent_matches(self, subscription: str, limit: int) -> list[MatchedEntry]:
        """The newest ``limit`` matches of a subscription, newest entry first (see the
        Protocol)."""
        statement = (
            matched_entry_select()
            .where(matches.c.subscription == subscription)
            .order_by(_ENTRY_TIME.desc(), entries.c.first_seen.desc(), entries.c.id.desc())
            .limit(limit)
        )
        async with self._transaction() as conn:
            rows = (await conn.execute(statement)).all()
        return [MATCHED_ENTRY.from_row(row) for row in rows]

    async def latest_match_change(self, subscription: str) -> datetime | None:
        """When a subscription's feed last changed (newest match or entry change)."""
        statement = (
            select(func.max(matches.c.matched_at), func.max(entries.c.changed_at))
            .select_from(matches.join(entries))
            .where(matches.c.subscription == subscription)
        )
        async with self._transaction() as conn:
            newest_match, newest_change = (await conn.execute(statement)).one()
        return max((t for t in (newest_match, newest_change) if t is not None), default=None)
