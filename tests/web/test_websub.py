"""WebSub: public feeds advertise the hub and ping it when they change; private ones never."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from lxml import etree

from feedsvc.web import invalidate_feeds
from tests.servers.http import serve_feeds

ATOM = "{http://www.w3.org/2005/Atom}"


@pytest.fixture
async def hub() -> AsyncIterator[tuple[str, asyncio.Queue[list[tuple[str, str]]]]]:
    """A hub on 127.0.0.1 that records each publish ping's form fields."""
    pings: asyncio.Queue[list[tuple[str, str]]] = asyncio.Queue()

    async def publish(request: web.Request) -> web.Response:
        await pings.put(list((await request.post()).items()))
        return web.Response(status=204)

    async with serve_feeds({"/hub": publish}) as server:
        yield server.url("/hub"), pings


async def test_public_feeds_advertise_the_hub_private_ones_do_not(site_with, hub, valid_atom):
    url, _ = hub
    async with site_with(websub_hub=url) as site:
        await site.add_matches("all.xml", "news", 3)
        _, body = await site.get("/feeds/news.atom")
        valid_atom(body)
        hubs = etree.fromstring(body).findall(f"{ATOM}link[@rel='hub']")
        assert [link.get("href") for link in hubs] == [url]
        _, body = await site.get("/feeds/news.json")
        assert json.loads(body)["hubs"] == [{"type": "WebSub", "url": url}]
        _, body = await site.get("/feeds/desk-hk.atom?token=k3y-%E7%A7%81%E5%AF%86-token")
        assert etree.fromstring(body).findall(f"{ATOM}link[@rel='hub']") == []


async def test_a_changed_feed_pings_the_hub_with_its_public_urls(site_with, hub):
    url, pings = hub
    async with site_with(websub_hub=url) as site:
        invalidate_feeds(site.app, ["news", "desk-hk", "mail-only"])
        fields = await asyncio.wait_for(pings.get(), timeout=10)
    assert fields == [
        ("hub.mode", "publish"),
        ("hub.url", "http://feeds.example/feeds/news.atom"),
        ("hub.url", "http://feeds.example/feeds/news.rss"),
        ("hub.url", "http://feeds.example/feeds/news.json"),
    ]


async def test_only_private_changes_send_no_ping(site_with, hub):
    url, pings = hub
    async with site_with(websub_hub=url) as site:
        invalidate_feeds(site.app, ["desk-hk"])
        assert not site.app.state.websub.tasks
        invalidate_feeds(site.app)  # all feeds: the public one is pinged
        assert len(await asyncio.wait_for(pings.get(), timeout=10)) == 4
    assert pings.empty()


async def test_an_unreachable_hub_is_logged_not_raised(site_with, caplog):
    async with site_with(websub_hub="http://127.0.0.1:9/hub") as site:
        invalidate_feeds(site.app, ["news"])
        await asyncio.gather(*site.app.state.websub.tasks)
        response, _ = await site.get("/feeds/news.atom")
    assert response.status == 200
    assert "websub hub http://127.0.0.1:9/hub unreachable" in caplog.text
