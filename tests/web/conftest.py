"""Fixtures for the feeds and web tests: corpus matches, schema check, real SQLite and uvicorn."""

from __future__ import annotations

import asyncio
import calendar
import functools
import hashlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import feedparser
import pytest
import uvicorn
from lxml import etree
from starlette.applications import Starlette

from feedsvc.config import Config
from feedsvc.feeds import FeedMeta
from feedsvc.model import EntryData, FeedInfo, Match, MatchedEntry, StoredEntry
from feedsvc.store import open_storage
from feedsvc.store.base import SourceSpec, Storage
from feedsvc.web import WebContext, create_app

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
CORPUS = DATA / "corpus"
WEB_DATA = DATA / "web"
SEEN = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


def _when(item: Any, key: str) -> datetime | None:
    # dict.get: feedparser's own get() maps a missing "updated" to "published", with a warning.
    parsed = dict.get(item, f"{key}_parsed")
    return datetime.fromtimestamp(calendar.timegm(parsed), UTC) if parsed else None


def entry_data(entry: Any) -> EntryData:
    """An ``EntryData`` from a feedparser entry (the parser module's job, simplified)."""
    content = entry.get("content", [{}])[0].get("value", "") or entry.get("summary", "")
    entry_id = entry.get("id") or entry.get("link")
    return EntryData(
        id=entry_id,
        key=hashlib.sha256(entry_id.encode()).hexdigest()[:16],
        title=entry.get("title", ""),
        link=entry.get("link"),
        published=_when(entry, "published"),
        updated=_when(entry, "updated"),
        authors=tuple(a["name"] for a in entry.get("authors", []) if a.get("name")),
        categories=tuple(t["term"] for t in entry.get("tags", []) if t.get("term")),
        content=content,
        summary=entry.get("summary", ""),
        content_hash=hashlib.sha256(content.encode()).hexdigest(),
    )


def parse_corpus(path: Path) -> tuple[FeedInfo, list[EntryData]]:
    info, entries = _parsed_corpus(path)
    return info, list(entries)


@functools.cache
def _parsed_corpus(path: Path) -> tuple[FeedInfo, tuple[EntryData, ...]]:
    # Cached: feedparser takes about 0.4 s over the corpus, and the tests read it 40 times.
    parsed = feedparser.parse(path.read_bytes())
    info = FeedInfo(
        id=parsed.feed.get("id") or parsed.feed.get("link") or path.as_uri(),
        title=parsed.feed.get("title", ""),
        link=parsed.feed.get("link"),
        updated=_when(parsed.feed, "updated"),
    )
    return info, tuple(entry_data(e) for e in parsed.entries)


def as_matches(
    info: FeedInfo, entries: Sequence[EntryData], subscription: str = "news", seen: datetime = SEEN
) -> list[MatchedEntry]:
    return [
        MatchedEntry(
            entry=StoredEntry(i + 1, "finews", info, data, seen, seen),
            subscription=subscription,
            terms=(),
            matched_at=seen,
        )
        for i, data in enumerate(entries)
    ]


class Corpus:
    """Test data helpers, handed to tests as the ``corpus`` fixture."""

    def parse(self, relative: str) -> tuple[FeedInfo, list[EntryData]]:
        return parse_corpus(CORPUS / relative)

    as_matches = staticmethod(as_matches)
    entry_data = staticmethod(entry_data)

    def matches(self, relative: str = "all.xml", limit: int = 50) -> list[MatchedEntry]:
        info, entries = parse_corpus(CORPUS / relative)
        return as_matches(info, entries[:limit])


@pytest.fixture(scope="session")
def corpus() -> Corpus:
    return Corpus()


@pytest.fixture(scope="session")
def valid_atom() -> Callable[[bytes], Any]:
    """Checks a document against RFC 4287's RELAX NG schema and feedparser; returns the parse."""
    schema = etree.RelaxNG(etree.parse(str(DATA / "atom.rng")))

    def check(body: bytes) -> Any:
        document = etree.fromstring(body)
        assert schema.validate(document), schema.error_log
        parsed = feedparser.parse(body)
        assert parsed.bozo == 0, parsed.get("bozo_exception")
        return parsed

    return check


@pytest.fixture
def meta() -> FeedMeta:
    return FeedMeta("new-energy", "新能源与光伏", "关键词：新能源 OR 光伏", "http://127.0.0.1:8080")


# -- the web app over a real SQLite database, served by a real uvicorn -----------------

SECRET = "test-secret-测试"
PRIVATE_TOKEN = "k3y-私密-token"
CONFIG = {
    "http": {"base_url": "http://feeds.example"},
    "sources": [
        {"name": "finews", "url": "https://finews.withounder.com/feed.xml", "every": "5m"},
        {"name": "hk", "url": "https://finews.withounder.com/hk.xml", "every": "30m"},
    ],
    "subscriptions": [
        {"name": "news", "title": "财经快讯", "query": "股", "max_entries": 50},
        {"name": "desk-hk", "title": "港股内参", "query": "港股", "token": PRIVATE_TOKEN,
         "sources": ["hk"]},
        {"name": "mail-only", "keywords": ["深圳"], "atom": False},
    ],
}  # fmt: skip


@dataclass
class FakeClock:
    """Injected time: the wall clock and the monotonic clock move only when told."""

    now: datetime = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
    seconds: float = 1000.0

    def wall(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return self.seconds

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.seconds += seconds


@dataclass
class Site:
    """A running app: its storage, clock, base URL and an HTTP client."""

    app: Starlette
    context: WebContext
    storage: Storage
    clock: FakeClock
    url: str
    http: aiohttp.ClientSession
    next_entry: int = 0
    sources_synced: set[str] = field(default_factory=set)

    async def add_matches(
        self, relative: str, subscription: str, count: int, source: str = "finews"
    ) -> list[EntryData]:
        """Store the next ``count`` corpus entries of a file and match them."""
        info, entries = parse_corpus(CORPUS / relative)
        batch = entries[self.next_entry : self.next_entry + count]
        self.next_entry += count
        await self.store(source, info, batch, subscription)
        return batch

    async def store(
        self, source: str, info: FeedInfo, entries: Sequence[EntryData], subscription: str
    ) -> list[StoredEntry]:
        if source not in self.sources_synced:
            self.sources_synced.add(source)
            specs = [SourceSpec(s["name"], s["url"]) for s in CONFIG["sources"]]  # type: ignore[index]
            await self.storage.sync_sources(specs, self.clock.now)
        stored = await self.storage.save_entries(source, info, entries, self.clock.now)
        matches = [Match(subscription, s.entry_id, ("股",)) for s in stored]
        await self.storage.save_matches(matches, self.clock.now)
        return stored

    async def get(self, path: str, **headers: str) -> tuple[aiohttp.ClientResponse, bytes]:
        return await self.request("GET", path, **headers)

    async def request(
        self, method: str, path: str, data: Any = None, **headers: str
    ) -> tuple[aiohttp.ClientResponse, bytes]:
        # aiohttp asks for gzip by default; the tests ask for it when they mean it.
        headers = {"Accept-Encoding": "identity", **headers}
        async with self.http.request(
            method, self.url + path, headers=headers, data=data, allow_redirects=False
        ) as response:
            return response, await response.read()


@asynccontextmanager
async def serve(app: Starlette) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 at a free port, in this event loop."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.005)  # waiting for readiness, not for timing
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        # Shut down at once rather than at uvicorn's next 0.1 s tick: keeps the suite fast.
        server.should_exit = True
        await server.shutdown()
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


@pytest.fixture
def serve_app() -> Callable[[Starlette], AbstractAsyncContextManager[str]]:
    """``async with serve_app(app) as url``: a real server for an app built in a test."""
    return serve


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    store = open_storage(f"sqlite:///{tmp_path / 'feedsvc.db'}")
    await store.migrate()
    yield store
    await store.close()


@pytest.fixture
def config() -> Config:
    return Config.model_validate(CONFIG)


@asynccontextmanager
async def open_site(
    config: Config, storage: Storage, clock: FakeClock, **options: Any
) -> AsyncIterator[Site]:
    """The app over ``storage``, served for real; ``options`` go to ``WebContext``."""
    context = WebContext(
        config=config,
        storage=storage,
        secret=SECRET,
        templates_dir=REPO / "templates",
        clock=clock.wall,
        monotonic=clock.monotonic,
        **options,
    )
    app = create_app(context)
    # auto_decompress off: the tests look at the bytes on the wire.
    async with serve(app) as url, aiohttp.ClientSession(auto_decompress=False) as http:
        yield Site(app, context, storage, clock, url, http)


@pytest.fixture
async def site(config: Config, storage: Storage, clock: FakeClock) -> AsyncIterator[Site]:
    async with open_site(config, storage, clock) as running:
        yield running


@pytest.fixture
def site_with(
    config: Config, storage: Storage, clock: FakeClock
) -> Callable[..., AbstractAsyncContextManager[Site]]:
    """``async with site_with(websub_hub=…) as site``: the site with other options."""
    return lambda **options: open_site(config, storage, clock, **options)
