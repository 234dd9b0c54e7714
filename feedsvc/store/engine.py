"""Engines and transactions: SQLite and PostgreSQL set-up, the writer lock, errors.

``Database`` is the base every aggregate's storage (sources, entries, matches,
subscribers and the outbox) builds on: one engine, one transaction per method.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Executable, Table, event, func, make_url, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from feedsvc.errors import StorageError
from feedsvc.store import schema

#: How long a SQLite writer waits for another one before failing ("database is locked").
SQLITE_BUSY_TIMEOUT_S = 30.0

#: Execution option marking a connection whose transaction writes (see ``_sqlite_begin``).
_WRITES = "feedsvc_writes"

#: Errors of the database or of reaching it; anything else is a bug and passes through.
_DATABASE_ERRORS = (DBAPIError, PoolTimeoutError, OSError)


def create_engine(url: str) -> AsyncEngine:
    """The engine for ``url`` (see ``feedsvc.store.sql.open_storage``).

    Raises:
        ValueError: the URL names another database or driver, or an in-memory SQLite
            database.
        StorageError: the SQLite file cannot be opened as a database.
    """
    parsed = make_url(url)
    if parsed.drivername in {"sqlite", "sqlite+aiosqlite"}:
        return _sqlite_engine(parsed)
    if parsed.drivername in {"postgresql", "postgresql+asyncpg"}:
        return _postgres_engine(parsed)
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


class Database:
    """One SQLAlchemy async engine (SQLite or PostgreSQL) and its transactions."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        """The SQLAlchemy engine, for diagnostics and tests; feedsvc code uses the methods."""
        self._postgres = engine.dialect.name == "postgresql"
        # SQLite has one writer: this process's writers queue here instead of in
        # SQLite's busy handler, which sleeps (ms, growing) and made 1,000 concurrent
        # source updates 4x slower than the same updates one after the other.
        self._sqlite_writer = None if self._postgres else asyncio.Lock()

    def __repr__(self) -> str:
        url = self.engine.url.render_as_string(hide_password=True)
        return f"{type(self).__name__}({url!r})"

    async def migrate(self) -> None:
        """Create or upgrade the schema (idempotent, safe to run on every start)."""
        async with self._transaction(writes=True) as conn:
            await conn.run_sync(schema.migrate, datetime.now(UTC))

    async def close(self) -> None:
        """Release connections."""
        await self.engine.dispose()

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


def _driver_message(error: BaseException) -> str:
    # DBAPIError's own str() repeats the whole statement and its parameters (raw digests).
    return str(getattr(error, "orig", None) or error).strip()


def insert_on_conflict(table: Table, postgres: bool) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that supports ``ON CONFLICT`` (same syntax on both databases)."""
    return postgresql.insert(table) if postgres else sqlite.insert(table)


async def execute_many(
    conn: AsyncConnection, statement: Executable, rows: list[dict[str, Any]]
) -> None:
    """Run ``statement`` once per row, in one round trip (no-op without rows)."""
    if rows:
        await conn.execute(statement, rows)


async def exclude_other_config_syncs(conn: AsyncConnection) -> None:
    """Wait for any other node's config sync to commit, then see its rows.

    Nodes starting together sync the same config; without this, both would insert the
    same new names and one would fail on the unique constraint. PostgreSQL: an advisory
    lock held to the end of the transaction (READ COMMITTED: later statements see what
    the other node committed). SQLite: ``BEGIN IMMEDIATE`` already serialises writers.
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(select(func.pg_advisory_xact_lock(schema.CONFIG_SYNC_LOCK_KEY)))
