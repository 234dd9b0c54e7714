"""Feeds named on the command line (``feedsvc match``): fetched from http(s) or file:
URLs, or read from paths, and parsed."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from feedsvc.cli.compose import now
from feedsvc.config import FetchConfig
from feedsvc.fetch import Fetcher
from feedsvc.model import Fetched, ParsedFeed, SourceForUpdate
from feedsvc.parse import parse_feed

#: Loads and parses one feed named on the command line.
FeedLoader = Callable[[str], Awaitable[ParsedFeed]]


@contextlib.asynccontextmanager
async def open_feed_loader(feeds: Sequence[str]) -> AsyncIterator[FeedLoader]:
    """A loader for ``feeds``, with a fetcher open while the block runs.

    The user names these feeds on their own machine, so the addresses they name (a
    local test server, say) are allowed; redirects elsewhere are still guarded.
    """
    config = FetchConfig(file_root="/", allow_private=_named_addresses(feeds))
    async with Fetcher(config) as fetcher:

        async def load(feed: str) -> ParsedFeed:
            return await _load_feed(fetcher, feed)

        yield load


def _named_addresses(feeds: Sequence[str]) -> list[str]:
    """``address:port`` for every host named by an http(s) URL among ``feeds``."""
    allowed = []
    for feed in feeds:
        parts = urlsplit(feed)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            continue
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            infos = socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP)
        except OSError:
            continue  # the fetch reports the failure to resolve
        for *_, sockaddr in infos:
            address = str(sockaddr[0])
            allowed.append(f"[{address}]:{port}" if ":" in address else f"{address}:{port}")
    return allowed


async def _load_feed(fetcher: Fetcher, feed: str) -> ParsedFeed:
    """A feed given on the command line: an http(s) URL, a file: URL or a path."""
    if urlsplit(feed).scheme in ("http", "https", "file"):
        result = await fetcher.fetch(SourceForUpdate(name=feed, url=feed))
        assert isinstance(result, Fetched)  # no validators were sent
        body, url, headers = result.body, result.url, dict(result.headers)
    else:
        path = Path(feed)
        body, url, headers = path.read_bytes(), path.resolve().as_uri(), {}
    return parse_feed(body, source=feed, url=url, headers=headers, now=now())
