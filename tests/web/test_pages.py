"""The rest of the HTTP contract: discovery, unsubscribe (RFC 8058), health, metrics, status."""

from __future__ import annotations

import re
from datetime import timedelta

import aiohttp
import pytest
from lxml import etree, html

from feedsvc.store import open_storage
from feedsvc.store.base import FetchOutcome, SourceSpec
from feedsvc.tokens import sign_unsubscribe
from feedsvc.web import WebContext, create_app


async def test_feed_list_shows_public_feeds_only(site):
    response, body = await site.get("/feeds/")
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    page = html.fromstring(body.decode())
    links = page.xpath("//a/@href")
    assert "http://feeds.example/feeds/news.atom" in links
    assert "http://feeds.example/feeds/news.json" in links
    assert "http://feeds.example/feeds.opml" in links
    text = page.text_content()
    assert "财经快讯" in text and "Feeds" in text
    assert "desk-hk" not in body.decode() and "港股内参" not in text and "mail-only" not in text
    discovery = page.xpath("//link[@type='application/atom+xml']/@href")
    assert discovery == ["http://feeds.example/feeds/news.atom"]


async def test_opml_lists_public_feeds(site):
    response, body = await site.get("/feeds.opml")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/x-opml")
    outlines = etree.fromstring(body).findall("body/outline")
    assert [(o.get("title"), o.get("xmlUrl")) for o in outlines] == [
        ("财经快讯", "http://feeds.example/feeds/news.atom")
    ]


def token_for(*subscriptions: str, email: str = "读者@example.com") -> str:
    return sign_unsubscribe("test-secret-测试", email, subscriptions)


async def test_unsubscribe_get_asks_for_confirmation_and_changes_nothing(site, storage):
    token = token_for("news", "mail-only")
    response, body = await site.get(f"/unsubscribe?token={token}")
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    page = html.fromstring(body.decode())
    assert "确认退订" in page.text_content() and "Confirm unsubscribe" in page.text_content()
    assert "读者@example.com" in page.text_content()
    assert "财经快讯" in page.text_content() and "mail-only" in page.text_content()
    [form] = page.forms
    assert form.method == "POST" and form.action == f"/unsubscribe?token={token}"
    assert await storage.unsubscribed() == set()


async def test_one_click_post_unsubscribes_every_subscription_in_the_token(site, storage):
    token = token_for("news", "mail-only")
    response, body = await site.request(
        "POST",
        f"/unsubscribe?token={token}",
        data="List-Unsubscribe=One-Click",
        **{"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status == 200
    assert "已退订" in body.decode() and "Unsubscribed" in body.decode()
    assert await storage.unsubscribed() == {
        ("读者@example.com", "news"),
        ("读者@example.com", "mail-only"),
    }
    again, _ = await site.request("POST", f"/unsubscribe?token={token}", data="x=1")
    assert again.status == 200  # idempotent


async def test_confirmation_form_post_unsubscribes(site, storage):
    token = token_for("news")
    _, body = await site.get(f"/unsubscribe?token={token}")
    [form] = html.fromstring(body.decode()).forms
    response, _ = await site.request(
        "POST",
        form.action,
        data=dict(form.form_values()),
    )
    assert response.status == 200
    assert await storage.unsubscribed() == {("读者@example.com", "news")}


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize(
    "make_token",
    [
        lambda: sign_unsubscribe("another secret", "读者@example.com", ["news"]),
        lambda: "A" + token_for("news")[1:],
        lambda: token_for("news").split(".")[0] + "." + token_for("mail-only").split(".")[1],
        lambda: "not-a-token",
        lambda: "",
    ],
    ids=["other-secret", "altered", "spliced", "garbage", "empty"],
)
async def test_forged_or_altered_tokens_are_refused_and_store_nothing(
    site, storage, method, make_token
):
    response, body = await site.request(method, f"/unsubscribe?token={make_token()}", data="x=1")
    assert response.status == 400
    assert "链接无效" in body.decode() and "Invalid link" in body.decode()
    assert await storage.unsubscribed() == set()


async def test_healthz_ok_when_the_database_answers(site):
    response, body = await site.get("/healthz")
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json"
    assert body == b'{"status":"ok","database":"ok"}'


async def test_healthz_503_when_the_database_fails(tmp_path, config, clock, serve_app):
    path = tmp_path / "broken.db"
    storage = open_storage(f"sqlite:///{path}")
    await storage.migrate()
    await storage.close()
    path.write_bytes(b"this is not an SQLite database" * 100)
    context = WebContext(config, storage, "s", tmp_path, clock=clock.wall)
    async with (
        serve_app(create_app(context)) as url,
        aiohttp.ClientSession() as http,
        http.get(url + "/healthz") as response,
    ):
        assert response.status == 503
        assert await response.json() == {"status": "error", "database": "unavailable"}
    await storage.close()


async def record_health(site):
    specs = [
        SourceSpec("finews", "https://finews.withounder.com/feed.xml"),
        SourceSpec("hk", "https://finews.withounder.com/hk.xml"),
        SourceSpec("zz-bad", "https://bad.example/<feed>"),
    ]
    now = site.clock.now
    await site.add_matches("all.xml", "news", 3)
    await site.storage.sync_sources(specs, now)
    await site.storage.record_fetch(
        "finews", FetchOutcome(at=now, next_poll=now + timedelta(minutes=5), ok=True)
    )
    for _ in range(3):
        await site.storage.record_fetch(
            "zz-bad",
            FetchOutcome(
                at=now,
                next_poll=now + timedelta(minutes=5),
                ok=False,
                error_kind="http",
                error='HTTP 503 <script>alert("x")</script>',
            ),
        )


async def test_metrics_in_prometheus_text_format(site):
    await record_health(site)
    await site.get("/feeds/news.atom")
    await site.get("/feeds/news.atom")
    await site.get("/feeds/missing.atom")
    response, body = await site.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = body.decode()
    sample = re.compile(r'^[a-z_]+(\{[a-z_]+="[^"\n]*"(,[a-z_]+="[^"\n]*")*\})? -?[0-9.e+]+$')
    for line in text.splitlines():
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or sample.match(line), line
    assert 'feedsvc_source_consecutive_failures{source="zz-bad"} 3' in text
    assert 'feedsvc_source_consecutive_failures{source="finews"} 0' in text
    success = int(site.clock.now.timestamp())
    assert f'feedsvc_source_last_success_timestamp_seconds{{source="finews"}} {success}' in text
    assert 'feedsvc_source_entries{source="finews"} 3' in text
    assert 'feedsvc_outbox_messages{state="pending"} 0' in text
    assert 'feedsvc_feed_requests_total{status="200"} 2' in text
    assert 'feedsvc_feed_requests_total{status="404"} 1' in text
    assert "# TYPE feedsvc_feed_requests_total counter" in text


async def test_status_page_lists_failing_sources_first_and_escapes_errors(site):
    await record_health(site)
    response, body = await site.get("/status")
    assert response.status == 200
    page = html.fromstring(body.decode())
    rows = page.xpath("//tbody/tr")
    assert [row.xpath("string(td[1]/strong)") for row in rows] == ["zz-bad", "finews", "hk"]
    assert rows[0].get("class") == "failing"
    assert 'HTTP 503 <script>alert("x")</script>' in rows[0].text_content()
    assert not page.xpath("//script")
    assert "2026-11-26 16:00:00" in rows[1].text_content()  # last success in Asia/Shanghai
