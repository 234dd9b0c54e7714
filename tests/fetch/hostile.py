"""Hostile and well-behaved feeds, served by the tests' one HTTP server on 127.0.0.1, and
fetchers with test-sized limits."""

from __future__ import annotations

import asyncio
import gzip
import socket
import struct
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from feedsvc.config import FetchConfig
from feedsvc.fetch import Fetcher
from feedsvc.model import Fetched, NotModified, SourceForUpdate
from tests.servers.http import (
    FeedServer,
    Handler,
    failing,
    feed,
    redirect,
    serve_feeds,
    serve_raw,
    slow,
)

DATA = Path(__file__).resolve().parents[1] / "data"
CORPUS = DATA / "corpus"
FETCH_DATA = DATA / "fetch"
#: Small limits keep every hostile case fast; the corpus feed (199 KB) fits the body cap.
BODY_CAP = 512 * 1024
TOTAL_TIMEOUT = 0.6
ATOM = "application/atom+xml"


@cache
def gzip_bomb() -> bytes:
    """~16 KB of gzip that inflates to 16 MB of zeros (32 times the test body cap)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1024 * 1024)
    return b"".join([*(compressor.compress(block) for _ in range(16)), compressor.flush()])


def corpus_feed() -> bytes:
    return (CORPUS / "all.xml").read_bytes()


def _compressed(body: bytes) -> Handler:
    raw_deflate = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    half = len(body) // 2
    encodings = {
        "gzip": ("gzip", gzip.compress(body)),
        # RFC 1952 allows several members; each inflates to the next part of the body.
        "gzip-members": ("gzip", gzip.compress(body[:half]) + gzip.compress(body[half:])),
        "deflate": ("deflate", zlib.compress(body)),
        "raw-deflate": ("deflate", raw_deflate.compress(body) + raw_deflate.flush()),
        "gzip-padded": ("gzip", gzip.compress(body) + bytes(512)),
        "gzip-truncated": ("gzip", gzip.compress(body)[:-100]),
    }

    async def handler(request: web.Request) -> web.StreamResponse:
        encoding, compressed = encodings[request.match_info["kind"]]
        return web.Response(
            body=compressed, headers={"Content-Encoding": encoding, "Content-Type": ATOM}
        )

    return handler


async def _data_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    charset = request.query.get("charset")
    content_type = "application/xml" + (f"; charset={charset}" if charset else "")
    return web.Response(
        body=(FETCH_DATA / name).read_bytes(), headers={"Content-Type": content_type}
    )


async def _trickle(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/xml"})
    await response.prepare(request)
    for _ in range(1000):  # one byte every 50 ms: 50 s if nobody cuts it off
        await response.write(b"<")
        await asyncio.sleep(0.05)
    return response


async def _redirect_to(request: web.Request) -> web.StreamResponse:
    return web.Response(status=302, headers={"Location": request.query["to"]})


async def _chain(request: web.Request) -> web.StreamResponse:
    left = int(request.match_info["n"])
    target = f"/chain/{left - 1}" if left > 0 else "/feed"
    return web.Response(status=302, headers={"Location": target})


async def _bomb(request: web.Request) -> web.StreamResponse:
    return web.Response(
        body=gzip_bomb(),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/xml"},
    )


async def _huge(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/xml"})
    if "declared" in request.query:
        response.content_length = 50 * 1024 * 1024
    await response.prepare(request)
    chunk = b"x" * (1024 * 1024)
    for _ in range(50):  # 50 MB unless the client hangs up first
        await response.write(chunk)
    return response


def _reset_after(head: bytes) -> Handler:
    """Promises 100,000 bytes, sends ``head``, then resets the connection."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/xml"})
        response.content_length = 100_000
        await response.prepare(request)
        await response.write(head)
        sock = request.transport.get_extra_info("socket") if request.transport else None
        if sock is not None:  # SO_LINGER 0: close with a TCP RST, not a FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        assert request.transport is not None
        request.transport.abort()
        return response

    return handler


def hostile_routes() -> dict[str, Handler]:
    """Every behaviour the fetch tests meet, by path."""
    body = corpus_feed()
    validators = {
        "Last-Modified": "Tue, 31 May 2022 10:03:41 GMT",
        "Cache-Control": "public, max-age=600",
    }
    retry_later = {
        "Retry-After": "Thu, 26 Nov 2026 12:05:00 GMT",
        "Date": "Thu, 26 Nov 2026 12:00:00 GMT",
    }
    return {
        "/feed": feed(body, etag='"v1"', content_type=ATOM, **validators),
        "/plain": feed(body, content_type=ATOM),
        "/wrong-type": feed(body, content_type="text/plain"),
        "/compressed/{kind}": _compressed(body),
        "/gb18030": feed((CORPUS / "rss2" / "all.gb18030.xml").read_bytes()),
        "/data/{name}": _data_file,
        "/trickle": _trickle,
        "/loop/a": redirect(302, "/loop/b"),
        "/loop/b": redirect(302, "/loop/a"),
        "/chain/{n}": _chain,
        "/redirect": _redirect_to,
        "/moved": redirect(301, "/moved-again"),
        "/moved-again": redirect(308, "/plain"),
        "/found": redirect(302, "/plain"),
        "/moved-then-found": redirect(301, "/found"),
        "/no-location": failing(302),
        "/gone": failing(410),
        "/ratelimited": failing(429, **{"Retry-After": "120"}),
        "/unavailable": failing(503, **retry_later),
        "/server-error": failing(500),
        "/metadata": redirect(302, "http://169.254.169.254/latest/meta-data/"),
        "/to-ftp": redirect(302, "ftp://127.0.0.1/feed.xml"),
        "/bomb": _bomb,
        "/huge": _huge,
        "/reset": _reset_after(body[:1000]),
        # A slow server: overlapping requests would pile up (counted by the server).
        "/hold": slow(body, 0.05),
        "/page": feed((FETCH_DATA / "page.html").read_bytes(), content_type="text/html"),
    }


@pytest.fixture
async def server() -> AsyncIterator[FeedServer]:
    """The hostile feed server on 127.0.0.1 (a fresh port per test)."""
    async with serve_feeds(hostile_routes()) as running:
        yield running


@pytest.fixture
async def other_server() -> AsyncIterator[FeedServer]:
    """A second loopback server that no test config allows: it must never be hit."""
    async with serve_feeds({"/feed.xml": feed(corpus_feed(), content_type=ATOM)}) as running:
        yield running


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[bytes], Awaitable[str]]]:
    """``await raw_server(reply)``: a server answering ``reply`` as written; its address."""
    async with AsyncExitStack() as servers:

        async def serve(reply: bytes) -> str:
            return await servers.enter_async_context(serve_raw(reply))

        yield serve


def _fetch_config(*allow: str, **overrides: Any) -> FetchConfig:
    """A FetchConfig with test-sized limits that allows exactly ``allow``."""
    settings: dict[str, Any] = {
        "user_agent_contact": "https://ops.example.com/feedsvc",
        "allow_private": list(allow),
        "connect_timeout": timedelta(seconds=1),
        "read_timeout": timedelta(seconds=1),
        "total_timeout": timedelta(seconds=TOTAL_TIMEOUT),
        "max_body_bytes": BODY_CAP,
        "max_redirects": 5,
    }
    settings.update(overrides)
    return FetchConfig(**settings)


@pytest.fixture
def make_config() -> Callable[..., FetchConfig]:
    """``make_config(*allow, **overrides)``: a FetchConfig with test-sized limits."""
    return _fetch_config


@pytest.fixture
async def fetcher(server: FeedServer) -> AsyncIterator[Fetcher]:
    """A Fetcher that may reach exactly the test server's address and port."""
    async with Fetcher(_fetch_config(f"127.0.0.1:{server.port}")) as f:
        yield f


@pytest.fixture
def fetch(fetcher: Fetcher) -> Callable[..., Awaitable[Fetched | NotModified]]:
    """``await fetch(url, **source_fields)`` with the default fetcher."""

    async def run(url: str, **fields: Any) -> Fetched | NotModified:
        return await fetcher.fetch(SourceForUpdate(name="src", url=url, **fields))

    return run
