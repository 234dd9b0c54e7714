"""Hostile and well-behaved feed servers on 127.0.0.1; a guard that no packet leaves the host."""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import socket
import struct
import sys
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from feedsvc.config import FetchConfig
from feedsvc.fetch import Fetcher
from feedsvc.model import Fetched, NotModified, SourceForUpdate
from tests.loopback import serving

DATA = Path(__file__).resolve().parents[1] / "data"
CORPUS = DATA / "corpus"
FETCH_DATA = DATA / "fetch"
#: Small limits keep every hostile case fast; the corpus feed (199 KB) fits the body cap.
BODY_CAP = 512 * 1024
TOTAL_TIMEOUT = 0.6

# ---------------------------------------------------------------- network guard
# An audit hook cannot be removed, so it is installed once and armed only while a test
# of this directory runs; other test areas (e.g. PostgreSQL on another host) are unaffected.

_guard = {"armed": False}
_violations: list[str] = []


def _numeric_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        pass
    try:  # legacy spellings such as "2130706433" are numeric too: no DNS query
        return ipaddress.ip_address(socket.inet_ntoa(socket.inet_aton(host)))
    except OSError:
        return None


def _leaves_machine(event: str, args: tuple[Any, ...]) -> str | None:
    """The host an audited socket event would reach off this machine, if any."""
    if event == "socket.connect" and isinstance(args[1], tuple):
        address = _numeric_address(str(args[1][0]))
        return None if address is not None and address.is_loopback else str(args[1][0])
    if event == "socket.getaddrinfo" and args[0] is not None:
        host = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
        # Only a name lookup sends a packet (to DNS); numbers are checked at connect.
        return None if host == "localhost" or _numeric_address(host) else host
    return None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _guard["armed"]:
        return
    host = _leaves_machine(event, args)
    if host is not None:
        _violations.append(f"{event} to {host!r}")
        raise RuntimeError(f"test tried to reach {host!r} off this machine ({event})")


sys.addaudithook(_audit)


@pytest.fixture
def guard_violations() -> list[str]:
    """The off-machine accesses the guard has blocked during this test."""
    return _violations


@pytest.fixture(autouse=True)
def network_guard() -> Iterator[None]:
    """Fail the test on any connect (or DNS lookup) that would leave the machine."""
    _violations.clear()
    _guard["armed"] = True
    try:
        yield
    finally:
        _guard["armed"] = False
    assert not _violations, f"non-loopback network access: {_violations}"


# ---------------------------------------------------------------- hostile server


@dataclass
class FeedServer:
    """The in-process test server: its base URL and what it saw."""

    port: int
    hits: Counter[str] = field(default_factory=Counter)
    request_headers: list[dict[str, str]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@cache
def gzip_bomb() -> bytes:
    """~16 KB of gzip that inflates to 16 MB of zeros (32 times the test body cap)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1024 * 1024)
    return b"".join([*(compressor.compress(block) for _ in range(16)), compressor.flush()])


def corpus_feed() -> bytes:
    return (CORPUS / "all.xml").read_bytes()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _routes(server: FeedServer) -> dict[str, Handler]:
    feed = corpus_feed()

    async def conditional(request: web.Request) -> web.StreamResponse:
        headers = {
            "ETag": '"v1"',
            "Last-Modified": "Tue, 31 May 2022 10:03:41 GMT",
            "Cache-Control": "public, max-age=600",
        }
        if request.headers.get("If-None-Match") == '"v1"':
            return web.Response(status=304, headers=headers)
        return web.Response(body=feed, content_type="application/atom+xml", headers=headers)

    async def plain(request: web.Request) -> web.StreamResponse:
        return web.Response(body=feed, content_type="application/atom+xml")

    async def wrong_type(request: web.Request) -> web.StreamResponse:
        return web.Response(body=feed, content_type="text/plain")

    async def compressed(request: web.Request) -> web.StreamResponse:
        raw_deflate = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        half = len(feed) // 2
        encodings = {
            "gzip": ("gzip", gzip.compress(feed)),
            # RFC 1952 allows several members; each inflates to the next part of the body.
            "gzip-members": ("gzip", gzip.compress(feed[:half]) + gzip.compress(feed[half:])),
            "deflate": ("deflate", zlib.compress(feed)),
            "raw-deflate": ("deflate", raw_deflate.compress(feed) + raw_deflate.flush()),
            "gzip-padded": ("gzip", gzip.compress(feed) + bytes(512)),
            "gzip-truncated": ("gzip", gzip.compress(feed)[:-100]),
        }
        encoding, body = encodings[request.match_info["kind"]]
        return web.Response(
            body=body,
            headers={"Content-Encoding": encoding, "Content-Type": "application/atom+xml"},
        )

    async def gb18030(request: web.Request) -> web.StreamResponse:
        body = (CORPUS / "rss2" / "all.gb18030.xml").read_bytes()
        return web.Response(body=body, headers={"Content-Type": "application/rss+xml"})

    async def data_file(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        charset = request.query.get("charset")
        content_type = "application/xml" + (f"; charset={charset}" if charset else "")
        return web.Response(
            body=(FETCH_DATA / name).read_bytes(), headers={"Content-Type": content_type}
        )

    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/xml"})
        await response.prepare(request)
        for _ in range(1000):  # one byte every 50 ms: 50 s if nobody cuts it off
            await response.write(b"<")
            await asyncio.sleep(0.05)
        return response

    def redirect(status: int, target: str) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            return web.Response(status=status, headers={"Location": target})

        return handler

    async def redirect_to(request: web.Request) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": request.query["to"]})

    async def chain(request: web.Request) -> web.StreamResponse:
        left = int(request.match_info["n"])
        target = f"/chain/{left - 1}" if left > 0 else "/feed"
        return web.Response(status=302, headers={"Location": target})

    def status(code: int, **headers: str) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            return web.Response(status=code, text="no", headers=headers)

        return handler

    async def bomb(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=gzip_bomb(),
            headers={"Content-Encoding": "gzip", "Content-Type": "application/xml"},
        )

    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/xml"})
        if "declared" in request.query:
            response.content_length = 50 * 1024 * 1024
        await response.prepare(request)
        chunk = b"x" * (1024 * 1024)
        for _ in range(50):  # 50 MB unless the client hangs up first
            await response.write(chunk)
        return response

    async def reset(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/xml"})
        response.content_length = 100_000
        await response.prepare(request)
        await response.write(feed[:1000])
        sock = request.transport.get_extra_info("socket") if request.transport else None
        if sock is not None:  # SO_LINGER 0: close with a TCP RST, not a FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        assert request.transport is not None
        request.transport.abort()
        return response

    async def hold(request: web.Request) -> web.StreamResponse:
        server.in_flight += 1
        server.max_in_flight = max(server.max_in_flight, server.in_flight)
        try:
            await asyncio.sleep(0.05)  # the server is slow; overlapping requests would pile up
        finally:
            server.in_flight -= 1
        return web.Response(body=feed, content_type="application/atom+xml")

    async def to_page(request: web.Request) -> web.StreamResponse:
        return web.Response(body=(FETCH_DATA / "page.html").read_bytes(), content_type="text/html")

    return {
        "/feed": conditional,
        "/plain": plain,
        "/wrong-type": wrong_type,
        "/compressed/{kind}": compressed,
        "/gb18030": gb18030,
        "/data/{name}": data_file,
        "/trickle": trickle,
        "/loop/a": redirect(302, "/loop/b"),
        "/loop/b": redirect(302, "/loop/a"),
        "/chain/{n}": chain,
        "/redirect": redirect_to,
        "/moved": redirect(301, "/moved-again"),
        "/moved-again": redirect(308, "/plain"),
        "/found": redirect(302, "/plain"),
        "/moved-then-found": redirect(301, "/found"),
        "/no-location": status(302),
        "/gone": status(410),
        "/ratelimited": status(429, **{"Retry-After": "120"}),
        "/unavailable": status(
            503,
            **{
                "Retry-After": "Thu, 26 Nov 2026 12:05:00 GMT",
                "Date": "Thu, 26 Nov 2026 12:00:00 GMT",
            },
        ),
        "/server-error": status(500),
        "/metadata": redirect(302, "http://169.254.169.254/latest/meta-data/"),
        "/to-ftp": redirect(302, "ftp://127.0.0.1/feed.xml"),
        "/bomb": bomb,
        "/huge": huge,
        "/reset": reset,
        "/hold": hold,
        "/page": to_page,
    }


@pytest.fixture
async def server() -> AsyncIterator[FeedServer]:
    """The hostile feed server on 127.0.0.1 (a fresh port per test)."""
    app = web.Application()
    state = FeedServer(port=0)

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        state.hits[request.path] += 1
        state.request_headers.append(dict(request.headers))
        return await handler(request)

    app.middlewares.append(record)
    for path, handler in _routes(state).items():
        app.router.add_get(path, handler)
    async with serving(app) as state.port:
        yield state


@pytest.fixture
async def other_server() -> AsyncIterator[FeedServer]:
    """A second loopback server that no test config allows: it must never be hit."""
    app = web.Application()
    state = FeedServer(port=0)

    async def anything(request: web.Request) -> web.StreamResponse:
        state.hits[request.path] += 1
        return web.Response(body=corpus_feed(), content_type="application/atom+xml")

    app.router.add_get("/{tail:.*}", anything)
    async with serving(app) as state.port:
        yield state


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[bytes], Awaitable[str]]]:
    """Serves one fixed byte string (headers and body as written) to every connection."""
    servers: list[asyncio.Server] = []

    async def serve(reply: bytes) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(reply)
            await writer.drain()
            writer.close()

        srv = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(srv)
        return f"127.0.0.1:{srv.sockets[0].getsockname()[1]}"

    yield serve
    for srv in servers:
        srv.close()
        await srv.wait_closed()


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
