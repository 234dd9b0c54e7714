"""Atom, RSS, JSON Feed and OPML built from corpus entries: valid, faithful and clean."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import feedparser
import pytest
from lxml import etree

from feedsvc.feeds import FeedMeta, build_feed, build_opml, feed_url
from feedsvc.model import FeedInfo

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
ATOM = "{http://www.w3.org/2005/Atom}"


@pytest.mark.parametrize(
    "relative",
    [
        "all.xml",
        "rss2/all.xml",
        "rss2/all.gb18030.xml",
        "traditional/all.xml",
        "../web/traditional.big5.xml",
    ],
)
def test_atom_of_each_corpus_variant_is_valid_and_keeps_the_entries(
    corpus, valid_atom, meta, relative
):
    matches = corpus.matches(relative)
    parsed = valid_atom(build_feed(meta, matches, kind="atom", now=NOW))
    assert parsed.feed.title == "新能源与光伏"
    assert parsed.feed.subtitle == "关键词：新能源 OR 光伏"
    assert [e.id for e in parsed.entries] == [m.entry.data.id for m in matches]
    assert [e.title for e in parsed.entries] == [m.entry.data.title for m in matches]
    assert [e.link for e in parsed.entries] == [m.entry.data.link for m in matches]
    assert all(any("\u4e00" <= c <= "\u9fff" for c in e.title) for e in parsed.entries)


def test_atom_feed_has_stable_id_links_and_newest_updated(corpus, meta):
    matches = corpus.matches()
    root = etree.fromstring(build_feed(meta, matches, kind="atom", now=NOW))
    later = etree.fromstring(build_feed(meta, matches[:3], kind="atom", now=NOW + timedelta(1)))
    assert root.findtext(f"{ATOM}id") == later.findtext(f"{ATOM}id")
    assert root.findtext(f"{ATOM}id").startswith("urn:uuid:")
    links = {link.get("rel"): link.get("href") for link in root.findall(f"{ATOM}link")}
    assert links == {
        "self": "http://127.0.0.1:8080/feeds/new-energy.atom",
        "alternate": "http://127.0.0.1:8080/feeds/",
    }
    assert root.findtext(f"{ATOM}updated") == "2026-11-01T08:00:00+00:00"  # newest match


def test_another_subscription_has_another_feed_id(corpus, meta):
    other = replace(meta, name="desk-hk")
    ids = {
        etree.fromstring(build_feed(m, [], kind="atom", now=NOW)).findtext(f"{ATOM}id")
        for m in (meta, other)
    }
    assert len(ids) == 2


def test_entries_keep_dates_authors_categories_and_atom_source(corpus, meta):
    matches = corpus.matches(limit=5)
    root = etree.fromstring(build_feed(meta, matches, kind="atom", now=NOW))
    first, data = root.find(f"{ATOM}entry"), matches[0].entry.data
    assert first.findtext(f"{ATOM}published") == "2022-05-31T10:03:41+00:00"
    assert first.findtext(f"{ATOM}updated") == "2022-05-31T10:03:41+00:00"
    assert [a.findtext(f"{ATOM}name") for a in first.findall(f"{ATOM}author")] == ["ZNing"]
    assert [c.get("term") for c in first.findall(f"{ATOM}category")] == list(data.categories)
    source = first.find(f"{ATOM}source")
    assert source.findtext(f"{ATOM}id") == "https://finews.withounder.com/feed.xml"
    assert source.findtext(f"{ATOM}title") == "金融消息"
    assert source.find(f"{ATOM}link").get("href") == "https://finews.withounder.com/"
    assert source.findtext(f"{ATOM}updated") == "2022-05-31T10:03:41+00:00"
    assert "三大指数集体走高" in first.findtext(f"{ATOM}content")


def test_edited_entry_keeps_its_id_and_gets_the_new_updated(corpus, valid_atom, meta):
    info0, before = corpus.parse("snapshots/emnews-t0.xml")
    info1, after = corpus.parse("snapshots/emnews-t1.xml")
    edited = [e for e in after if any(b.id == e.id and b.content != e.content for b in before)]
    assert len(edited) == 2
    old = {b.id: b for b in before}
    feed0 = valid_atom(build_feed(meta, corpus.as_matches(info0, before), kind="atom", now=NOW))
    feed1 = valid_atom(build_feed(meta, corpus.as_matches(info1, after), kind="atom", now=NOW))
    for entry in edited:
        e0 = next(e for e in feed0.entries if e.id == entry.id)
        e1 = next(e for e in feed1.entries if e.id == entry.id)
        assert e1.content[0].value != e0.content[0].value
        assert e1.updated_parsed >= e0.updated_parsed
        assert old[entry.id].id == e1.id


def test_content_change_without_source_updated_bumps_updated(corpus, valid_atom, meta):
    [match] = corpus.matches(limit=1)
    stored = match.entry
    undated = replace(stored.data, updated=None, content="<p>更正：数据有误</p>")
    changed = stored.changed_at + timedelta(hours=3)
    edited = replace(match, entry=replace(stored, data=undated, changed_at=changed))
    parsed = valid_atom(build_feed(meta, [edited], kind="atom", now=NOW))
    assert parsed.entries[0].id == stored.data.id
    assert parsed.entries[0].updated == changed.isoformat()
    assert parsed.feed.updated == changed.isoformat()


def test_rss_variant_parses_with_the_same_entries(corpus, meta):
    matches = corpus.matches()
    parsed = feedparser.parse(build_feed(meta, matches, kind="rss", now=NOW))
    assert parsed.bozo == 0, parsed.get("bozo_exception")
    assert parsed.version == "rss20"
    assert parsed.feed.title == "新能源与光伏"
    assert [e.title for e in parsed.entries] == [m.entry.data.title for m in matches]
    assert [e.link for e in parsed.entries] == [m.entry.data.link for m in matches]
    assert [e.id for e in parsed.entries] == [m.entry.data.id for m in matches]
    assert parsed.entries[0].get("author") == "ZNing"
    assert parsed.entries[0].source.title == "金融消息"


def test_json_variant_has_the_same_entries(corpus, meta):
    # feedparser 6.0 has no JSON Feed reader: check JSON Feed 1.1's required members here.
    matches = corpus.matches()
    document = json.loads(build_feed(meta, matches, kind="json", now=NOW))
    assert document["title"] == "新能源与光伏"
    assert [i["id"] for i in document["items"]] == [m.entry.data.id for m in matches]
    assert [i["title"] for i in document["items"]] == [m.entry.data.title for m in matches]
    assert [i["url"] for i in document["items"]] == [m.entry.data.link for m in matches]
    assert all(i["content_html"] for i in document["items"])
    assert document["items"][0]["authors"] == [{"name": "ZNing"}]


def test_json_feed_carries_source_and_dates(corpus, meta):
    document = json.loads(build_feed(meta, corpus.matches(limit=2), kind="json", now=NOW))
    assert document["version"] == "https://jsonfeed.org/version/1.1"
    assert document["feed_url"] == "http://127.0.0.1:8080/feeds/new-energy.json"
    item = document["items"][0]
    assert item["date_published"] == "2022-05-31T10:03:41+00:00"
    assert item["_source"]["title"] == "金融消息"
    assert "东财滚动新闻" in item["tags"]


HOSTILE = (
    '<p onclick="steal()">利好<script>alert("x")</script>'
    '<img src="x.png" onerror="alert(1)"><a href="javascript:alert(2)">点我</a>'
    '<a href="https://example.com/ok">正常链接</a></p><iframe src="https://evil.example"></iframe>'
)


@pytest.mark.parametrize("kind", ["atom", "rss", "json"])
def test_scripts_handlers_and_javascript_links_never_reach_the_feed(corpus, meta, kind):
    [match] = corpus.matches(limit=1)
    data = replace(match.entry.data, content=HOSTILE, link="javascript:alert(3)")
    source = replace(match.entry.feed, link="javascript:alert(4)")
    hostile = replace(match, entry=replace(match.entry, data=data, feed=source))
    body = build_feed(meta, [hostile], kind=kind, now=NOW).decode()
    for bad in ("<script", "&lt;script", "onerror", "onclick", "javascript", "iframe", "alert"):
        assert bad not in body.lower()
    assert "正常链接" in body and "https://example.com/ok" in body


def test_hostile_atom_is_still_valid(corpus, valid_atom, meta):
    [match] = corpus.matches(limit=1)
    data = replace(match.entry.data, content=HOSTILE, link=None, title="标题\x00\x1b含控制字符")
    parsed = valid_atom(
        build_feed(
            meta, [replace(match, entry=replace(match.entry, data=data))], kind="atom", now=NOW
        )
    )
    assert parsed.entries[0].title == "标题含控制字符"


def test_same_matches_give_the_same_bytes_whatever_the_clock(corpus, meta):
    matches = corpus.matches()
    for kind in ("atom", "rss", "json"):
        first = build_feed(meta, matches, kind=kind, now=NOW)
        assert build_feed(meta, matches, kind=kind, now=NOW + timedelta(days=9)) == first


@pytest.mark.parametrize("kind", ["atom", "rss", "json"])
def test_empty_feed_is_valid(valid_atom, meta, kind):
    body = build_feed(meta, [], kind=kind, now=NOW)
    if kind == "atom":
        assert valid_atom(body).feed.updated == NOW.isoformat()
    elif kind == "rss":
        assert feedparser.parse(body).bozo == 0
    else:
        assert json.loads(body)["items"] == []


def test_private_feed_links_carry_the_token(meta):
    private = replace(meta, token="s3cret/+?")
    root = etree.fromstring(build_feed(private, [], kind="atom", now=NOW))
    self_link = root.find(f"{ATOM}link[@rel='self']").get("href")
    assert self_link == "http://127.0.0.1:8080/feeds/new-energy.atom?token=s3cret%2F%2B%3F"
    assert feed_url(private, "rss").endswith(".rss?token=s3cret%2F%2B%3F")


def test_opml_lists_every_feed_with_chinese_titles(meta):
    metas = [meta, FeedMeta("desk-hk", "港股 & <快讯>", None, meta.base_url)]
    root = etree.fromstring(build_opml(metas, title="feedsvc 订阅"))
    assert root.get("version") == "2.0"
    assert root.findtext("head/title") == "feedsvc 订阅"
    outlines = root.findall("body/outline")
    assert [o.get("title") for o in outlines] == ["新能源与光伏", "港股 & <快讯>"]
    assert [o.get("xmlUrl") for o in outlines] == [
        "http://127.0.0.1:8080/feeds/new-energy.atom",
        "http://127.0.0.1:8080/feeds/desk-hk.atom",
    ]
    assert {o.get("type") for o in outlines} == {"rss"}


def test_source_without_http_link_still_gives_valid_atom(corpus, valid_atom, meta):
    [match] = corpus.matches(limit=1)
    bare = FeedInfo(id="file:///srv/feeds/local.xml", title="本地源")
    parsed = valid_atom(
        build_feed(
            meta, [replace(match, entry=replace(match.entry, feed=bare))], kind="atom", now=NOW
        )
    )
    assert parsed.entries[0].source.title == "本地源"
