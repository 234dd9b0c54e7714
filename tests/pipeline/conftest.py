"""Fixtures of the polling tests: the tests' feed server on 127.0.0.1 and real services
(config file, SQLite store, fetcher, matcher) built the way ``feedsvc`` builds them."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

from feedsvc.cli import open_services
from feedsvc.config import load_config
from feedsvc.pipeline import Services
from tests.servers.http import FeedServer, failing, feed, redirect, serve_feeds, slow

# The scripted behaviours this folder's tests put on the server.
__all__ = ["failing", "feed", "redirect", "slow"]

T0_RFC822 = "Thu, 26 Nov 2026 08:00:00 GMT"
#: The name this folder's tests know the feed server by.
ScriptedServer = FeedServer


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


@pytest.fixture
async def site() -> AsyncIterator[FeedServer]:
    """The feed server; each test puts its handlers in ``site.routes``."""
    async with serve_feeds() as server:
        yield server


def write_config(tmp_path: Path, site: FeedServer, sources: str, fetch: str = "") -> Path:
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
    tmp_path: Path, site: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> OpenPipeline:
    """``async with open_pipeline(sources_yaml, fetch_yaml="") as svc``: real services."""
    monkeypatch.chdir(tmp_path)

    @asynccontextmanager
    async def run(sources: str, fetch: str = "") -> AsyncIterator[Services]:
        loaded = load_config(write_config(tmp_path, site, sources, fetch))
        async with open_services(loaded, parse_in_processes=False) as svc:
            yield svc

    return run
