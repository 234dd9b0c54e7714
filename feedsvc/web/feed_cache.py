"""Rendered feeds kept in memory and revalidated against the database."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import format_datetime

from feedsvc.feeds import MEDIA_TYPES, FeedKind, FeedMeta, build_feed, feed_updated
from feedsvc.model import MatchedEntry
from feedsvc.web.context import Published, WebContext


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

    def __init__(self, ctx: WebContext, published: dict[str, Published]) -> None:
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
