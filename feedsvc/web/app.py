"""The ASGI app: its routes, the feed endpoints, and how a poll tells it feeds changed."""

from __future__ import annotations

import hmac
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace
from datetime import timedelta
from typing import cast, get_args

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from feedsvc.config import Config, SubscriptionConfig
from feedsvc.feeds import FeedKind, build_opml, feed_meta
from feedsvc.web.conditional import conditional_response
from feedsvc.web.context import Published, WebContext, public_metas
from feedsvc.web.feed_cache import FeedCache
from feedsvc.web.operations import Operations
from feedsvc.web.pages import Pages
from feedsvc.web.websub import HubPinger

_FEED_KINDS: frozenset[str] = frozenset(get_args(FeedKind))
_DEFAULT_MAX_AGE = timedelta(minutes=10)
_MAX_MAX_AGE = timedelta(hours=1)


def create_app(ctx: WebContext) -> Starlette:
    """The ASGI app: ``/feeds/…``, ``/feeds.opml``, ``/unsubscribe``, ``/healthz``,
    ``/metrics`` and ``/status``."""
    published = _published_subscriptions(ctx.config, ctx.websub_hub)
    feeds = _FeedEndpoints(ctx, published)
    pages = Pages(ctx, published)
    operations = Operations(ctx.storage, feeds.requests)
    app = Starlette(
        routes=[
            Route("/feeds/", pages.feed_list, methods=["GET"]),
            Route("/feeds/{filename}", feeds.feed, methods=["GET"]),
            Route("/feeds.opml", feeds.opml, methods=["GET"]),
            Route("/unsubscribe", pages.unsubscribe, methods=["GET", "POST"]),
            Route("/healthz", operations.healthz, methods=["GET"]),
            Route("/metrics", operations.metrics, methods=["GET"]),
            Route("/status", pages.status, methods=["GET"]),
        ]
    )
    app.state.feed_cache = feeds.cache
    app.state.websub = HubPinger(ctx.websub_hub, published) if ctx.websub_hub else None
    app.state.feed_requests = feeds.requests
    return app


def invalidate_feeds(app: Starlette, names: Iterable[str] | None = None) -> None:
    """Tell the app that a poll changed these subscriptions' matches (all when ``None``).

    With a WebSub hub configured, also pings it for those public feeds, in the
    background (must be called from the event loop).
    """
    names = None if names is None else list(names)
    cast(FeedCache, app.state.feed_cache).invalidate(names)
    if hub := cast(HubPinger | None, app.state.websub):
        hub.ping(names)


def _published_subscriptions(config: Config, hub: str | None) -> dict[str, Published]:
    published = {}
    for sub in (s for s in config.subscriptions if s.atom):
        meta = feed_meta(config, sub.name)
        # A private feed's URL holds its token: it is never handed to a third-party hub.
        meta = meta if meta.token else replace(meta, hub=hub)
        published[sub.name] = Published(meta, sub.max_entries, _max_age(config, sub))
    return published


def _max_age(config: Config, sub: SubscriptionConfig) -> int:
    """Seconds a reader may reuse the feed: its sources' shortest polling interval."""
    intervals = [s.every for s in config.sources if sub.sources is None or s.name in sub.sources]
    return int(min(min(intervals, default=_DEFAULT_MAX_AGE), _MAX_MAX_AGE).total_seconds())


class _FeedEndpoints:
    """``/feeds/{name}.{kind}`` from the feed cache, and the OPML list of public feeds."""

    def __init__(self, ctx: WebContext, published: dict[str, Published]) -> None:
        self.published = published
        self.cache = FeedCache(ctx, published)
        self.requests: Counter[int] = Counter()

    async def feed(self, request: Request) -> Response:
        response = await self._feed_response(request)
        self.requests[response.status_code] += 1
        return response

    async def opml(self, request: Request) -> Response:
        body = build_opml(public_metas(self.published.values()), title="feedsvc")
        return Response(body, media_type="text/x-opml; charset=utf-8")

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
        return conditional_response(request, rendered, published)


def _same_secret(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _not_found() -> Response:
    return PlainTextResponse("Not Found", status_code=404)
