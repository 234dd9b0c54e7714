"""Test support for render and mail: digest jobs from the finews corpus (the SMTP server is
tests/servers/smtp.py)."""

from __future__ import annotations

import calendar
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import feedparser

from feedsvc.model import (
    DigestItem,
    DigestJob,
    EntryData,
    FeedInfo,
    Highlighted,
    MatchedEntry,
    StoredEntry,
    SubscriptionInfo,
)

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests" / "data" / "corpus"
MAIL_DATA = REPO / "tests" / "data" / "mail"
NOW = datetime(2026, 11, 26, 0, 0, tzinfo=UTC)  # 08:00 in Asia/Shanghai


def _plain(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromtimestamp(calendar.timegm(value), UTC)


def load_corpus(path: Path = CORPUS / "all.xml") -> list[StoredEntry]:
    """The corpus feed as stored entries (plain feedparser: the real parser is not ours)."""
    parsed = feedparser.parse(path.read_bytes())
    feed = FeedInfo(id=parsed.feed.get("id", "finews"), title=parsed.feed.get("title", ""))
    entries = []
    for i, e in enumerate(parsed.entries):
        content = e.get("content", [{}])[0].get("value", "") or e.get("summary", "")
        data = EntryData(
            id=e.id,
            key=e.id,
            title=e.title,
            link=e.get("link"),
            published=_parse_time(e.get("published_parsed")),
            updated=_parse_time(e.get("updated_parsed")),
            content=content,
            summary=e.get("summary", ""),
        )
        entries.append(StoredEntry(i + 1, "finews", feed, data, NOW, NOW))
    return entries


def highlight(text: str, terms: Sequence[str]) -> Highlighted:
    spans = []
    for term in terms:
        spans += [(m.start(), m.end()) for m in re.finditer(re.escape(term), text)]
    return Highlighted(text, tuple(sorted(spans)))


def snippet(text: str, terms: Sequence[str], width: int = 60) -> Highlighted:
    hits = [text.find(t) for t in terms if t in text]
    start = max(0, min(hits) - width // 3) if hits else 0
    return highlight(text[start : start + width], terms)


def item(entry: StoredEntry, subscription: str, terms: Sequence[str], **kw: Any) -> DigestItem:
    found = tuple(t for t in terms if t in entry.data.title + entry.data.content) or tuple(terms)
    match = MatchedEntry(entry, subscription, found, NOW)
    return DigestItem(
        match=match,
        title=highlight(entry.data.title, terms),
        snippet=snippet(_plain(entry.data.content), terms),
        **kw,
    )


@dataclass
class JobSpec:
    """A readable description of a digest: subscription → (title, terms, how many)."""

    subscriptions: Mapping[str, tuple[str, tuple[str, ...], int]]
    locale: str = "zh-CN"
    timezone: str = "Asia/Shanghai"
    omitted: dict[str, int] = field(default_factory=dict)
    subscriber: str = "reader@example.com"


def make_job(spec: JobSpec, entries: list[StoredEntry]) -> DigestJob:
    items: list[DigestItem] = []
    infos = []
    for name, (title, terms, count) in spec.subscriptions.items():
        hits = [e for e in entries if any(t in e.data.title + e.data.content for t in terms)]
        items += [item(e, name, terms) for e in hits[:count]]
        infos.append(
            SubscriptionInfo(
                name=name,
                title=title,
                feed_url=f"https://feeds.example.com/feeds/{name}.atom",
                unsubscribe_url=f"https://feeds.example.com/unsubscribe?token={name}-tok",
            )
        )
    digest = hashlib.sha256(spec.subscriber.encode()).hexdigest()[:12]
    return DigestJob(
        subscriber=spec.subscriber,
        locale=spec.locale,
        timezone=spec.timezone,
        window_start=NOW.replace(day=25),
        window_end=NOW,
        items=tuple(items),
        subscriptions=tuple(infos),
        message_id=f"<digest.{digest}.20261126@feeds.example.com>",
        unsubscribe_url="https://feeds.example.com/unsubscribe?token=all-tok",
        omitted=spec.omitted,
    )
