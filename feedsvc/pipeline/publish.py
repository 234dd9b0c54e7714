"""The publishing flow: every public subscription's feeds as static files."""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from pathlib import Path

from feedsvc.config import Config
from feedsvc.feeds import FeedKind, build_feed, build_opml, feed_meta
from feedsvc.pipeline.services import subscription_config
from feedsvc.store.base import Storage

FEED_KINDS: tuple[FeedKind, ...] = ("atom", "rss", "json")


async def publish_feeds(
    config: Config, storage: Storage, out_dir: Path, now: datetime
) -> list[Path]:
    """Write every public subscription's Atom, RSS and JSON feed (and an OPML list) into
    ``out_dir`` for static hosting. Private (token) feeds are left out: a static host
    cannot check the token."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    public = [s for s in config.subscriptions if s.atom and s.token is None]
    for sub in public:
        for kind in FEED_KINDS:
            path = out_dir / f"{sub.name}.{kind}"
            write_atomically(path, await render_feed(config, storage, sub.name, kind, now))
            written.append(path)
    opml = build_opml([feed_meta(config, s.name) for s in public], title="feedsvc")
    write_atomically(out_dir / "feeds.opml", opml)
    written.append(out_dir / "feeds.opml")
    return written


async def render_feed(
    config: Config, storage: Storage, name: str, kind: FeedKind, now: datetime
) -> bytes:
    """A subscription's feed as bytes, newest matches first."""
    sub = subscription_config(config, name)
    matches = await storage.recent_matches(name, sub.max_entries)
    return build_feed(feed_meta(config, name), matches, kind=kind, now=now)


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
