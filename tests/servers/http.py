"""The one fake HTTP server of the tests: feeds (and anything else a test scripts) on
127.0.0.1, served by aiohttp in the test's event loop.

A test fills ``files`` with static feeds (served with a strong ETag and Last-Modified,
304 on a matching If-None-Match) or ``routes`` with handlers for scripted and hostile
behaviour; both may change while the server runs. Every request is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: The Last-Modified of every static file: fixed, so a client's If-Modified-Since is known.
_STATIC_LAST_MODIFIED = formatdate(1_700_000_000, usegmt=True)


@dataclass
class FeedServer:
    """A running fake server: what it serves, and what it saw."""

    port: int = 0
    #: Path → body, served as ``application/atom+xml`` with validators.
    files: dict[str, bytes] = field(default_factory=dict)
    #: Path → handler; a ``{name}`` segment matches any one segment and is put in
    #: ``request.match_info``. Routes are looked up before files.
    routes: dict[str, Handler] = field(default_factory=dict)
    #: Requests per path, and every request's path and headers in order of arrival.
    hits: Counter[str] = field(default_factory=Counter)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    #: Requests being handled now, and the most there were at once.
    in_flight: int = 0
    max_in_flight: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.hits[request.path] += 1
        self.requests.append((request.path, dict(request.headers)))
        handler = self._route(request) or self._file(request.path)
        if handler is None:
            return web.Response(status=404)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await handler(request)
        finally:
            self.in_flight -= 1

    def _route(self, request: web.Request) -> Handler | None:
        if handler := self.routes.get(request.path):
            return handler
        for pattern, handler in self.routes.items():
            if match := _pattern(pattern).fullmatch(request.path):
                request.match_info.update(match.groupdict())
                return handler
        return None

    def _file(self, path: str) -> Handler | None:
        body = self.files.get(path)
        if body is None:
            return None
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        validators = {"Last-Modified": _STATIC_LAST_MODIFIED}
        return feed(body, etag=etag, content_type="application/atom+xml", **validators)


def _pattern(path: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w+)\}", path)  # literal, name, literal, name, …
    return re.compile(
        "".join(f"(?P<{part}>[^/]+)" if i % 2 else re.escape(part) for i, part in enumerate(parts))
    )


@contextlib.asynccontextmanager
async def serve_feeds(
    routes: dict[str, Handler] | None = None, files: dict[str, bytes] | None = None
) -> AsyncIterator[FeedServer]:
    """A FeedServer on a free port of 127.0.0.1 (any method, any path); stops on exit.

    Handlers are cancelled when their client goes away (hostile handlers trickle forever).
    """
    server = FeedServer(routes=dict(routes or {}), files=dict(files or {}))
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server._handle)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.1)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        server.port = int(runner.addresses[0][1])
        yield server
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def serve_raw(reply: bytes) -> AsyncIterator[str]:
    """Answers every request with ``reply`` exactly as written (status line, headers and
    body), for replies no HTTP server library would send; yields ``127.0.0.1:port``."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(reply)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


# -- scripted behaviours ----------------------------------------------------------------


def feed(
    body: bytes,
    *,
    etag: str | None = None,
    content_type: str = "application/rss+xml",
    **headers: str,
) -> Handler:
    """A feed with ``headers``; with ``etag``, a 304 when If-None-Match matches it."""
    sent = dict(headers, **({"ETag": etag} if etag else {}))

    async def handler(request: web.Request) -> web.StreamResponse:
        if etag and request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=sent)
        return web.Response(body=body, content_type=content_type, headers=sent)

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
    """A feed that takes ``seconds`` to answer, so that overlapping requests show."""

    async def handler(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return web.Response(body=body, content_type="application/rss+xml")

    return handler
