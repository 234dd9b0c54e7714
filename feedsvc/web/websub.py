"""The WebSub publish ping: tells a hub that public feeds changed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import aiohttp

from feedsvc.feeds import feed_url
from feedsvc.web.context import Published

log = logging.getLogger(__name__)

_HUB_TIMEOUT = aiohttp.ClientTimeout(total=10)


class HubPinger:
    """Tells a WebSub hub that public feeds changed (the publish ping of the WebSub
    ecosystem: ``hub.mode=publish`` with ``hub.url``). Failures are logged, never raised:
    readers still poll."""

    def __init__(self, hub: str, published: dict[str, Published]) -> None:
        self.hub = hub
        self.published = published
        #: Pings in flight, kept referenced until they finish.
        self.tasks: set[asyncio.Task[None]] = set()

    def ping(self, names: Sequence[str] | None) -> None:
        """Ping the hub, in the background, for these feeds (all when ``None``); private
        feeds are never named to it. Must be called from the event loop."""
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
