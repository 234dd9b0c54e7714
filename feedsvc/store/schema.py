"""The database schema (SQLAlchemy Core tables) and its ordered, append-only migrations."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    func,
    inspect,
    select,
)
from sqlalchemy.engine import Connection
from sqlalchemy.types import TypeDecorator

from feedsvc.errors import StorageError

#: PostgreSQL advisory lock key held while migrating ("feedsvc" in ASCII), so that
#: two nodes starting at once do not both create the tables.
MIGRATION_LOCK_KEY = 0x66656564737663
#: PostgreSQL advisory lock key held while syncing sources or subscribers with the config.
CONFIG_SYNC_LOCK_KEY = MIGRATION_LOCK_KEY + 1


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones, so values are stored
    as naive UTC text (SQLAlchemy's fixed-width ISO format, which sorts and compares
    correctly as text) and get ``tzinfo=UTC`` back when read. Naive datetimes are
    refused: guessing their zone is how digests end up an hour off.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is UTC:  # the usual case, checked first: a cycle binds ~200,000
            return value.replace(tzinfo=None) if dialect.name == "sqlite" else value
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: feedsvc stores aware UTC datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


#: Row ids: 64-bit on PostgreSQL; on SQLite only ``INTEGER PRIMARY KEY`` is the rowid.
Id = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied_at", UtcDateTime, nullable=False),
)

sources = Table(
    "sources",
    metadata,
    Column("id", Id, primary_key=True),
    Column("name", Text, nullable=False, unique=True),
    #: The URL the config gives; ``url`` differs after a permanent redirect.
    Column("config_url", Text, nullable=False),
    Column("url", Text, nullable=False),
    #: False when the config disables the source or no longer lists it.
    Column("enabled", Boolean, nullable=False),
    #: Set by a 410 Gone; cleared only when the config URL changes.
    Column("gone", Boolean, nullable=False, default=False),
    Column("etag", Text),
    Column("last_modified", Text),
    Column("body_hash", Text),
    Column("next_poll", UtcDateTime),
    Column("lease_owner", Text),
    Column("lease_until", UtcDateTime),
    Column("last_success", UtcDateTime),
    Column("last_error_at", UtcDateTime),
    Column("last_error_kind", Text),
    Column("last_error", Text),
    Column("consecutive_failures", Integer, nullable=False, default=0),
    #: Adaptive polling (migration 2): when a poll last found new entries, the moving
    #: average of the seconds between new entries, the feed's own ttl hint in seconds.
    Column("last_new_at", UtcDateTime),
    Column("publish_gap_s", Float),
    Column("feed_min_interval_s", Float),
    #: The feed's own data (FeedInfo) from the last parse; empty until then.
    Column("feed_id", Text, nullable=False, default=""),
    Column("feed_title", Text, nullable=False, default=""),
    Column("feed_link", Text),
    Column("feed_updated", UtcDateTime),
    Column("created_at", UtcDateTime, nullable=False),
    Index("ix_sources_due", "next_poll"),
)

entries = Table(
    "entries",
    metadata,
    Column("id", Id, primary_key=True),
    Column("source_id", Id, ForeignKey("sources.id"), nullable=False),
    Column("key", Text, nullable=False),
    #: The feed's own id for the entry (EntryData.id).
    Column("feed_entry_id", Text, nullable=False),
    Column("title", Text, nullable=False),
    #: Case-folded title with white space collapsed: the "same link and title" rule.
    Column("title_norm", Text, nullable=False),
    Column("link", Text),
    Column("published", UtcDateTime),
    Column("updated", UtcDateTime),
    Column("authors", JSON, nullable=False),
    Column("categories", JSON, nullable=False),
    Column("content", Text, nullable=False),
    Column("summary", Text, nullable=False),
    Column("content_hash", Text, nullable=False),
    Column("first_seen", UtcDateTime, nullable=False),
    Column("changed_at", UtcDateTime, nullable=False),
    UniqueConstraint("source_id", "key", name="uq_entries_source_key"),
    Index("ix_entries_source_link_title", "source_id", "link", "title_norm"),
)

matches = Table(
    "matches",
    metadata,
    Column("subscription", Text, nullable=False),
    Column("entry_id", Id, ForeignKey("entries.id"), nullable=False),
    Column("terms", JSON, nullable=False),
    Column("matched_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("subscription", "entry_id", name="pk_matches"),
    Index("ix_matches_subscription_time", "subscription", "matched_at"),
)

subscribers = Table(
    "subscribers",
    metadata,
    Column("id", Id, primary_key=True),
    Column("email", Text, nullable=False, unique=True),
    Column("created_at", UtcDateTime, nullable=False),
)

subscriber_subscriptions = Table(
    "subscriber_subscriptions",
    metadata,
    Column("subscriber_id", Id, ForeignKey("subscribers.id"), nullable=False),
    Column("subscription", Text, nullable=False),
    #: Matches made before this instant are never sent to this subscriber.
    Column("started_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("subscriber_id", "subscription", name="pk_subscriber_subscriptions"),
    Index("ix_subscriber_subscriptions_subscription", "subscription"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Id, primary_key=True),
    Column("subscriber", Text, nullable=False),
    Column("message_id", Text, nullable=False, unique=True),
    Column("raw", LargeBinary, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    #: Claims so far, the current one included.
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt", UtcDateTime, nullable=False),
    Column("lease_owner", Text),
    Column("lease_until", UtcDateTime),
    Column("sent_at", UtcDateTime),
    #: A permanent failure: never retried.
    Column("failed", Boolean, nullable=False, default=False),
    Column("last_error_at", UtcDateTime),
    Column("last_error", Text),
    Index("ix_outbox_subscriber", "subscriber", "created_at"),
    Index("ix_outbox_due", "next_attempt"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("outbox_id", Id, ForeignKey("outbox.id"), nullable=False),
    #: The outbox message's subscriber, repeated so that the database itself refuses a
    #: second digest carrying a pair already delivered ("nothing twice").
    Column("subscriber", Text, nullable=False),
    Column("subscription", Text, nullable=False),
    Column("entry_id", Id, ForeignKey("entries.id"), nullable=False),
    PrimaryKeyConstraint("outbox_id", "subscription", "entry_id", name="pk_deliveries"),
    UniqueConstraint("subscriber", "subscription", "entry_id", name="uq_deliveries_once"),
)

unsubscribes = Table(
    "unsubscribes",
    metadata,
    Column("email", Text, nullable=False),
    Column("subscription", Text, nullable=False),
    Column("at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("email", "subscription", name="pk_unsubscribes"),
)


@dataclass(frozen=True)
class Migration:
    """One schema change, upgrading a database from ``version - 1`` to ``version``."""

    version: int
    description: str
    apply: Callable[[Connection], Any]


def _create_tables(conn: Connection) -> None:
    metadata.create_all(conn)


def _add_columns(table: Table, *names: str) -> Callable[[Connection], None]:
    """A migration adding nullable columns, typed as the Table above declares them."""

    def apply(conn: Connection) -> None:
        for name in names:
            column_type = table.c[name].type.compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {name} {column_type}")

    return apply


#: Append-only: never edit a released migration, add a new one at the end. The Table
#: objects above are always the newest schema, so a fresh database is created from
#: them directly (as migration 1 does) and later migrations only upgrade older ones,
#: the way lemon24/reader does it.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "create tables", _create_tables),
    Migration(
        2,
        "adaptive polling state on sources",
        _add_columns(sources, "last_new_at", "publish_gap_s", "feed_min_interval_s"),
    ),
)


def migrate(
    conn: Connection, now: datetime, migrations: tuple[Migration, ...] = MIGRATIONS
) -> list[int]:
    """Bring the schema to the newest version inside the caller's transaction.

    Must run in a transaction that no other node can interleave with: on PostgreSQL it
    takes a transaction-scoped advisory lock; on SQLite the caller's ``BEGIN IMMEDIATE``
    already excludes other writers. Returns the versions applied (empty when the
    database was up to date).

    Raises:
        StorageError: the database is newer than this code.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))
    newest = migrations[-1].version
    if not inspect(conn).has_table(schema_version.name):
        metadata.create_all(conn)
        _record_versions(conn, [newest], now)
        return [newest]
    current = conn.execute(select(func.max(schema_version.c.version))).scalar_one()
    if current > newest:
        raise StorageError(f"database schema version {current} is newer than {newest}")
    pending = [migration for migration in migrations if migration.version > current]
    for migration in pending:
        migration.apply(conn)
    _record_versions(conn, [migration.version for migration in pending], now)
    return [migration.version for migration in pending]


def _record_versions(conn: Connection, versions: list[int], now: datetime) -> None:
    if versions:
        conn.execute(schema_version.insert(), [{"version": v, "applied_at": now} for v in versions])
