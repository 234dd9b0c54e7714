"""Serving feeds over real HTTP: validators, 304s, gzip, HEAD, private tokens, caching."""

from __future__ import annotations

import asyncio
import gzip
import json
from dataclasses import replace
from datetime import timedelta
from email.utils import format_datetime, parsedate_to_datetime

import feedparser
import pytest
from lxml import etree

from feedsvc.web import invalidate_feeds

ATOM = "{http://www.w3.org/2005/Atom}"


async def test_atom_feed_is_valid_with_validators_and_cache_headers(site, valid_atom):
    added = await site.add_matches("all.xml", "news", 20)
    response, body = await site.get("/feeds/news.atom")
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/atom+xml; charset=utf-8"
    assert response.headers["ETag"].startswith('"')  # strong: no W/
    assert parsedate_to_datetime(response.headers["Last-Modified"])
    assert response.headers["Cache-Control"] == "public, max-age=300"  # finews polls every 5m
    assert "Content-Encoding" not in response.headers
    parsed = valid_atom(body)
    assert parsed.feed.title == "财经快讯"
    assert {e.title for e in parsed.entries} == {e.title for e in added}
    root = etree.fromstring(body)
    assert (
        root.find(f"{ATOM}link[@rel='self']").get("href") == "http://feeds.example/feeds/news.atom"
    )


@pytest.mark.parametrize(
    ("kind", "media_type"),
    [
        ("rss", "application/rss+xml; charset=utf-8"),
        ("json", "application/feed+json; charset=utf-8"),
    ],
)
async def test_rss_and_json_variants_are_served(site, kind, media_type):
    added = await site.add_matches("rss2/all.gb18030.xml", "news", 10)
    response, body = await site.get(f"/feeds/news.{kind}")
    assert response.status == 200
    assert response.headers["Content-Type"] == media_type
    if kind == "rss":
        titles = [e.title for e in feedparser.parse(body).entries]
    else:
        titles = [item["title"] for item in json.loads(body)["items"]]
    assert sorted(titles) == sorted(e.title for e in added)


async def test_if_none_match_answers_304_without_body(site):
    await site.add_matches("all.xml", "news", 5)
    first, _ = await site.get("/feeds/news.atom")
    etag = first.headers["ETag"]
    response, body = await site.get("/feeds/news.atom", **{"If-None-Match": etag})
    assert (response.status, body) == (304, b"")
    assert response.headers["ETag"] == etag
    assert response.headers["Cache-Control"] == "public, max-age=300"
    weak, _ = await site.get("/feeds/news.atom", **{"If-None-Match": f'"x", W/{etag}'})
    assert weak.status == 304
    other, body = await site.get("/feeds/news.atom", **{"If-None-Match": '"something-else"'})
    assert other.status == 200 and body


async def test_if_modified_since_answers_304_until_the_feed_changes(site):
    await site.add_matches("all.xml", "news", 5)
    first, _ = await site.get("/feeds/news.atom")
    last_modified = first.headers["Last-Modified"]
    same, _ = await site.get("/feeds/news.atom", **{"If-Modified-Since": last_modified})
    assert same.status == 304
    second_before = parsedate_to_datetime(last_modified) - timedelta(seconds=1)
    earlier = format_datetime(second_before, usegmt=True)
    older, _ = await site.get("/feeds/news.atom", **{"If-Modified-Since": earlier})
    assert older.status == 200
    garbage, _ = await site.get("/feeds/news.atom", **{"If-Modified-Since": "yesterday-ish"})
    assert garbage.status == 200


async def test_if_none_match_takes_precedence_over_if_modified_since(site):
    await site.add_matches("all.xml", "news", 5)
    first, _ = await site.get("/feeds/news.atom")
    response, _ = await site.get(
        "/feeds/news.atom",
        **{"If-None-Match": '"stale"', "If-Modified-Since": first.headers["Last-Modified"]},
    )
    assert response.status == 200


async def test_gzip_when_asked_with_its_own_etag(site):
    await site.add_matches("all.xml", "news", 30)
    plain, plain_body = await site.get("/feeds/news.atom", **{"Accept-Encoding": "identity"})
    zipped, zipped_body = await site.get("/feeds/news.atom", **{"Accept-Encoding": "br, gzip"})
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert zipped.headers["Vary"] == plain.headers["Vary"] == "Accept-Encoding"
    assert gzip.decompress(zipped_body) == plain_body
    assert len(zipped_body) < len(plain_body) / 2
    assert zipped.headers["ETag"] != plain.headers["ETag"]
    again, body = await site.get(
        "/feeds/news.atom", **{"Accept-Encoding": "gzip", "If-None-Match": zipped.headers["ETag"]}
    )
    assert (again.status, body) == (304, b"")
    refused, body = await site.get("/feeds/news.atom", **{"Accept-Encoding": "gzip;q=0"})
    assert "Content-Encoding" not in refused.headers and body == plain_body


async def test_head_has_the_headers_of_get_and_no_body(site):
    await site.add_matches("all.xml", "news", 5)
    got, got_body = await site.get("/feeds/news.atom", **{"Accept-Encoding": "identity"})
    head, head_body = await site.request("HEAD", "/feeds/news.atom")
    assert (head.status, head_body) == (200, b"")
    for name in ("ETag", "Last-Modified", "Content-Type", "Cache-Control"):
        assert head.headers[name] == got.headers[name]
    assert int(head.headers["Content-Length"]) == len(got_body)


@pytest.mark.parametrize(
    "path",
    ["/feeds/nope.atom", "/feeds/news.xml", "/feeds/news", "/feeds/mail-only.atom", "/feeds/.atom"],
)
async def test_unknown_feeds_are_404(site, path):
    response, _ = await site.get(path)
    assert response.status == 404


async def test_private_feed_answers_only_with_its_token(site, valid_atom):
    await site.add_matches("by_source/hk.xml", "desk-hk", 5, source="hk")
    _, unknown_body = await site.get("/feeds/nope.atom")
    for path in ("/feeds/desk-hk.atom", "/feeds/desk-hk.atom?token=wrong", "/feeds/desk-hk.rss"):
        response, body = await site.get(path)
        assert (response.status, body) == (404, unknown_body)  # indistinguishable from unknown
        assert "ETag" not in response.headers
    token = "k3y-%E7%A7%81%E5%AF%86-token"
    response, body = await site.get(f"/feeds/desk-hk.atom?token={token}")
    assert response.status == 200
    assert response.headers["Cache-Control"] == "private, max-age=1800"  # hk polls every 30m
    parsed = valid_atom(body)
    assert parsed.feed.title == "港股内参"
    assert len(parsed.entries) == 5


async def test_feed_is_rendered_once_per_change_not_per_request(site, storage, monkeypatch):
    await site.add_matches("all.xml", "news", 10)
    reads = []
    recent_matches = storage.recent_matches

    async def counting_recent_matches(name, limit):
        reads.append(name)
        return await recent_matches(name, limit)

    monkeypatch.setattr(storage, "recent_matches", counting_recent_matches)
    bodies = {(await site.get("/feeds/news.atom"))[1] for _ in range(20)}
    assert len(bodies) == 1 and reads == ["news"]

    site.clock.advance(0.5)
    await site.add_matches("all.xml", "news", 1)
    cached, body = await site.get("/feeds/news.atom")  # within the second: the cached feed
    assert len(feedparser.parse(body).entries) == 10 and reads == ["news"]
    site.clock.advance(0.5)
    response, body = await site.get("/feeds/news.atom")
    assert len(feedparser.parse(body).entries) == 11
    assert response.headers["ETag"] != cached.headers["ETag"]
    assert reads == ["news", "news"]
    site.clock.advance(5)  # revalidated, unchanged in the database: not read again
    await site.get("/feeds/news.atom")
    assert reads == ["news", "news"]


async def test_invalidate_feeds_refreshes_at_once(site):
    await site.add_matches("all.xml", "news", 3)
    _, before = await site.get("/feeds/news.atom")
    await site.add_matches("all.xml", "news", 2)  # same instant, same second: only invalidation
    invalidate_feeds(site.app, ["news"])
    _, after = await site.get("/feeds/news.atom")
    assert (len(feedparser.parse(before).entries), len(feedparser.parse(after).entries)) == (3, 5)


async def test_newest_max_entries_only(site, config):
    await site.add_matches("all.xml", "news", 60)
    _, body = await site.get("/feeds/news.atom")
    entries = feedparser.parse(body).entries
    assert len(entries) == 50
    published = [e.published_parsed for e in entries]
    assert published == sorted(published, reverse=True)


async def test_entry_updated_at_the_source_keeps_its_id(site, corpus, valid_atom):
    info, entries = corpus.parse("all.xml")
    await site.store("finews", info, entries[:3], "news")
    _, before = await site.get("/feeds/news.atom")
    site.clock.advance(600)
    edited = replace(
        entries[0],
        content="<p>更正：公告内容已修订。</p>",
        updated=site.clock.now,
        content_hash="edited",
    )
    await site.store("finews", info, [edited, *entries[1:3]], "news")
    response, after = await site.get("/feeds/news.atom")
    old, new = valid_atom(before), valid_atom(after)
    assert [e.id for e in new.entries].count(edited.id) == 1
    assert len(new.entries) == 3
    entry = next(e for e in new.entries if e.id == edited.id)
    assert "公告内容已修订" in entry.content[0].value
    assert entry.updated_parsed > next(e for e in old.entries if e.id == edited.id).updated_parsed
    assert parsedate_to_datetime(response.headers["Last-Modified"]) == site.clock.now


async def test_hostile_rows_in_the_database_are_cleaned_when_served(site, corpus):
    info, entries = corpus.parse("all.xml")
    hostile = replace(
        entries[0],
        content='<p onmouseover="x()">深圳<script>alert(1)</script>'
        '<a href="javascript:x()">链接</a></p>',
        link="javascript:alert(2)",
    )
    await site.store("finews", info, [hostile], "news")
    for kind in ("atom", "rss", "json"):
        _, body = await site.get(f"/feeds/news.{kind}", **{"Accept-Encoding": "identity"})
        text = body.decode()
        assert "深圳" in text
        for bad in ("<script", "&lt;script", "onmouseover", "javascript", "alert("):
            assert bad not in text


async def test_readers_see_complete_feeds_while_a_poll_writes(site, corpus, valid_atom):
    """Readers hit the database on every request while batches of matches are written:
    every response is a whole, valid feed holding exactly the entries of some batch count."""
    site.context.revalidate_seconds = 0
    info, entries = corpus.parse("all.xml")
    batches = [entries[i : i + 5] for i in range(0, 40, 5)]
    written_ids = [e.id for e in entries[:40]]
    seen_counts: set[int] = set()
    writing = True

    async def writer():
        nonlocal writing
        for batch in batches:
            await site.store("finews", info, batch, "news")
            site.clock.advance(1)
        writing = False

    async def reader():
        while writing:
            _, body = await site.get("/feeds/news.atom")
            ids = [e.id for e in valid_atom(body).entries]
            assert len(ids) % 5 == 0
            assert set(ids) == set(written_ids[: len(ids)])
            seen_counts.add(len(ids))

    await asyncio.gather(writer(), reader(), reader(), reader())
    _, body = await site.get("/feeds/news.atom")
    assert len(feedparser.parse(body).entries) == 40
    assert len(seen_counts) > 1  # the readers really overlapped the writes


async def test_last_modified_grows_for_every_new_body(site, storage, corpus):
    """Two changes within one second, then a removed match (the newest time goes back):
    a reader sending only If-Modified-Since still gets every new body."""
    info, entries = corpus.parse("all.xml")
    stamps, stored = [], []
    for entry in entries[:2]:
        stored += await site.store("finews", info, [entry], "news")
        site.clock.advance(0.3)
        invalidate_feeds(site.app)
        response, _ = await site.get("/feeds/news.atom")
        stamps.append(response.headers["Last-Modified"])
    await storage.delete_matches("news", [stored[-1].entry_id])
    invalidate_feeds(site.app, ["news"])
    response, body = await site.get("/feeds/news.atom", **{"If-Modified-Since": stamps[-1]})
    assert response.status == 200 and len(feedparser.parse(body).entries) == 1
    stamps.append(response.headers["Last-Modified"])
    moments = [parsedate_to_datetime(stamp) for stamp in stamps]
    assert moments == sorted(set(moments))
