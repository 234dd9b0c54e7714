"""What every part of the web app shares: the context the composition root builds and the
subscriptions that have a feed."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from feedsvc.config import Config
from feedsvc.feeds import FeedMeta
from feedsvc.store.base import Storage


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


@dataclass(frozen=True)
class Published:
    """A subscription that has a feed: what it says and how it is served."""

    meta: FeedMeta
    max_entries: int
    #: Seconds a reader may reuse the feed (Cache-Control max-age).
    max_age: int


def public_metas(published: Iterable[Published]) -> list[FeedMeta]:
    """The feeds anyone may list: those without a token."""
    return [p.meta for p in published if not p.meta.token]
