"""The plain data passed between stages: frozen dataclasses, every datetime aware and UTC."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass(frozen=True)
class SourceForUpdate:
    """What the fetcher needs to know about a source to poll it."""

    #: The source's name in the config (unique).
    name: str
    #: The URL to fetch (may differ from the config after a permanent redirect).
    url: str
    #: Validators from the last successful fetch, for conditional GET.
    etag: str | None = None
    last_modified: str | None = None
    #: SHA-256 of the last body parsed; an identical 200 is not parsed again.
    body_hash: str | None = None
    #: Failures in a row before this poll (drives the back-off).
    consecutive_failures: int = 0
    #: When a poll last found new entries, and the moving average of the time between
    #: new entries since: the adaptive polling interval.
    last_new_at: datetime | None = None
    publish_gap: timedelta | None = None
    #: The feed's own polling hint from its last parse (``<ttl>``, ``sy:update*``),
    #: kept because a 304 carries no feed to read it from.
    feed_min_interval: timedelta | None = None


@dataclass(frozen=True)
class Fetched:
    """A 200 response: the body and what the fetcher learnt about the source."""

    #: The URL the body finally came from (after redirects).
    url: str
    body: bytes
    #: Response headers, keys lower-cased.
    headers: Mapping[str, str]
    etag: str | None
    last_modified: str | None
    body_hash: str
    #: Set when every redirect hop was permanent (301/308): the source's new URL.
    moved_to: str | None = None
    #: ``Cache-Control: max-age`` in seconds: a lower bound for the polling interval.
    max_age: float | None = None


@dataclass(frozen=True)
class NotModified:
    """A 304, or a 200 whose body hash equals the last one: nothing to parse."""

    url: str
    etag: str | None = None
    last_modified: str | None = None
    #: ``Cache-Control: max-age`` in seconds: a lower bound for the polling interval.
    max_age: float | None = None
    #: Set when every redirect hop was permanent (301/308): the source's new URL.
    moved_to: str | None = None


FetchResult = Fetched | NotModified


@dataclass(frozen=True)
class FeedInfo:
    """The feed an entry came from, as republished in ``atom:source``."""

    #: The feed's own id (Atom ``id``), else its link, else the fetched URL.
    id: str
    title: str
    link: str | None = None
    updated: datetime | None = None


@dataclass(frozen=True)
class EntryData:
    """One entry of a feed, as parsed: sanitised HTML and plain text.

    ``id`` is what the feed itself says (Atom ``id``, RSS ``guid``, else the link);
    ``key`` is the stable key under which the entry is stored for its source.
    """

    id: str
    key: str
    #: Plain text (no markup), never empty: "(untitled)" is not invented here.
    title: str
    link: str | None
    published: datetime | None
    updated: datetime | None
    authors: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    #: Sanitised HTML of the content, or of the summary when there is no content.
    content: str = ""
    #: Sanitised HTML of the summary (may equal ``content``).
    summary: str = ""
    #: SHA-256 over the fields a reader sees; a different hash means "updated".
    content_hash: str = ""


@dataclass(frozen=True)
class ParsedFeed:
    """A parsed document: the feed's own data and its usable entries."""

    feed: FeedInfo
    entries: tuple[EntryData, ...]
    #: feedparser's version string, e.g. "atom10", "rss20".
    version: str = ""
    #: Problems that did not stop parsing (harmless bozo, dropped entries).
    warnings: tuple[str, ...] = ()
    #: The feed's own polling hint (RSS ``<ttl>``, ``sy:updatePeriod``/``sy:updateFrequency``):
    #: a lower bound for the polling interval.
    min_interval: timedelta | None = None


@dataclass(frozen=True)
class StoredEntry:
    """An entry as the database keeps it, with the source it came from."""

    #: Database id of the entry row.
    entry_id: int
    source: str
    feed: FeedInfo
    data: EntryData
    first_seen: datetime
    #: When the stored content last changed (equals first_seen for a new entry).
    changed_at: datetime

    @property
    def time(self) -> datetime:
        """When the story happened, as digests order, group and show it: published,
        else updated, else first seen.

        Two other times are different on purpose: the ``updated`` of a republished Atom
        entry (``feeds.entry_updated``) prefers the source's ``updated`` and feedsvc's
        own change time, so that feed readers notice an edit; and the time a digest
        shows beside a story (``render``) is its publication, else first sight, since an
        edit time is not shown as the time a story appeared.
        """
        return self.data.published or self.data.updated or self.first_seen


@dataclass(frozen=True)
class Match:
    """A subscription's query matched an entry; ``terms`` are the terms that hit."""

    subscription: str
    entry_id: int
    terms: tuple[str, ...]


@dataclass(frozen=True)
class MatchedEntry:
    """A stored entry together with the match that selected it."""

    entry: StoredEntry
    subscription: str
    terms: tuple[str, ...]
    matched_at: datetime


@dataclass(frozen=True)
class SourceStatus:
    """A source's health, for ``feedsvc status`` and /metrics."""

    name: str
    url: str
    enabled: bool
    last_success: datetime | None
    last_error_at: datetime | None
    last_error_kind: str | None
    last_error: str | None
    consecutive_failures: int
    next_poll: datetime | None
    entry_count: int
    #: The URL the config gives, when a permanent redirect moved the source elsewhere.
    moved_from: str | None = None


@dataclass(frozen=True)
class Highlighted:
    """Plain text with the spans ``[start, end)`` where matched terms occur."""

    text: str
    spans: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class DigestItem:
    """One story in a digest: the match, its highlighted title and snippet."""

    match: MatchedEntry
    title: Highlighted
    snippet: Highlighted
    #: Other sources that carried the same story (syndicated copies), by name.
    also_in: tuple[str, ...] = ()


@dataclass(frozen=True)
class SubscriptionInfo:
    """What a digest or a feed shows of a subscription."""

    name: str
    title: str
    #: URL of the subscription's Atom feed ("and N more" links there), if published.
    feed_url: str | None = None
    #: Signed one-click unsubscribe URL for this subscriber and subscription.
    unsubscribe_url: str | None = None


@dataclass(frozen=True)
class DigestJob:
    """A digest to build for one subscriber: the stories and the window they cover."""

    subscriber: str
    locale: str
    timezone: str
    #: The digest window (start exclusive, end inclusive), UTC.
    window_start: datetime
    window_end: datetime
    #: Stories in display order (grouped by subscription, then by source).
    items: tuple[DigestItem, ...]
    subscriptions: tuple[SubscriptionInfo, ...]
    #: Deterministic per (subscriber, window): a resend after a crash is recognisable.
    message_id: str
    #: Unsubscribe from everything in this digest (List-Unsubscribe).
    unsubscribe_url: str
    #: Stories left out by the per-digest cap, per subscription name.
    omitted: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class OutboxMessage:
    """A rendered digest stored before sending (the outbox row)."""

    id: int
    subscriber: str
    message_id: str
    #: The whole RFC 5322 message as bytes.
    raw: bytes
    attempts: int
    created_at: datetime
