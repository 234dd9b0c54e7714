"""The HTTP surface: cached feeds (conditional GET), discovery, unsubscribe, health, metrics."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import hmac
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from typing import Any, cast, get_args
from urllib.parse import parse_qs, quote
from zoneinfo import ZoneInfo

import aiohttp
import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from feedsvc.config import Config, SubscriptionConfig
from feedsvc.errors import StorageError
from feedsvc.feeds import (
    MEDIA_TYPES,
    FeedKind,
    FeedMeta,
    build_feed,
    build_opml,
    feed_meta,
    feed_updated,
    feed_url,
)
from feedsvc.model import MatchedEntry, SourceStatus
from feedsvc.store.base import Storage
from feedsvc.tokens import InvalidToken, UnsubscribeRequest, verify_unsubscribe

log = logging.getLogger(__name__)

_FEED_KINDS: frozenset[str] = frozenset(get_args(FeedKind))
_DEFAULT_MAX_AGE = timedelta(minutes=10)
_MAX_MAX_AGE = timedelta(hours=1)
_HEALTH_TIMEOUT_SECONDS = 5.0
_MAX_FORM_BYTES = 4096
_HUB_TIMEOUT = aiohttp.ClientTimeout(total=10)
_HTML_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class WebContext:
    """What the web app needs, built by the composition root."""

    config: Config
    storage: Storage
    #: Signs unsubscribe tokens (the config's secret).
    secret: str
    #: The templates root; the web pages live in its ``web/`` folder.
    templates_dir: Path
    #: Wall clock (aware UTC): unsubscribe times, status page, Last-Modified fallback.
    clock: Callable[[], datetime] = _utc_now
    #: Monotonic seconds, for how often cached feeds are revalidated.
    monotonic: Callable[[], float] = time.monotonic
    #: A cached feed asks the database whether it changed at most this often (seconds).
    revalidate_seconds: float = 1.0
    #: A WebSub hub: public feeds advertise it and it is pinged when they change.
    websub_hub: str | None = None


# -- the feed cache ------------------------------------------------------------------


@dataclass(frozen=True)
class RenderedFeed:
    """One rendered variant of a feed, ready to serve: rendered once per change."""

    body: bytes
    gzipped: bytes
    #: Strong validator of ``body``; ``gzip_etag`` of ``gzipped`` (RFC 9110 §8.8.3).
    etag: str
    gzip_etag: str
    last_modified: datetime
    media_type: str

    @property
    def last_modified_http(self) -> str:
        return format_datetime(self.last_modified, usegmt=True)


@dataclass(frozen=True)
class _Published:
    """A subscription that has a feed: what it says and how it is served."""

    meta: FeedMeta
    max_entries: int
    max_age: int


@dataclass
class _FeedState:
    """The cached state of one subscription's feed (all variants)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    checked_at: float = -math.inf
    #: Bumped by each invalidation; ``seen_generation`` is the one last revalidated.
    generation: int = 0
    seen_generation: int = 0
    #: ``storage.latest_match_change`` when ``matches`` were read.
    change: datetime | None = None
    matches: list[MatchedEntry] | None = None
    rendered: dict[FeedKind, RenderedFeed] = field(default_factory=dict)
    #: The last variant served per kind, kept across changes so Last-Modified only grows.
    previous: dict[FeedKind, RenderedFeed] = field(default_factory=dict)


class FeedCache:
    """Rendered feeds per (subscription, kind), revalidated against the database.

    A request costs a dictionary lookup while the feed is fresh; at most once per
    ``revalidate_seconds`` (or after :meth:`invalidate`) one request asks
    ``storage.latest_match_change`` and, when it moved, reads the matches again and
    renders each variant once. A cache entry is replaced whole, so a reader always
    gets one complete rendering, old or new, while a poll writes.
    """

    def __init__(self, ctx: WebContext, published: dict[str, _Published]) -> None:
        self._ctx = ctx
        self._published = published
        self._states = {name: _FeedState() for name in published}

    async def get(self, name: str, kind: FeedKind) -> RenderedFeed:
        """The current rendering of one variant (``name`` must be a published feed)."""
        state = self._states[name]
        rendered = state.rendered.get(kind)
        if rendered is not None and not self._due(state):
            return rendered
        async with state.lock:
            if self._due(state) or state.matches is None:
                await self._revalidate(name, state)
            return state.rendered.get(kind) or await self._render(name, kind, state)

    def invalidate(self, names: Iterable[str] | None = None) -> None:
        """Make the next request of these feeds (all when ``None``) read the matches again."""
        for name in self._states if names is None else names:
            if state := self._states.get(name):
                state.generation += 1

    def _due(self, state: _FeedState) -> bool:
        stale = self._ctx.monotonic() - state.checked_at >= self._ctx.revalidate_seconds
        return stale or state.seen_generation != state.generation

    async def _revalidate(self, name: str, state: _FeedState) -> None:
        # An invalidation arriving while this awaits bumps the generation again, so the
        # next request revalidates once more instead of losing it.
        generation = state.generation
        change = await self._ctx.storage.latest_match_change(name)
        if state.matches is None or change != state.change or generation != state.seen_generation:
            limit = self._published[name].max_entries
            matches = await self._ctx.storage.recent_matches(name, limit)
            state.change, state.matches, state.rendered = change, matches, {}
        state.seen_generation = generation
        state.checked_at = self._ctx.monotonic()

    async def _render(self, name: str, kind: FeedKind, state: _FeedState) -> RenderedFeed:
        assert state.matches is not None
        meta, matches = self._published[name].meta, state.matches
        # Only an empty feed uses the clock: its ``updated`` and Last-Modified.
        modified = max(filter(None, (feed_updated(matches), state.change)), default=None)
        now = modified or self._ctx.clock()
        body, gzipped = await asyncio.to_thread(_render_bytes, meta, matches, kind, now)
        previous = state.previous.get(kind)
        now = now.replace(microsecond=0)
        if previous is not None and previous.body != body and now <= previous.last_modified:
            # Removing a match can make the newest time go back, and two changes can fall
            # in one second: If-Modified-Since must still see a new body as modified.
            now = max(self._ctx.clock(), previous.last_modified + timedelta(seconds=1))
        tag = hashlib.sha256(body).hexdigest()[:32]
        rendered = RenderedFeed(
            body=body,
            gzipped=gzipped,
            etag=f'"{tag}"',
            gzip_etag=f'"{tag}-gz"',
            last_modified=now,
            media_type=MEDIA_TYPES[kind],
        )
        state.rendered[kind] = state.previous[kind] = rendered
        return rendered


def _render_bytes(
    meta: FeedMeta, matches: Sequence[MatchedEntry], kind: FeedKind, now: datetime
) -> tuple[bytes, bytes]:
    """The feed and its gzip encoding (run in a worker thread: a few ms of CPU)."""
    body = build_feed(meta, matches, kind=kind, now=now)
    return body, gzip.compress(body, compresslevel=6, mtime=0)


def invalidate_feeds(app: Starlette, names: Iterable[str] | None = None) -> None:
    """Tell the app that a poll changed these subscriptions' matches (all when ``None``).

    With a WebSub hub configured, also pings it for those public feeds, in the
    background (must be called from the event loop).
    """
    names = None if names is None else list(names)
    cast(FeedCache, app.state.feed_cache).invalidate(names)
    if hub := cast(_HubPinger | None, app.state.websub):
        hub.ping(names)


class _HubPinger:
    """Tells a WebSub hub that public feeds changed (the publish ping of the WebSub
    ecosystem: ``hub.mode=publish`` with ``hub.url``). Failures are logged, never raised:
    readers still poll."""

    def __init__(self, hub: str, published: dict[str, _Published]) -> None:
        self.hub = hub
        self.published = published
        #: Pings in flight, kept referenced until they finish.
        self.tasks: set[asyncio.Task[None]] = set()

    def ping(self, names: Sequence[str] | None) -> None:
        urls = [
            feed_url(p.meta, kind)
            for name, p in self.published.items()
            if (names is None or name in names) and not p.meta.token
            for kind in ("atom", "rss", "json")
        ]  # fmt: skip
        if urls:
            task = asyncio.get_running_loop().create_task(self._post(urls))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _post(self, urls: list[str]) -> None:
        form = [("hub.mode", "publish"), *(("hub.url", url) for url in urls)]
        try:
            async with (
                aiohttp.ClientSession(timeout=_HUB_TIMEOUT) as http,
                http.post(self.hub, data=form) as response,
            ):
                if response.status >= 300:
                    log.warning("websub hub %s answered %s", self.hub, response.status)
        except (aiohttp.ClientError, TimeoutError) as e:
            log.warning("websub hub %s unreachable: %s", self.hub, e)


# -- the application -----------------------------------------------------------------


def create_app(ctx: WebContext) -> Starlette:
    """The ASGI app: ``/feeds/…``, ``/feeds.opml``, ``/unsubscribe``, ``/healthz``,
    ``/metrics`` and ``/status``."""
    handlers = _Handlers(ctx, _published_subscriptions(ctx.config, ctx.websub_hub))
    app = Starlette(
        routes=[
            Route("/feeds/", handlers.feed_list, methods=["GET"]),
            Route("/feeds/{filename}", handlers.feed, methods=["GET"]),
            Route("/feeds.opml", handlers.opml, methods=["GET"]),
            Route("/unsubscribe", handlers.unsubscribe, methods=["GET", "POST"]),
            Route("/healthz", handlers.healthz, methods=["GET"]),
            Route("/metrics", handlers.metrics, methods=["GET"]),
            Route("/status", handlers.status, methods=["GET"]),
        ]
    )
    app.state.feed_cache = handlers.cache
    app.state.websub = _HubPinger(ctx.websub_hub, handlers.published) if ctx.websub_hub else None
    app.state.feed_requests = handlers.feed_requests
    return app


def _published_subscriptions(config: Config, hub: str | None) -> dict[str, _Published]:
    published = {}
    for sub in (s for s in config.subscriptions if s.atom):
        meta = feed_meta(config, sub.name)
        # A private feed's URL holds its token: it is never handed to a third-party hub.
        meta = meta if meta.token else replace(meta, hub=hub)
        published[sub.name] = _Published(meta, sub.max_entries, _max_age(config, sub))
    return published


def _max_age(config: Config, sub: SubscriptionConfig) -> int:
    """Seconds a reader may reuse the feed: its sources' shortest polling interval."""
    intervals = [s.every for s in config.sources if sub.sources is None or s.name in sub.sources]
    return int(min(min(intervals, default=_DEFAULT_MAX_AGE), _MAX_MAX_AGE).total_seconds())


class _Handlers:
    """The endpoints, sharing the context, the templates and the feed cache."""

    def __init__(self, ctx: WebContext, published: dict[str, _Published]) -> None:
        self.ctx = ctx
        self.published = published
        self.cache = FeedCache(ctx, published)
        self.feed_requests: Counter[int] = Counter()
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(ctx.templates_dir / "web"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )

    # -- feeds --

    async def feed(self, request: Request) -> Response:
        response = await self._feed_response(request)
        self.feed_requests[response.status_code] += 1
        return response

    async def _feed_response(self, request: Request) -> Response:
        name, _, kind = request.path_params["filename"].rpartition(".")
        published = self.published.get(name)
        if published is None or kind not in _FEED_KINDS:
            return _not_found()
        if published.meta.token and not _same_secret(
            request.query_params.get("token"), published.meta.token
        ):
            return _not_found()  # the same answer as an unknown name: existence is not leaked
        rendered = await self.cache.get(name, cast(FeedKind, kind))
        return _conditional_response(request, rendered, published)

    async def feed_list(self, request: Request) -> Response:
        feeds = [
            {
                "name": meta.name,
                "title": meta.title,
                **{kind: feed_url(meta, kind) for kind in ("atom", "rss", "json")},
            }
            for meta in self._public_metas()
        ]
        opml_url = f"{self.ctx.config.http.base_url}/feeds.opml"
        return self._page("feeds.html", {"feeds": feeds, "opml_url": opml_url})

    async def opml(self, request: Request) -> Response:
        body = build_opml(self._public_metas(), title="feedsvc")
        return Response(body, media_type="text/x-opml; charset=utf-8")

    def _public_metas(self) -> list[FeedMeta]:
        return [p.meta for p in self.published.values() if not p.meta.token]

    # -- unsubscribe (RFC 8058) --

    async def unsubscribe(self, request: Request) -> Response:
        form = await _small_form(request) if request.method == "POST" else {}
        token = request.query_params.get("token") or form.get("token", "")
        try:
            wanted = verify_unsubscribe(self.ctx.secret, token)
        except InvalidToken:
            return self._page("unsubscribe.html", {"state": "invalid"}, status_code=400)
        if request.method == "POST":
            await self._unsubscribe(wanted)
            return self._unsubscribe_page(wanted, "done", token)
        return self._unsubscribe_page(wanted, "confirm", token)

    async def _unsubscribe(self, wanted: UnsubscribeRequest) -> None:
        now = self.ctx.clock()
        for subscription in wanted.subscriptions:
            await self.ctx.storage.unsubscribe(wanted.email, subscription, now)

    def _unsubscribe_page(self, wanted: UnsubscribeRequest, state: str, token: str) -> Response:
        titles = [self._subscription_title(name) for name in wanted.subscriptions]
        action = f"/unsubscribe?token={quote(token, safe='')}"
        context = {"state": state, "email": wanted.email, "titles": titles, "action": action}
        return self._page("unsubscribe.html", context)

    def _subscription_title(self, name: str) -> str:
        sub = self.ctx.config.subscription(name)
        return sub.display_title if sub else name

    # -- operations --

    async def healthz(self, request: Request) -> Response:
        try:
            await asyncio.wait_for(self.ctx.storage.outbox_counts(), _HEALTH_TIMEOUT_SECONDS)
        except (StorageError, TimeoutError) as e:
            # The details go to the log, not to whoever can reach the health check.
            log.warning("health check: database unavailable: %s", e or "timeout")
            return JSONResponse({"status": "error", "database": "unavailable"}, 503)
        return JSONResponse({"status": "ok", "database": "ok"})

    async def metrics(self, request: Request) -> Response:
        try:
            statuses = await self.ctx.storage.source_statuses()
            outbox = await self.ctx.storage.outbox_counts()
        except StorageError as e:
            return PlainTextResponse(f"database unavailable: {e}\n", 503)
        text = _prometheus_text(statuses, outbox, self.feed_requests)
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def status(self, request: Request) -> Response:
        statuses = sorted(
            await self.ctx.storage.source_statuses(),
            key=lambda s: (_state(s) == "ok", s.name),  # failing (and disabled) first
        )
        tz = ZoneInfo(self.ctx.config.timezone)
        context = {
            "sources": [_status_row(s, tz) for s in statuses],
            "failing": sum(_state(s) == "failing" for s in statuses),
            "timezone": self.ctx.config.timezone,
            "generated": _local(self.ctx.clock(), tz),
            "lang": "en",
        }
        return self._page("status.html", context)

    def _page(self, template: str, context: dict[str, Any], status_code: int = 200) -> Response:
        html = self.templates.get_template(template).render(context)
        headers = {**_HTML_HEADERS, "Cache-Control": "no-store"}
        return HTMLResponse(html, status_code=status_code, headers=headers)


# -- conditional GET (RFC 9110 §13) ------------------------------------------------------


def _conditional_response(
    request: Request, rendered: RenderedFeed, published: _Published
) -> Response:
    use_gzip = _accepts_gzip(request.headers.get("accept-encoding", ""))
    etag = rendered.gzip_etag if use_gzip else rendered.etag
    scope = "private" if published.meta.token else "public"
    headers = {
        "ETag": etag,
        "Last-Modified": rendered.last_modified_http,
        "Cache-Control": f"{scope}, max-age={published.max_age}",
        "Vary": "Accept-Encoding",
        "X-Content-Type-Options": "nosniff",
    }
    if _not_modified(request, rendered):
        return Response(status_code=304, headers=headers)
    if use_gzip:
        headers["Content-Encoding"] = "gzip"
    body = rendered.gzipped if use_gzip else rendered.body
    return Response(body, headers=headers, media_type=rendered.media_type)


def _not_modified(request: Request, rendered: RenderedFeed) -> bool:
    """If-None-Match wins over If-Modified-Since when both are sent (RFC 9110 §13.2.2)."""
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None:
        return _etag_matches(if_none_match, (rendered.etag, rendered.gzip_etag))
    since = _http_date(request.headers.get("if-modified-since"))
    return since is not None and rendered.last_modified <= since


def _etag_matches(header: str, current: tuple[str, ...]) -> bool:
    """Weak comparison, as If-None-Match requires; either encoding's tag validates the
    same content (the body differs only in Content-Encoding)."""
    if header.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") in current for tag in header.split(","))


def _http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # an invalid date is ignored (RFC 9110 §13.1.3)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _accepts_gzip(accept_encoding: str) -> bool:
    for part in accept_encoding.lower().split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip() in ("gzip", "x-gzip", "*"):
            return _quality(params) > 0
    return False


def _quality(params: str) -> float:
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.strip() == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0


def _same_secret(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _not_found() -> Response:
    return PlainTextResponse("Not Found", status_code=404)


async def _small_form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body of at most a few KB."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM_BYTES:
            break
    fields = parse_qs(body[:_MAX_FORM_BYTES].decode("utf-8", "replace"))
    return {key: values[0] for key, values in fields.items()}


# -- status and metrics ------------------------------------------------------------------


def _state(status: SourceStatus) -> str:
    if not status.enabled:
        return "disabled"
    return "failing" if status.consecutive_failures else "ok"


def _status_row(status: SourceStatus, tz: ZoneInfo) -> dict[str, Any]:
    return {
        "name": status.name,
        "url": status.url,
        "state": _state(status),
        "consecutive_failures": status.consecutive_failures,
        "last_success": _local(status.last_success, tz),
        "last_error_at": _local(status.last_error_at, tz),
        "last_error_kind": status.last_error_kind or "",
        "last_error": status.last_error or "",
        "next_poll": _local(status.next_poll, tz),
        "entry_count": status.entry_count,
    }


def _local(moment: datetime | None, tz: ZoneInfo) -> str:
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S") if moment else "—"


def _prometheus_text(
    statuses: Sequence[SourceStatus], outbox: dict[str, int], feed_requests: Counter[int]
) -> str:
    """The text exposition format 0.0.4, one family per metric."""
    families: list[tuple[str, str, str, list[tuple[dict[str, str], float]]]] = [
        ("feedsvc_source_consecutive_failures", "gauge", "Consecutive failed polls of a source.",
         [({"source": s.name}, s.consecutive_failures) for s in statuses]),
        ("feedsvc_source_last_success_timestamp_seconds", "gauge",
         "Unix time of a source's last successful poll.",
         [({"source": s.name}, s.last_success.timestamp()) for s in statuses if s.last_success]),
        ("feedsvc_source_entries", "gauge", "Entries stored for a source.",
         [({"source": s.name}, s.entry_count) for s in statuses]),
        ("feedsvc_outbox_messages", "gauge", "Digest messages in the outbox by state.",
         [({"state": k}, outbox.get(k, 0)) for k in ("pending", "sent", "failed")]),
        ("feedsvc_feed_requests_total", "counter", "Feed requests answered, by HTTP status.",
         [({"status": str(code)}, n) for code, n in sorted(feed_requests.items())]),
    ]  # fmt: skip
    lines: list[str] = []
    for name, kind, help_text, samples in families:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        lines += [f"{name}{_labels(labels)} {_number(value)}" for labels, value in samples]
    return "\n".join(lines) + "\n"


def _labels(labels: dict[str, str]) -> str:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
