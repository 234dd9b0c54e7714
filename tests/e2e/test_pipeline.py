"""The whole pipeline on real parts: HTTP feeds → SQLite → matches → Atom and SMTP digests."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser
import pytest

from feedsvc import pipeline
from feedsvc.cli import open_services
from feedsvc.config import load_config
from feedsvc.match import normalize
from tests.e2e.servers import CORPUS, FeedServer, SmtpServer, write_config

FINEWS_LINK = re.compile(r"https://finews\.withounder\.com/emnews/\d{4}/\d\d/\d\d/\d+\.html")


def demo_config(
    tmp_path: Path, feeds: FeedServer, smtp: SmtpServer | None = None, more_sources: str = ""
) -> Path:
    delivery = "smtp" if smtp else f"maildir:{tmp_path / 'mail'}"
    smtp_section = (
        f"  smtp: {{host: 127.0.0.1, port: {smtp.port}, starttls: false}}\n" if smtp else ""
    )
    return write_config(
        tmp_path / "feedsvc.yaml",
        f"""\
database: sqlite:///{tmp_path / "feedsvc.db"}
timezone: Asia/Shanghai
secret: test-secret
http: {{listen: 127.0.0.1:8080, base_url: https://news.example.com}}
mail:
  from: "新闻摘要 <digest@news.example.com>"
  delivery: {delivery}
{smtp_section}fetch:
  allow_private: ["127.0.0.1:{feeds.port}"]
sources:
  - {{name: finews, url: "{feeds.url("/feed.xml")}", every: 10m}}
{more_sources}subscriptions:
  - {{name: hk, title: 港股, keywords: [港股]}}
  - {{name: energy, title: 新能源, query: '(新能源 OR 光伏) -广告'}}
subscribers:
  - {{email: reader@example.com, subscriptions: [hk, energy], digest: "daily 08:00", locale: zh-CN}}
""",
    )


def corpus_entries_with(path: Path, *keywords: str) -> set[str]:
    """Links of corpus entries whose normalised title or content contains a keyword:
    the plain substring check the matcher must agree with."""
    parsed = feedparser.parse(path.read_bytes())
    links = set()
    for entry in parsed.entries:
        text = normalize(entry.title + " " + entry.content[0].value)
        if any(normalize(k) in text for k in keywords):
            links.add(entry.link)
    return links


async def test_poll_stores_then_304_then_snapshot_yields_only_changes(
    tmp_path: Path, feed_server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    feed_server.files["/feed.xml"] = (CORPUS / "snapshots/emnews-t0.xml").read_bytes()
    loaded = load_config(demo_config(tmp_path, feed_server))
    async with open_services(loaded, parse_in_processes=False) as svc:
        t0 = datetime.now(UTC)
        first = await pipeline.update_due_sources(svc, t0)
        t0_count = len(feedparser.parse(feed_server.files["/feed.xml"]).entries)
        assert [(r.status, r.new, r.changed) for r in first] == [("ok", t0_count, 0)]

        second = await pipeline.update_due_sources(svc, t0 + timedelta(minutes=11))
        assert [r.status for r in second] == ["not_modified"]
        _, headers = feed_server.requests[-1]
        assert headers.get("If-None-Match") and headers.get("If-Modified-Since")

        feed_server.files["/feed.xml"] = (CORPUS / "snapshots/emnews-t1.xml").read_bytes()
        third = await pipeline.update_due_sources(svc, t0 + timedelta(minutes=22))
        assert [(r.status, r.new, r.changed) for r in third] == [("ok", 5, 2)]

        not_due = await pipeline.update_due_sources(svc, t0 + timedelta(minutes=23))
        assert not_due == []


async def test_digest_over_smtp_has_chinese_subject_both_parts_and_exactly_the_matches(
    tmp_path: Path,
    feed_server: FeedServer,
    smtp_server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    feed_server.files["/feed.xml"] = (CORPUS / "all.xml").read_bytes()
    loaded = load_config(demo_config(tmp_path, feed_server, smtp_server))
    async with open_services(loaded, parse_in_processes=False) as svc:
        now = datetime.now(UTC)
        await pipeline.update_due_sources(svc, now)
        report = await pipeline.send_due_digests(svc, now + timedelta(days=1))
        assert (report.enqueued, report.sent, report.failed) == (1, 1, 0)
        again = await pipeline.send_due_digests(svc, now + timedelta(days=1, minutes=1))
        assert (again.enqueued, again.sent) == (0, 0)

    [envelope] = smtp_server.handler.messages
    assert envelope.mail_from == "digest@news.example.com"
    assert envelope.rcpt_tos == ["reader@example.com"]
    message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
    assert "港股" in message["Subject"] and "新能源" in message["Subject"]
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    expected = corpus_entries_with(CORPUS / "all.xml", "港股", "新能源", "光伏")
    assert expected, "the corpus must contain matching entries"
    assert set(FINEWS_LINK.findall(text)) == expected
    assert set(FINEWS_LINK.findall(html)) == expected


async def test_atom_feed_parses_cleanly_and_keeps_source_ids(
    tmp_path: Path, feed_server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    feed_server.files["/feed.xml"] = (CORPUS / "all.xml").read_bytes()
    loaded = load_config(demo_config(tmp_path, feed_server))
    async with open_services(loaded, parse_in_processes=False) as svc:
        now = datetime.now(UTC)
        await pipeline.update_due_sources(svc, now)
        written = await pipeline.publish_feeds(svc.config, svc.storage, tmp_path / "out", now)
    assert tmp_path / "out" / "hk.atom" in written
    atom = feedparser.parse((tmp_path / "out" / "hk.atom").read_bytes())
    assert atom.bozo == 0, atom.get("bozo_exception")
    source = feedparser.parse((CORPUS / "all.xml").read_bytes())
    matching_links = corpus_entries_with(CORPUS / "all.xml", "港股")
    expected_ids = {e.id for e in source.entries if e.link in matching_links}
    assert {e.id for e in atom.entries} == expected_ids
    assert all(e.get("source", {}).get("title") for e in atom.entries)


async def test_a_story_sent_once_is_not_sent_again_when_another_source_brings_it(
    tmp_path: Path,
    feed_server: FeedServer,
    smtp_server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Syndicated copies: day 1 the Hong Kong feed brings 港股 stories; day 2 the main
    feed brings the same stories (same links) and others: only the others are sent."""
    monkeypatch.chdir(tmp_path)
    feed_server.files["/feed.xml"] = (CORPUS / "by_source" / "hk.xml").read_bytes()
    wire = f'  - {{name: wire, url: "{feed_server.url("/wire.xml")}"}}\n'
    loaded = load_config(demo_config(tmp_path, feed_server, smtp_server, wire))
    async with open_services(loaded, parse_in_processes=False) as svc:
        now = datetime.now(UTC)
        await pipeline.update_due_sources(svc, now, names=["finews"])
        first = await pipeline.send_due_digests(svc, now + timedelta(days=1))
        feed_server.files["/wire.xml"] = (CORPUS / "all.xml").read_bytes()
        await pipeline.update_due_sources(svc, now + timedelta(days=1), names=["wire"])
        second = await pipeline.send_due_digests(svc, now + timedelta(days=2))
    assert (first.sent, second.sent) == (1, 1), (first, second)
    day1, day2 = (
        email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        for envelope in smtp_server.handler.messages
    )
    links1 = set(FINEWS_LINK.findall(day1.get_body(("plain",)).get_content()))
    links2 = set(FINEWS_LINK.findall(day2.get_body(("plain",)).get_content()))
    assert links1 == corpus_entries_with(CORPUS / "by_source" / "hk.xml", "港股", "新能源", "光伏")
    expected = corpus_entries_with(CORPUS / "all.xml", "港股", "新能源", "光伏") - links1
    assert links2 == expected and expected
