"""Storage contract: opening, migrating, error wrapping and the datetime rule."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, inspect, select

from feedsvc.errors import StorageError
from feedsvc.store import SourceSpec, SqlStorage, open_storage
from feedsvc.store.schema import MIGRATIONS, Migration, migrate, schema_version

from .conftest import LEASE, T0


async def versions(storage: SqlStorage) -> list[int]:
    async with storage.engine.connect() as conn:
        rows = await conn.execute(select(schema_version.c.version).order_by("version"))
        return list(rows.scalars())


async def test_migrate_twice_creates_the_newest_schema_once(storage: SqlStorage) -> None:
    await storage.migrate()

    assert await versions(storage) == [MIGRATIONS[-1].version]


async def test_two_nodes_migrating_a_fresh_database_at_once(
    open_store: Callable[[], SqlStorage],
) -> None:
    first, second = open_store(), open_store()

    await asyncio.gather(first.migrate(), second.migrate())

    assert await versions(first) == [MIGRATIONS[-1].version]
    await second.sync_sources([SourceSpec("finews", "https://finews.example.com/feed.xml")], T0)
    assert [s.name for s in await first.source_statuses()] == ["finews"]


async def test_migrate_applies_only_newer_migrations_in_order(storage: SqlStorage) -> None:
    extra = MetaData()
    newest = MIGRATIONS[-1].version
    later = (
        *MIGRATIONS,
        Migration(newest + 1, "add table a", Table("a", extra, Column("x", Integer)).create),
        Migration(newest + 2, "add table b", Table("b", extra, Column("x", Integer)).create),
    )

    async with storage.engine.begin() as conn:
        applied = await conn.run_sync(migrate, T0, later)
        again = await conn.run_sync(migrate, T0, later)
        tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())

    assert (applied, again) == ([newest + 1, newest + 2], [])
    assert {"a", "b"} <= set(tables)
    assert await versions(storage) == [newest, newest + 1, newest + 2]


async def test_migrate_refuses_a_database_newer_than_the_code(storage: SqlStorage) -> None:
    async with storage.engine.begin() as conn:
        await conn.execute(schema_version.insert().values(version=99, applied_at=T0))

    with pytest.raises(StorageError, match="99"):
        await storage.migrate()


async def test_database_errors_become_storage_errors(database_url: str, tmp_path: Path) -> None:
    not_a_database = tmp_path / "feedsvc.db"
    not_a_database.write_text("这不是数据库" * 1000)
    broken_url = (
        f"sqlite:///{not_a_database}"
        if database_url.startswith("sqlite")
        else "postgresql://feedsvc@127.0.0.1:1/feedsvc"  # nothing listens on port 1
    )

    with pytest.raises(StorageError) as caught:
        await open_storage(broken_url).migrate()

    assert caught.value.__cause__ is not None


async def test_a_naive_datetime_is_a_programming_error(storage: SqlStorage) -> None:
    naive = datetime(2026, 3, 1, 8, 0)

    with pytest.raises(ValueError, match="naive"):
        await storage.claim_due_sources(naive, "node-1", naive + LEASE, 10)


async def test_datetimes_come_back_utc_from_any_zone(storage: SqlStorage) -> None:
    beijing_time = T0.astimezone(timezone(timedelta(hours=8)))
    await storage.sync_sources([SourceSpec("finews", "https://finews.example.com/")], beijing_time)

    [status] = await storage.source_statuses()

    assert status.next_poll == T0
    assert status.next_poll is not None and status.next_poll.utcoffset() is not None
    assert str(status.next_poll.tzinfo) == "UTC"


def test_sqlite_url_creates_the_parent_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    store = open_storage("sqlite:///var/数据/feedsvc.db")

    assert (tmp_path / "var" / "数据" / "feedsvc.db").is_file()
    assert store.engine.url.drivername == "sqlite+aiosqlite"
    assert store.engine.url.database == str(tmp_path / "var" / "数据" / "feedsvc.db")


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgresql://feedsvc@127.0.0.1:55432/feedsvc", "postgresql+asyncpg"),
        ("postgresql+asyncpg://feedsvc@127.0.0.1:55432/feedsvc", "postgresql+asyncpg"),
    ],
)
def test_postgresql_urls_use_asyncpg(url: str, driver: str) -> None:
    assert open_storage(url).engine.url.drivername == driver


@pytest.mark.parametrize(
    "url", ["mysql://localhost/feedsvc", "postgresql+psycopg2://h/db", "sqlite:///:memory:"]
)
def test_unsupported_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match=r"memory|unsupported"):
        open_storage(url)


async def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    store = open_storage(f"sqlite:///{tmp_path}/feedsvc.db")
    await store.migrate()
    async with store.engine.connect() as conn:
        mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar_one()
    await store.close()

    assert mode == "wal"


async def test_migration_2_adds_the_adaptive_polling_columns_and_keeps_sources(
    storage: SqlStorage,
) -> None:
    await storage.sync_sources([SourceSpec("财经", "https://finews.example.com/feed.xml")], T0)
    async with storage.engine.begin() as conn:  # back to a version 1 database
        for column in ("last_new_at", "publish_gap_s", "feed_min_interval_s"):
            await conn.exec_driver_sql(f"ALTER TABLE sources DROP COLUMN {column}")
        await conn.execute(schema_version.delete())
        await conn.execute(schema_version.insert().values(version=1, applied_at=T0))

    await storage.migrate()
    [claimed] = await storage.claim_due_sources(T0, "node", T0 + LEASE, 10)

    assert await versions(storage) == [1, 2]
    assert claimed.name == "财经" and claimed.publish_gap is None and claimed.last_new_at is None
