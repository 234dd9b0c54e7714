"""Fixtures of the polling tests: a scripted feed server on 127.0.0.1 and real services
(config file, SQLite store, fetcher, matcher) built the way ``feedsvc`` builds them."""

from __future__ import annotations

import asyncio
import textwrap
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from aiohttp import web

from feedsvc.cli import open_services
from feedsvc.config import load_config
from feedsvc.pipeline import Services
from tests.loopback import serving

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T0_RFC822 = "Thu, 26 Nov 2026 08:00:00 GMT"


@dataclass
class ScriptedServer:
    """Serves whatever handler a test puts under a path; counts hits and overlap."""

    port: int = 0
    routes: dict[str, Handler] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits[request.path] += 1
        handler = self.routes.get(request.path)
        if handler is None:
            return web.Response(status=404)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await handler(request)
        finally:
            self.in_flight -= 1


def rss(items: Sequence[int], *, ttl_minutes: int | None = None) -> bytes:
    """An RSS 2.0 feed of Chinese news items numbered ``items`` (newest first)."""
    ttl = f"<ttl>{ttl_minutes}</ttl>" if ttl_minutes is not None else ""
    entries = "".join(
        f"<item><guid>tag:news.example.cn,2026:{n}</guid>"
        f"<title>{escape(f'深圳新能源快讯第{n}条')}</title>"
        f"<link>https://news.example.cn/{n}.html</link>"
        f"<description>光伏与储能 第{n}篇</description>"
        f"<pubDate>{T0_RFC822}</pubDate></item>"
        for n in items
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        f"<title>新闻</title><link>https://news.example.cn/</link>{ttl}{entries}"
        "</channel></rss>"
    ).encode()


def feed(body: bytes, *, etag: str | None = None, **headers: str) -> Handler:
    """A feed answering conditional GETs with 304 when ``etag`` matches."""

    async def handler(request: web.Request) -> web.StreamResponse:
        sent = dict(headers, **({"ETag": etag} if etag else {}))
        if etag and request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=sent)
        return web.Response(body=body, content_type="application/rss+xml", headers=sent)

    return handler


def redirect(status: int, to: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, headers={"Location": to})

    return handler


def failing(status: int, **headers: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, text="不行", headers=headers)

    return handler


def slow(body: bytes, seconds: float) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(seconds)  # a slow server, so that overlapping requests show
        return web.Response(body=body, content_type="application/rss+xml")

    return handler


@pytest.fixture
async def site() -> AsyncIterator[ScriptedServer]:
    server = ScriptedServer()
    app = web.Application()
    app.router.add_get("/{tail:.*}", server.handle)
    async with serving(app) as server.port:
        yield server


def write_config(tmp_path: Path, site: ScriptedServer, sources: str, fetch: str = "") -> Path:
    """A config whose sources are the YAML lines ``sources`` and whose fetch section has
    test-sized limits plus ``fetch`` (more ``key: value`` pairs)."""
    path = tmp_path / "feedsvc.yaml"
    text = f"""\
        database: sqlite:///{tmp_path / "feedsvc.db"}
        secret: test-secret
        mail: {{delivery: "maildir:{tmp_path / "mail"}"}}
        fetch:
          allow_private: ["127.0.0.1:{site.port}"]
          connect_timeout: 1s
          read_timeout: 1s
          total_timeout: 2s
          min_every: 5m
          max_every: 12h
        """
    text = textwrap.dedent(text) + textwrap.indent(textwrap.dedent(fetch), "  ")
    text += "sources:\n" + textwrap.indent(textwrap.dedent(sources), "  ")
    text += "subscriptions:\n  - {name: energy, keywords: [新能源]}\n"
    path.write_text(text, encoding="utf-8")
    return path


OpenPipeline = Callable[..., AbstractAsyncContextManager[Services]]


@pytest.fixture
def open_pipeline(
    tmp_path: Path, site: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> OpenPipeline:
    """``async with open_pipeline(sources_yaml, fetch_yaml="") as svc``: real services."""
    monkeypatch.chdir(tmp_path)

    @asynccontextmanager
    async def run(sources: str, fetch: str = "") -> AsyncIterator[Services]:
        loaded = load_config(write_config(tmp_path, site, sources, fetch))
        async with open_services(loaded, parse_in_processes=False) as svc:
            yield svc

    return run
