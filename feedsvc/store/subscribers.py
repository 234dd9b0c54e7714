"""Subscribers: their subscriptions from the config, what is pending for them, and
their unsubscribes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, bindparam, delete, exists, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from feedsvc.model import MatchedEntry
from feedsvc.store.base import SubscriberSpec
from feedsvc.store.engine import (
    Database,
    exclude_other_config_syncs,
    execute_many,
    insert_on_conflict,
)
from feedsvc.store.matches import MATCHED_ENTRY, matched_entry_select
from feedsvc.store.schema import (
    deliveries,
    matches,
    subscriber_subscriptions,
    subscribers,
    unsubscribes,
)


class SubscriberStorage(Database):
    """The subscribers part of ``SqlStorage``."""

    async def sync_subscribers(self, specs: Sequence[SubscriberSpec], now: datetime) -> None:
        """Record subscribers and their subscriptions; a new pair starts at ``now``, a
        pair no longer in the config is forgotten (it starts afresh if it comes back)."""
        async with self._transaction(writes=True) as conn:
            await exclude_other_config_syncs(conn)
            ids = await _subscriber_ids(conn, [spec.email for spec in specs], now)
            wanted = {(ids[spec.email], sub) for spec in specs for sub in spec.subscriptions}
            rows = await conn.execute(
                select(
                    subscriber_subscriptions.c.subscriber_id,
                    subscriber_subscriptions.c.subscription,
                )
            )
            stored = {(row.subscriber_id, row.subscription) for row in rows}
            await execute_many(
                conn,
                insert(subscriber_subscriptions),
                [
                    {"subscriber_id": sid, "subscription": sub, "started_at": now}
                    for sid, sub in sorted(wanted - stored)
                ],
            )
            await execute_many(
                conn,
                delete(subscriber_subscriptions).where(
                    subscriber_subscriptions.c.subscriber_id == bindparam("b_sid"),
                    subscriber_subscriptions.c.subscription == bindparam("b_sub"),
                ),
                [{"b_sid": sid, "b_sub": sub} for sid, sub in sorted(stored - wanted)],
            )

    async def pending_matches(self, email: str, until: datetime) -> list[MatchedEntry]:
        """Matches to send to this subscriber (see the Protocol); a match made at the
        very instant its pair started counts as made after it."""
        statement = (
            matched_entry_select()
            .join(
                subscriber_subscriptions,
                subscriber_subscriptions.c.subscription == matches.c.subscription,
            )
            .join(subscribers, subscribers.c.id == subscriber_subscriptions.c.subscriber_id)
            .where(
                subscribers.c.email == email,
                matches.c.matched_at >= subscriber_subscriptions.c.started_at,
                matches.c.matched_at <= until,
                ~_delivered_to(email),
                ~_unsubscribed(email),
            )
            .order_by(matches.c.matched_at, matches.c.entry_id, matches.c.subscription)
        )
        async with self._transaction() as conn:
            rows = (await conn.execute(statement)).all()
        return [MATCHED_ENTRY.from_row(row) for row in rows]

    async def unsubscribe(self, email: str, subscription: str, now: datetime) -> bool:
        """Record an unsubscribe; returns False when it was already recorded."""
        statement = (
            insert_on_conflict(unsubscribes, self._postgres)
            .values(email=email, subscription=subscription, at=now)
            .on_conflict_do_nothing(
                index_elements=[unsubscribes.c.email, unsubscribes.c.subscription]
            )
            .returning(unsubscribes.c.email)
        )
        async with self._transaction(writes=True) as conn:
            return (await conn.execute(statement)).one_or_none() is not None

    async def unsubscribed(self) -> set[tuple[str, str]]:
        """All (email, subscription) pairs that unsubscribed."""
        async with self._transaction() as conn:
            rows = await conn.execute(select(unsubscribes.c.email, unsubscribes.c.subscription))
            return {(row.email, row.subscription) for row in rows}

    async def resubscribe(self, email: str, subscription: str, now: datetime) -> None:
        """Remove an unsubscribe (the operator's decision); the pair starts again at ``now``."""
        subscriber_id = (
            select(subscribers.c.id).where(subscribers.c.email == email).scalar_subquery()
        )
        async with self._transaction(writes=True) as conn:
            removed = await conn.execute(
                delete(unsubscribes).where(
                    unsubscribes.c.email == email, unsubscribes.c.subscription == subscription
                )
            )
            if removed.rowcount:
                await conn.execute(
                    update(subscriber_subscriptions)
                    .where(
                        subscriber_subscriptions.c.subscriber_id == subscriber_id,
                        subscriber_subscriptions.c.subscription == subscription,
                    )
                    .values(started_at=now)
                )


async def _subscriber_ids(
    conn: AsyncConnection, emails: Sequence[str], now: datetime
) -> dict[str, int]:
    """Ids of these subscribers, inserting the new ones."""
    rows = await conn.execute(select(subscribers.c.email, subscribers.c.id))
    ids: dict[str, int] = {row.email: row.id for row in rows}
    new = sorted(set(emails) - ids.keys())
    if new:
        statement = insert(subscribers).returning(subscribers.c.email, subscribers.c.id)
        result = await conn.execute(statement, [{"email": e, "created_at": now} for e in new])
        ids |= {row.email: row.id for row in result}
    return ids


def _delivered_to(email: str) -> ColumnElement[bool]:
    """The match's pair is already in an outbox message for this subscriber."""
    return exists().where(
        deliveries.c.subscriber == email,
        deliveries.c.subscription == matches.c.subscription,
        deliveries.c.entry_id == matches.c.entry_id,
    )


def _unsubscribed(email: str) -> ColumnElement[bool]:
    return exists().where(
        unsubscribes.c.email == email, unsubscribes.c.subscription == matches.c.subscription
    )
