"""``SqlStorage``: the Storage Protocol on SQLAlchemy Core (async), for SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager, closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Executable,
    Row,
    Table,
    and_,
    bindparam,
    delete,
    event,
    exists,
    func,
    insert,
    make_url,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from feedsvc.errors import StorageError
from feedsvc.model import (
    EntryData,
    FeedInfo,
    Match,
    MatchedEntry,
    OutboxMessage,
    SourceForUpdate,
    SourceStatus,
    StoredEntry,
)
from feedsvc.store import schema
from feedsvc.store.base import DeliveryProblem, FetchOutcome, SourceSpec, SubscriberSpec
from feedsvc.store.schema import (
    deliveries,
    entries,
    matches,
    outbox,
    sources,
    subscriber_subscriptions,
    subscribers,
    unsubscribes,
)

#: A result row of any shape.
AnyRow = Row[*tuple[Any, ...]]

#: How long a SQLite writer waits for another one before failing ("database is locked").
SQLITE_BUSY_TIMEOUT_S = 30.0

#: Execution option marking a connection whose transaction writes (see ``_sqlite_begin``).
_WRITES = "feedsvc_writes"

#: Errors of the database or of reaching it; anything else is a bug and passes through.
_DATABASE_ERRORS = (DBAPIError, PoolTimeoutError, OSError)


def open_storage(url: str) -> SqlStorage:
    """Open the database at ``url``; call ``await storage.migrate()`` before use.

    ``sqlite:///relative.db`` or ``sqlite:////absolute.db``: the file and its directory
    are created and the file switched to WAL mode now. ``postgresql://…`` or
    ``postgresql+asyncpg://…``: nothing connects before the first call.

    Raises:
        ValueError: the URL names another database or driver, or an in-memory SQLite
            database (each pooled connection would see its own empty database).
        StorageError: the SQLite file cannot be opened as a database.
    """
    parsed = make_url(url)
    if parsed.drivername in {"sqlite", "sqlite+aiosqlite"}:
        return SqlStorage(_sqlite_engine(parsed))
    if parsed.drivername in {"postgresql", "postgresql+asyncpg"}:
        return SqlStorage(_postgres_engine(parsed))
    raise ValueError(f"unsupported database URL {parsed!r}: use sqlite:///FILE or postgresql://…")


def _sqlite_engine(url: URL) -> AsyncEngine:
    if not url.database or url.database == ":memory:":
        raise ValueError(f"{url!r}: feedsvc needs an SQLite file, not an in-memory database")
    # Resolved now: a relative path means relative to the directory feedsvc started in.
    path = Path(url.database).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    _use_wal(str(path))
    engine = create_async_engine(
        url.set(drivername="sqlite+aiosqlite", database=str(path)),
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S},
        json_serializer=_dump_json,
    )
    event.listen(engine.sync_engine, "connect", _sqlite_connect)
    event.listen(engine.sync_engine, "begin", _sqlite_begin)
    return engine


def _postgres_engine(url: URL) -> AsyncEngine:
    return create_async_engine(url.set(drivername="postgresql+asyncpg"), json_serializer=_dump_json)


#: One encoder for every JSON value: ``json.dumps`` with options builds one per call.
_JSON_ENCODER = json.JSONEncoder(ensure_ascii=False)


def _dump_json(value: object) -> str:
    # Chinese terms and titles stay readable in the database.
    return _JSON_ENCODER.encode(value)


def _use_wal(path: str) -> None:
    """Switch the database file (created if missing) to WAL: readers never block the
    writer nor it them.

    Done once, synchronously, before any pooled connection exists: the mode is stored
    in the file, and switching fails at once with "database is locked" (no busy wait)
    while another connection of this process is inside a transaction.
    """
    try:
        with closing(sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S)) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error as e:
        raise StorageError(f"sqlite:///{path}: {e}") from e


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # The sqlite3 module's own BEGIN handling is replaced by ``_sqlite_begin``, as
    # SQLAlchemy's SQLite docs recommend ("Serializable isolation / Savepoints").
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    # SQLite's single writer is its "FOR UPDATE SKIP LOCKED": BEGIN IMMEDIATE takes the
    # write lock before the first read, so a claim's read-then-update cannot interleave
    # with another writer's, and a deferred transaction cannot fail half-way on upgrade.
    mode = "IMMEDIATE" if conn.get_execution_options().get(_WRITES) else "DEFERRED"
    conn.exec_driver_sql(f"BEGIN {mode}")


def normalise_title(title: str) -> str:
    """The title as the "same link and title" rule compares it: case-folded, white
    space collapsed."""
    return " ".join(title.casefold().split())


class SqlStorage:
    """The Storage Protocol on one SQLAlchemy async engine (SQLite or PostgreSQL).

    The same statements serve both databases: claims are one ``UPDATE … WHERE id IN
    (SELECT … FOR UPDATE SKIP LOCKED)``; SQLite ignores the locking clause and relies on
    ``BEGIN IMMEDIATE`` instead (see ``_sqlite_begin``).
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        """The SQLAlchemy engine, for diagnostics and tests; feedsvc code uses the methods."""
        self._postgres = engine.dialect.name == "postgresql"
        # SQLite has one writer: this process's writers queue here instead of in
        # SQLite's busy handler, which sleeps (ms, growing) and made 1,000 concurrent
        # source updates 4x slower than the same updates one after the other.
        self._sqlite_writer = None if self._postgres else asyncio.Lock()
        self._insert_new_matches = (
            _insert_on_conflict(matches, self._postgres)
            .on_conflict_do_nothing(index_elements=[matches.c.subscription, matches.c.entry_id])
            .returning(matches.c.subscription, matches.c.entry_id)
        )

    def __repr__(self) -> str:
        return f"SqlStorage({self.engine.url.render_as_string(hide_password=True)!r})"

    @asynccontextmanager
    async def _transaction(self, *, writes: bool = False) -> AsyncIterator[AsyncConnection]:
        """One transaction, committed when the block ends; database errors become
        StorageError."""
        try:
            async with self._writer(writes), self.engine.connect() as conn:
                if writes:
                    await conn.execution_options(**{_WRITES: True})
                async with conn.begin():
                    yield conn
        except _DATABASE_ERRORS as e:
            raise StorageError(f"{self!r}: {_driver_message(e)}") from e
        except StatementError as e:
            # Not the database: a value no column accepts (say, a naive datetime).
            if e.orig is None:
                raise
            raise e.orig from e

    @asynccontextmanager
    async def _writer(self, writes: bool) -> AsyncIterator[None]:
        if writes and self._sqlite_writer is not None:
            async with self._sqlite_writer:
                yield
        else:
            yield

    # -- lifecycle -------------------------------------------------------------

    async def migrate(self) -> None:
        """Create or upgrade the schema (idempotent, safe to run on every start)."""
        async with self._transaction(writes=True) as conn:
            await conn.run_sync(schema.migrate, datetime.now(UTC))

    async def close(self) -> None:
        """Release connections."""
        await self.engine.dispose()

    # -- sources -------------------------------------------------------------

    async def sync_sources(self, specs: Sequence[SourceSpec], now: datetime) -> None:
        """Make the stored sources match the config (see the Protocol)."""
        async with self._transaction(writes=True) as conn:
            await _exclude_other_config_syncs(conn)
            rows = await conn.execute(select(sources.c.name, sources.c.config_url))
            stored_urls = {row.name: row.config_url for row in rows}
            new = [spec for spec in specs if spec.name not in stored_urls]
            moved = [s for s in specs if stored_urls.get(s.name, s.url) != s.url]
            kept = [s for s in specs if stored_urls.get(s.name) == s.url]
            await _execute_many(conn, insert(sources), [_new_source(s, now) for s in new])
            await _execute_many(
                conn, _update_source_by_name(), [_moved_source(s, now) for s in moved]
            )
            await _execute_many(
                conn,
                _update_source_by_name(),
                [{"b_name": s.name, "enabled": s.enabled} for s in kept],
            )
            await conn.execute(
                update(sources)
                .where(sources.c.name.not_in([spec.name for spec in specs]))
                .values(enabled=False)
            )

    async def claim_due_sources(
        self, now: datetime, owner: str, lease_until: datetime, limit: int
    ) -> list[SourceForUpdate]:
        """Claim up to ``limit`` due sources that no other owner holds."""
        due = sources.c.next_poll <= now
        return await self._claim_sources(due, now, owner, lease_until, limit)

    async def claim_sources(
        self, names: Sequence[str], now: datetime, owner: str, lease_until: datetime
    ) -> list[SourceForUpdate]:
        """Claim the named sources now, due or not; sources disabled (by the config or a
        410) or held by another owner's live lease are left out."""
        named = sources.c.name.in_(names)
        return await self._claim_sources(named, now, owner, lease_until, None)

    async def _claim_sources(
        self,
        condition: ColumnElement[bool],
        now: datetime,
        owner: str,
        lease_until: datetime,
        limit: int | None,
    ) -> list[SourceForUpdate]:
        claimable = and_(condition, sources.c.enabled, ~sources.c.gone, _lease_free(sources, now))
        statement = _claim(
            sources,
            claimable,
            order_by=(sources.c.next_poll, sources.c.id),
            limit=limit,
            values={"lease_owner": owner, "lease_until": lease_until},
        ).returning(
            sources.c.name,
            sources.c.url,
            sources.c.etag,
            sources.c.last_modified,
            sources.c.body_hash,
            sources.c.consecutive_failures,
            sources.c.next_poll,
            sources.c.last_new_at,
            sources.c.publish_gap_s,
            sources.c.feed_min_interval_s,
        )
        async with self._transaction(writes=True) as conn:
            claimed = (await conn.execute(statement)).all()
        rows = sorted(claimed, key=lambda row: (row.next_poll, row.name))
        return [_source_for_update(row) for row in rows]

    async def record_fetch(self, name: str, outcome: FetchOutcome) -> None:
        """Record a poll's outcome on the source and release its lease.

        Raises:
            KeyError: no source has this name.
        """
        await self.record_fetches({name: outcome})

    async def record_fetches(self, outcomes: Mapping[str, FetchOutcome]) -> None:
        """Record several sources' outcomes in one transaction.

        Raises:
            KeyError: a source is unknown (nothing is recorded).
        """
        # Outcomes setting the same columns share one executemany: a cycle's batch
        # takes a few statements, not one per source.
        groups: dict[tuple[bool, tuple[str, ...]], list[dict[str, Any]]] = {}
        for name, outcome in outcomes.items():
            values = _outcome_values(outcome)
            key = (outcome.ok, tuple(sorted(values)))
            groups.setdefault(key, []).append({"b_name": name, **values})
        async with self._transaction(writes=True) as conn:
            await _require_sources(conn, list(outcomes))
            for (ok, _), rows in groups.items():
                statement = _UPDATE_SOURCE_BY_NAME if ok else _RECORD_FAILURE
                await conn.execute(statement, rows)

    async def source_statuses(self) -> list[SourceStatus]:
        """Every source's health, failing sources first, then by name."""
        entry_counts = (
            select(entries.c.source_id, func.count().label("n"))
            .group_by(entries.c.source_id)
            .subquery()
        )
        statement = (
            select(sources, func.coalesce(entry_counts.c.n, 0).label("entry_count"))
            .outerjoin(entry_counts, entry_counts.c.source_id == sources.c.id)
            .order_by((sources.c.consecutive_failures > 0).desc(), sources.c.name)
        )
        async with self._transaction() as conn:
            rows = (await conn.execute(statement)).all()
        return [_source_status(row) for row in rows]

    # -- entries -------------------------------------------------------------

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
            source_id = await _store_feed_info(conn, source, feed)
            stored = await _find_stored(conn, source_id, batch)
            new = [data for data in batch if data.key not in stored]
            changed = [data for data in batch if _is_changed(stored.get(data.key), data)]
            rekeyed = [d for d in batch if _is_rekeyed(stored.get(d.key), d)]
            new_ids = await _insert_entries(conn, source_id, new, now)
            await _execute_many(
                conn,
                _UPDATE_ENTRY_BY_ID,
                [
                    {"b_id": stored[d.key].id, **_entry_values(d), "changed_at": now}
                    for d in changed
                ],
            )
            await _execute_many(
                conn,
                _UPDATE_ENTRY_BY_ID,
                [{"b_id": stored[d.key].id, "key": d.key, "feed_entry_id": d.id} for d in rekeyed],
            )
        saved = [
            StoredEntry(new_ids[d.key], source, feed, d, first_seen=now, changed_at=now)
            for d in new
        ] + [
            StoredEntry(stored[d.key].id, source, feed, d, stored[d.key].first_seen, now)
            for d in changed
        ]
        by_key = {stored_entry.data.key: stored_entry for stored_entry in saved}
        return [by_key[data.key] for data in batch if data.key in by_key]

    async def get_entries(self, entry_ids: Sequence[int]) -> list[StoredEntry]:
        """The stored entries with these ids, in the order given (unknown ids skipped)."""
        statement = _entry_select().where(entries.c.id.in_(entry_ids))
        async with self._transaction() as conn:
            rows = (await conn.execute(statement)).all()
        by_id = {row.entry_id: _stored_entry(row) for row in rows}
        return [by_id[entry_id] for entry_id in entry_ids if entry_id in by_id]

    # -- matches -------------------------------------------------------------

    async def save_matches(self, matches: Sequence[Match], now: datetime) -> int:
        """Record matches; a pair already stored gets its terms updated and
        ``matched_at`` kept. Returns the number of new pairs."""
        by_pair = {(m.subscription, m.entry_id): m for m in matches}
        if not by_pair:
            return 0
        rows = [
            {"subscription": s, "entry_id": e, "terms": list(m.terms), "matched_at": now}
            for (s, e), m in by_pair.items()
        ]
        # Insert what is new (usually everything: the entries are new), then update the
        # terms of the pairs already stored: one statement in the usual case.
        async with self._transaction(writes=True) as conn:
            inserted = await conn.execute(self._insert_new_matches, rows)
            new = {(row.subscription, row.entry_id) for row in inserted}
            await _execute_many(
                conn,
                _UPDATE_MATCH_TERMS,
                [
                    {
                        "b_subscription": r["subscription"],
                        "b_entry_id": r["entry_id"],
                        "terms": r["terms"],
                    }
                    for r in rows
                    if (r["subscription"], r["entry_id"]) not in new
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
        """The newest ``limit`` matches of a subscription, newest entry first (by the
        entry's updated, else published, else first-seen time, then first-seen)."""
        entry_time = func.coalesce(entries.c.updated, entries.c.published, entries.c.first_seen)
        statement = (
            _matched_entry_select()
            .where(matches.c.subscription == subscription)
            .order_by(entry_time.desc(), entries.c.first_seen.desc(), entries.c.id.desc())
            .limit(limit)
        )
        async with self._transaction() as conn:
            rows = (await conn.execute(statement)).all()
        return [_matched_entry(row) for row in rows]

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

    # -- subscribers and digests ---------------------------------------------

    async def sync_subscribers(self, specs: Sequence[SubscriberSpec], now: datetime) -> None:
        """Record subscribers and their subscriptions; a new pair starts at ``now``, a
        pair no longer in the config is forgotten (it starts afresh if it comes back)."""
        async with self._transaction(writes=True) as conn:
            await _exclude_other_config_syncs(conn)
            ids = await _subscriber_ids(conn, [spec.email for spec in specs], now)
            wanted = {(ids[spec.email], sub) for spec in specs for sub in spec.subscriptions}
            rows = await conn.execute(
                select(
                    subscriber_subscriptions.c.subscriber_id,
                    subscriber_subscriptions.c.subscription,
                )
            )
            stored = {(row.subscriber_id, row.subscription) for row in rows}
            await _execute_many(
                conn,
                insert(subscriber_subscriptions),
                [
                    {"subscriber_id": sid, "subscription": sub, "started_at": now}
                    for sid, sub in sorted(wanted - stored)
                ],
            )
            await _execute_many(
                conn,
                delete(subscriber_subscriptions).where(
                    subscriber_subscriptions.c.subscriber_id == bindparam("b_sid"),
                    subscriber_subscriptions.c.subscription == bindparam("b_sub"),
                ),
                [{"b_sid": sid, "b_sub": sub} for sid, sub in sorted(stored - wanted)],
            )

    async def pending_matches(self, email: str, until: datetime) -> list[MatchedEntry]:
        """Matches to send to this subscriber (see the Protocol); a match made at the
        very instant its pair started counts as made after it. Oldest first."""
        statement = (
            _matched_entry_select()
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
        return [_matched_entry(row) for row in rows]

    async def delivered_entries(self, email: str, since: datetime) -> list[StoredEntry]:
        """Entries in this subscriber's digests enqueued at or after ``since``."""
        delivered = (
            select(deliveries.c.entry_id)
            .join(outbox, outbox.c.id == deliveries.c.outbox_id)
            .where(outbox.c.subscriber == email, outbox.c.created_at >= since)
        )
        statement = _entry_select().where(entries.c.id.in_(delivered)).order_by(entries.c.id)
        async with self._transaction() as conn:
            rows = (await conn.execute(statement)).all()
        return [_stored_entry(row) for row in rows]

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
            _insert_on_conflict(outbox, self._postgres)
            .values(row)
            .on_conflict_do_nothing(index_elements=[outbox.c.message_id])
            .returning(outbox.c.id)
        )
        pairs = dict.fromkeys((m.subscription, m.entry.entry_id) for m in matches)
        async with self._transaction(writes=True) as conn:
            outbox_id: int | None = (await conn.execute(statement)).scalar_one_or_none()
            if outbox_id is None:
                return None
            await _execute_many(
                conn,
                insert(deliveries),
                [
                    {"outbox_id": outbox_id, "subscriber": email, "subscription": s, "entry_id": e}
                    for s, e in pairs
                ],
            )
        return outbox_id

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
            _lease_free(outbox, now),
        )
        statement = _claim(
            outbox,
            claimable,
            order_by=(outbox.c.id,),
            limit=limit,
            values={
                "lease_owner": owner,
                "lease_until": lease_until,
                "attempts": outbox.c.attempts + 1,
            },
        ).returning(
            outbox.c.id,
            outbox.c.subscriber,
            outbox.c.message_id,
            outbox.c.raw,
            outbox.c.attempts,
            outbox.c.created_at,
        )
        async with self._transaction(writes=True) as conn:
            rows = (await conn.execute(statement)).all()
        messages = [OutboxMessage(**row._asdict()) for row in rows]
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
            select(
                outbox.c.id,
                outbox.c.subscriber,
                outbox.c.message_id,
                outbox.c.last_error,
                outbox.c.last_error_at,
                outbox.c.failed,
                outbox.c.next_attempt,
            )
            .where(outbox.c.sent_at.is_(None), outbox.c.last_error_at.is_not(None))
            .order_by(outbox.c.last_error_at.desc(), outbox.c.id.desc())
            .limit(limit)
        )
        async with self._transaction() as conn:
            rows = (await conn.execute(statement)).all()
        return [DeliveryProblem(*row) for row in rows]

    async def last_digest_at(self, email: str) -> datetime | None:
        """When the last digest for this subscriber was enqueued."""
        statement = select(func.max(outbox.c.created_at)).where(outbox.c.subscriber == email)
        async with self._transaction() as conn:
            last: datetime | None = (await conn.execute(statement)).scalar_one()
        return last

    # -- unsubscribes ----------------------------------------------------------

    async def unsubscribe(self, email: str, subscription: str, now: datetime) -> bool:
        """Record an unsubscribe; returns False when it was already recorded."""
        statement = (
            _insert_on_conflict(unsubscribes, self._postgres)
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


# -- statements ------------------------------------------------------------------


def _driver_message(error: BaseException) -> str:
    # DBAPIError's own str() repeats the whole statement and its parameters (raw digests).
    return str(getattr(error, "orig", None) or error).strip()


async def _exclude_other_config_syncs(conn: AsyncConnection) -> None:
    """Wait for any other node's config sync to commit, then see its rows.

    Nodes starting together sync the same config; without this, both would insert the
    same new names and one would fail on the unique constraint. PostgreSQL: an advisory
    lock held to the end of the transaction (READ COMMITTED: later statements see what
    the other node committed). SQLite: ``BEGIN IMMEDIATE`` already serialises writers.
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(select(func.pg_advisory_xact_lock(schema.CONFIG_SYNC_LOCK_KEY)))


def _insert_on_conflict(table: Table, postgres: bool) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that supports ``ON CONFLICT`` (same syntax on both databases)."""
    return postgresql.insert(table) if postgres else sqlite.insert(table)


async def _execute_many(
    conn: AsyncConnection, statement: Executable, rows: list[dict[str, Any]]
) -> None:
    """Run ``statement`` once per row, in one round trip (no-op without rows)."""
    if rows:
        await conn.execute(statement, rows)


def _lease_free(table: Table, now: datetime) -> ColumnElement[bool]:
    return or_(table.c.lease_until.is_(None), table.c.lease_until <= now)


def _claim(
    table: Table,
    claimable: ColumnElement[bool],
    *,
    order_by: Iterable[ColumnElement[Any]],
    limit: int | None,
    values: Mapping[str, Any],
) -> Any:
    """``UPDATE table SET values WHERE id IN (claimable rows FOR UPDATE SKIP LOCKED)``.

    The candidates are a materialised CTE so that PostgreSQL evaluates the locking
    SELECT exactly once (an inlined ``IN (SELECT … LIMIT)`` may be re-run and claim
    more than ``limit`` rows).
    """
    candidates = (
        select(table.c.id)
        .where(claimable)
        .order_by(*order_by)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("claimable")
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )
    return update(table).where(table.c.id.in_(select(candidates.c.id))).values(values)


def _new_source(spec: SourceSpec, now: datetime) -> dict[str, Any]:
    return {
        "name": spec.name,
        "config_url": spec.url,
        "url": spec.url,
        "enabled": spec.enabled,
        "gone": False,
        "consecutive_failures": 0,
        "feed_id": "",
        "feed_title": "",
        "next_poll": now,
        "created_at": now,
    }


def _moved_source(spec: SourceSpec, now: datetime) -> dict[str, Any]:
    """A new config URL: a different resource, so old validators and a 410 no longer apply."""
    return {
        "b_name": spec.name,
        "config_url": spec.url,
        "url": spec.url,
        "enabled": spec.enabled,
        "gone": False,
        "etag": None,
        "last_modified": None,
        "body_hash": None,
        "next_poll": now,
        "last_new_at": None,
        "publish_gap_s": None,
        "feed_min_interval_s": None,
    }


def _update_source_by_name() -> Any:
    return update(sources).where(sources.c.name == bindparam("b_name"))


_UPDATE_SOURCE_BY_NAME = _update_source_by_name()
_RECORD_FAILURE = _UPDATE_SOURCE_BY_NAME.values(
    consecutive_failures=sources.c.consecutive_failures + 1
)


_SOURCE_NAMES_IN = select(sources.c.name).where(
    sources.c.name.in_(bindparam("b_names", expanding=True))
)


async def _require_sources(conn: AsyncConnection, names: Sequence[str]) -> None:
    """Raises KeyError for the first of ``names`` that no source has."""
    known = set((await conn.scalars(_SOURCE_NAMES_IN, {"b_names": names})).all())
    for name in names:
        if name not in known:
            raise KeyError(f"unknown source {name!r}")


def _outcome_values(outcome: FetchOutcome) -> dict[str, Any]:
    values: dict[str, Any] = {
        "next_poll": outcome.next_poll,
        "lease_owner": None,
        "lease_until": None,
    }
    if outcome.moved_to:
        values["url"] = outcome.moved_to
    if outcome.disable:
        values["gone"] = True
    if outcome.last_new_at is not None:
        values["last_new_at"] = outcome.last_new_at
    if outcome.publish_gap is not None:
        values["publish_gap_s"] = outcome.publish_gap.total_seconds()
    if outcome.ok and not outcome.not_modified:
        values["feed_min_interval_s"] = _seconds(outcome.feed_min_interval)
    if not outcome.ok:
        # consecutive_failures + 1: see _RECORD_FAILURE.
        return values | {
            "last_error_at": outcome.at,
            "last_error_kind": outcome.error_kind,
            "last_error": outcome.error,
        }
    validators = {
        "etag": outcome.etag,
        "last_modified": outcome.last_modified,
        "body_hash": outcome.body_hash,
    }
    if outcome.not_modified:
        validators = {name: value for name, value in validators.items() if value is not None}
    return values | validators | {"last_success": outcome.at, "consecutive_failures": 0}


def _seconds(interval: timedelta | None) -> float | None:
    return None if interval is None else interval.total_seconds()


def _interval(seconds: float | None) -> timedelta | None:
    return None if seconds is None else timedelta(seconds=seconds)


def _source_for_update(row: AnyRow) -> SourceForUpdate:
    return SourceForUpdate(
        name=row.name,
        url=row.url,
        etag=row.etag,
        last_modified=row.last_modified,
        body_hash=row.body_hash,
        consecutive_failures=row.consecutive_failures,
        last_new_at=row.last_new_at,
        publish_gap=_interval(row.publish_gap_s),
        feed_min_interval=_interval(row.feed_min_interval_s),
    )


def _source_status(row: AnyRow) -> SourceStatus:
    return SourceStatus(
        name=row.name,
        url=row.url,
        enabled=row.enabled and not row.gone,
        last_success=row.last_success,
        last_error_at=row.last_error_at,
        last_error_kind=row.last_error_kind,
        last_error=row.last_error,
        consecutive_failures=row.consecutive_failures,
        next_poll=row.next_poll,
        entry_count=row.entry_count,
        moved_from=row.config_url if row.config_url != row.url else None,
    )


#: Statements of the polling hot path, built once: building one costs more than the
#: cached compilation saves (SQLAlchemy generates a cache key from the construct).
_STORE_FEED_INFO = (
    update(sources).where(sources.c.name == bindparam("b_name")).returning(sources.c.id)
)
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


async def _store_feed_info(conn: AsyncConnection, source: str, feed: FeedInfo) -> int:
    """Store the source's FeedInfo; returns the source's id."""
    result = await conn.execute(
        _STORE_FEED_INFO,
        {
            "b_name": source,
            "feed_id": feed.id,
            "feed_title": feed.title,
            "feed_link": feed.link,
            "feed_updated": feed.updated,
        },
    )
    source_id: int | None = result.scalar_one_or_none()
    if source_id is None:
        raise KeyError(f"unknown source {source!r}")
    return source_id


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
    return {
        "key": data.key,
        "feed_entry_id": data.id,
        "title": data.title,
        "title_norm": normalise_title(data.title),
        "link": data.link,
        "published": data.published,
        "updated": data.updated,
        "authors": list(data.authors),
        "categories": list(data.categories),
        "content": data.content,
        "summary": data.summary,
        "content_hash": data.content_hash,
    }


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


def _entry_select() -> Any:
    return select(
        entries.c.id.label("entry_id"),
        entries.c.key,
        entries.c.feed_entry_id,
        entries.c.title,
        entries.c.link,
        entries.c.published,
        entries.c.updated,
        entries.c.authors,
        entries.c.categories,
        entries.c.content,
        entries.c.summary,
        entries.c.content_hash,
        entries.c.first_seen,
        entries.c.changed_at,
        sources.c.name.label("source"),
        sources.c.feed_id,
        sources.c.feed_title,
        sources.c.feed_link,
        sources.c.feed_updated,
    ).select_from(entries.join(sources))


def _stored_entry(row: AnyRow) -> StoredEntry:
    return StoredEntry(
        entry_id=row.entry_id,
        source=row.source,
        feed=FeedInfo(
            id=row.feed_id, title=row.feed_title, link=row.feed_link, updated=row.feed_updated
        ),
        data=EntryData(
            id=row.feed_entry_id,
            key=row.key,
            title=row.title,
            link=row.link,
            published=row.published,
            updated=row.updated,
            authors=tuple(row.authors),
            categories=tuple(row.categories),
            content=row.content,
            summary=row.summary,
            content_hash=row.content_hash,
        ),
        first_seen=row.first_seen,
        changed_at=row.changed_at,
    )


def _matched_entry_select() -> Any:
    return (
        _entry_select()
        .add_columns(matches.c.subscription, matches.c.terms, matches.c.matched_at)
        .join(matches, matches.c.entry_id == entries.c.id)
    )


def _matched_entry(row: AnyRow) -> MatchedEntry:
    return MatchedEntry(
        entry=_stored_entry(row),
        subscription=row.subscription,
        terms=tuple(row.terms),
        matched_at=row.matched_at,
    )


_UPDATE_MATCH_TERMS = update(matches).where(
    matches.c.subscription == bindparam("b_subscription"),
    matches.c.entry_id == bindparam("b_entry_id"),
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
