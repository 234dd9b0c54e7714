"""Fixtures of the storage contract suite: every test runs on a fresh SQLite file and on a
fresh PostgreSQL schema (``FEEDSVC_TEST_POSTGRES``; required when ``CI=true``)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy.engine import make_url

from feedsvc.model import EntryData, FeedInfo
from feedsvc.store import SourceSpec, SqlStorage, open_storage
from tests.postgres import postgres_url

#: The injected clock: every test starts here.
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
LEASE = timedelta(minutes=5)
FEED = FeedInfo(
    id="tag:finews.example.com,2026:feed",
    title="财经快讯",
    link="https://finews.example.com/",
    updated=T0 - timedelta(hours=1),
)


def make_entry(n: int, **changes: Any) -> EntryData:
    """Entry number ``n`` of a Chinese finance feed (published ``n`` hours before T0);
    ``changes`` override fields."""
    fields: dict[str, Any] = {
        "id": f"tag:finews.example.com,2026:{n}",
        "key": f"tag:finews.example.com,2026:{n}",
        "title": f"深圳新能源汽车产业第{n}季度报告",
        "link": f"https://finews.example.com/news/{n}.html",
        "published": T0 - timedelta(hours=n),
        "updated": None,
        "authors": ("张三", "李四"),
        "categories": ("新能源", "深圳"),
        "content": f"<p>光伏与储能 第{n}篇</p>",
        "summary": f"光伏与储能 第{n}篇",
        "content_hash": f"hash-{n}",
    }
    fields.update(changes)
    return EntryData(**fields)


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _run_admin(url: str, statements: tuple[str, ...]) -> None:
    conn = await asyncpg.connect(_asyncpg_dsn(url))
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def _admin(url: str, *statements: str) -> None:
    """Run SQL on its own loop in a thread: fixtures may be set up inside the test's loop."""
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, _run_admin(url, statements)).result()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A database of its own for this test session (other suites share the server)."""
    url = postgres_url()
    name = f"feedsvc_store_{uuid.uuid4().hex[:12]}"
    _admin(url, f"CREATE DATABASE {name}")
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        _admin(url, f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a new SQLite file, or the session's PostgreSQL database with
    its schema dropped and recreated."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/db/feedsvc.db"
    url: str = request.getfixturevalue("postgres_database")
    _admin(url, "DROP SCHEMA public CASCADE", "CREATE SCHEMA public")
    return url


@pytest.fixture
async def open_store(database_url: str) -> AsyncIterator[Callable[[], SqlStorage]]:
    """Opens storages (nodes) on the test's database, not migrated; closes them after."""
    opened: list[SqlStorage] = []

    def open_one() -> SqlStorage:
        opened.append(open_storage(database_url))
        return opened[-1]

    yield open_one
    for store in opened:
        await store.close()


@pytest.fixture
async def storage(open_store: Callable[[], SqlStorage]) -> SqlStorage:
    """A migrated storage on a fresh database."""
    store = open_store()
    await store.migrate()
    return store


@pytest.fixture
def other_node(open_store: Callable[[], SqlStorage], storage: SqlStorage) -> SqlStorage:
    """A second storage on the same (migrated) database: another node."""
    return open_store()


@pytest.fixture
async def source(storage: SqlStorage) -> str:
    """One source, ``finews``, synced at T0."""
    await storage.sync_sources([SourceSpec("finews", "https://finews.example.com/feed.xml")], T0)
    return "finews"
