"""The outbox: rendered digests stored with the pairs they deliver, claimed and sent."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, insert, select, update

from feedsvc.model import MatchedEntry, OutboxMessage, StoredEntry
from feedsvc.store.base import DeliveryProblem
from feedsvc.store.engine import Database, execute_many, insert_on_conflict
from feedsvc.store.entries import STORED_ENTRY, stored_entry_select
from feedsvc.store.leases import claim, lease_free
from feedsvc.store.records import Record
from feedsvc.store.schema import deliveries, entries, outbox

#: A message as the sender needs it; a claim returns it.
OUTBOX_MESSAGE = Record(OutboxMessage, outbox)

#: What the operator sees of a message whose last attempt failed.
DELIVERY_PROBLEM = Record(
    DeliveryProblem,
    outbox,
    columns={
        "outbox_id": outbox.c.id,
        "error": outbox.c.last_error,
        "at": outbox.c.last_error_at,
        "permanent": outbox.c.failed,
    },
)


class OutboxStorage(Database):
    """The outbox part of ``SqlStorage``."""

    async def enqueue_digest(
        self,
        email: str,
        message_id: str,
        raw: bytes,
        matches: Sequence[MatchedEntry],
        now: datetime,
    ) -> int | None:
        """Store a rendered digest and the pairs it delivers in one transaction; ``None``
        when a message with this ``message_id`` exists already.

        Raises:
            StorageError: a pair is already in another message for this subscriber (two
                digests built at once over different windows); nothing is stored.
        """
        row = {
            "subscriber": email,
            "message_id": message_id,
            "raw": raw,
            "created_at": now,
            "next_attempt": now,
        }
        statement = (
            insert_on_conflict(outbox, self._postgres)
            .values(row)
            .on_conflict_do_nothing(index_elements=[outbox.c.message_id])
            .returning(outbox.c.id)
        )
        pairs = dict.fromkeys((m.subscription, m.entry.entry_id) for m in matches)
        async with self._transaction(writes=True) as conn:
            outbox_id: int | None = (await conn.execute(statement)).scalar_one_or_none()
            if outbox_id is None:
                return None
            await execute_many(
                conn,
                insert(deliveries),
                [
                    {"outbox_id": outbox_id, "subscriber": email, "subscription": s, "entry_id": e}
                    for s, e in pairs
                ],
            )
        return outbox_id

    async def delivered_entries(self, email: str, since: datetime) -> list[StoredEntry]:
        """Entries in this subscriber's digests enqueued at or after ``since``."""
        delivered = (
            select(deliveries.c.entry_id)
            .join(outbox, outbox.c.id == deliveries.c.outbox_id)
            .where(outbox.c.subscriber == email, outbox.c.created_at >= since)
        )
        statement = stored_entry_select().where(entries.c.id.in_(delivered)).order_by(entries.c.id)
        async with self._transaction() as conn:
            rows = (await conn.execute(statement)).all()
        return [STORED_ENTRY.from_row(row) for row in rows]

    async def claim_outbox(
        self, now: datetime, owner: str, lease_until: datetime, limit: int
    ) -> list[OutboxMessage]:
        """Claim unsent, not permanently failed messages whose next attempt is due,
        oldest first; each claim counts as an attempt (``OutboxMessage.attempts``
        includes the current one)."""
        claimable = and_(
            outbox.c.sent_at.is_(None),
            ~outbox.c.failed,
            outbox.c.next_attempt <= now,
            lease_free(outbox, now),
        )
        statement = claim(
            outbox,
            claimable,
            order_by=(outbox.c.id,),
            limit=limit,
            values={
                "lease_owner": owner,
                "lease_until": lease_until,
                "attempts": outbox.c.attempts + 1,
            },
        ).returning(*OUTBOX_MESSAGE.columns)
        async with self._transaction(writes=True) as conn:
            rows = (await conn.execute(statement)).all()
        messages = [OUTBOX_MESSAGE.from_row(row) for row in rows]
        return sorted(messages, key=lambda message: message.id)

    async def mark_sent(self, outbox_id: int, now: datetime) -> None:
        """The message was accepted by the mail server or written to the mailbox."""
        await self._update_outbox(outbox_id, {"sent_at": now})

    async def mark_failed(
        self, outbox_id: int, now: datetime, error: str, *, permanent: bool, retry_at: datetime
    ) -> None:
        """A delivery attempt failed: permanent failures are never retried; others are
        retried at ``retry_at``."""
        values: dict[str, Any] = {"last_error_at": now, "last_error": error}
        values |= {"failed": True} if permanent else {"next_attempt": retry_at}
        await self._update_outbox(outbox_id, values)

    async def _update_outbox(self, outbox_id: int, values: Mapping[str, Any]) -> None:
        """Update a message and release its lease.

        Raises:
            KeyError: no message has this id.
        """
        statement = (
            update(outbox)
            .where(outbox.c.id == outbox_id)
            .values({**values, "lease_owner": None, "lease_until": None})
            .returning(outbox.c.id)
        )
        async with self._transaction(writes=True) as conn:
            if (await conn.execute(statement)).one_or_none() is None:
                raise KeyError(f"unknown outbox message {outbox_id}")

    async def outbox_counts(self) -> dict[str, int]:
        """Messages by state: ``pending``, ``sent``, ``failed``."""
        unsent = outbox.c.sent_at.is_(None)
        statement = select(
            func.count().filter(unsent, ~outbox.c.failed).label("pending"),
            func.count().filter(outbox.c.sent_at.is_not(None)).label("sent"),
            func.count().filter(unsent, outbox.c.failed).label("failed"),
        )
        async with self._transaction() as conn:
            row = (await conn.execute(statement)).one()
        return dict(row._asdict())

    async def delivery_problems(self, limit: int) -> list[DeliveryProblem]:
        """Unsent messages whose last attempt failed, newest failure first."""
        statement = (
            select(*DELIVERY_PROBLEM.columns)
            .where(outbox.c.sent_at.is_(None), outbox.c.last_error_at.is_not(None))
            .order_by(outbox.c.last_error_at.desc(), outbox.c.id.desc())
            .limit(limit)
        )
        async with self._transaction() as conn:
            rows = (await conn.execute(statement)).all()
        return [DELIVERY_PROBLEM.from_row(row) for row in rows]

    async def last_digest_at(self, email: str) -> datetime | None:
        """When the last digest for this subscriber was enqueued."""
        statement = select(func.max(outbox.c.created_at)).where(outbox.c.subscriber == email)
        async with self._transaction() as conn:
            last: datetime | None = (await conn.execute(statement)).scalar_one()
        return last
