"""The flows, one function each: update sources, send due digests, deliver, publish feeds.

This is the only module that knows the order of the stages. Every flow takes the
current time as ``now`` (UTC) so tests and ``--now`` catch-up runs control the clock.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import itertools
import logging
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from pathlib import Path
from urllib.parse import urlsplit

from apscheduler.triggers.base import BaseTrigger

from feedsvc.config import Config, FetchConfig, SourceConfig, SubscriberConfig
from feedsvc.errors import FetchError, NotifyError, SourceError
from feedsvc.feeds import build_feed, build_opml, feed_meta, feed_url
from feedsvc.fetch import Fetcher
from feedsvc.mail import Mailer, build_message
from feedsvc.match import MatchIndex, highlight, normalize, snippet
from feedsvc.model import (
    DigestItem,
    DigestJob,
    Fetched,
    Match,
    MatchedEntry,
    NotModified,
    OutboxMessage,
    ParsedFeed,
    SourceForUpdate,
    StoredEntry,
    SubscriptionInfo,
)
from feedsvc.render import DigestRenderer, RenderedDigest
from feedsvc.schedule import schedule_trigger
from feedsvc.store.base import FetchOutcome, SourceSpec, Storage, SubscriberSpec
from feedsvc.tokens import sign_unsubscribe
from feedsvc.workers import EntryHits, parse_and_match

log = logging.getLogger("feedsvc.pipeline")

#: How long a node may hold a claimed source or outbox message before others may take it.
LEASE = timedelta(minutes=5)
#: Retries of an outbox message back off from one minute up to six hours.
OUTBOX_RETRY_BASE = timedelta(minutes=1)
OUTBOX_RETRY_MAX = timedelta(hours=6)
#: The same story seen twice within this time (same normalised title) is listed once.
SAME_STORY_WINDOW = timedelta(days=1)
#: How far back digests are remembered to recognise a story arriving again.
STORY_MEMORY = timedelta(days=7)
FEED_KINDS = ("atom", "rss", "json")
#: Outbox messages claimed per delivery round, and the wait for more while digests render.
DELIVERY_BATCH = 100
DELIVERY_IDLE_SECONDS = 0.05


@dataclass
class Services:
    """Everything the flows use, built once by the composition root (cli)."""

    config: Config
    storage: Storage
    fetcher: Fetcher
    index: MatchIndex
    renderer: DigestRenderer
    mailer: Mailer
    secret: str
    #: Identifies this node in leases.
    owner: str
    #: Where CPU-bound parsing runs; ``None`` runs it in the default thread pool.
    parse_pool: Executor | None = None
    #: Called with the names of subscriptions whose feeds changed (the web cache).
    on_feeds_changed: Callable[[set[str]], None] = field(default=lambda names: None)


@dataclass(frozen=True)
class SourceReport:
    """The outcome of one source update, as logged and summarised."""

    source: str
    status: str  # ok | not_modified | error
    new: int = 0
    changed: int = 0
    matches: int = 0
    error: str | None = None
    seconds: float = 0.0


#: Told of each finished source and how many the cycle claimed (a progress bar).
Progress = Callable[["SourceReport", int], None]


@dataclass(frozen=True)
class DigestReport:
    """What one run of the digest flow did."""

    enqueued: int
    sent: int
    failed: int


# -- configuration into the database --------------------------------------------------


async def sync_config(svc: Services, now: datetime) -> None:
    """Make the database's sources and subscribers follow the config (invariant 4)."""
    await svc.storage.sync_sources(
        [SourceSpec(s.name, s.url, s.enabled) for s in svc.config.sources], now
    )
    await svc.storage.sync_subscribers(
        [SubscriberSpec(s.email, tuple(s.subscriptions)) for s in svc.config.subscribers], now
    )


# -- polling ----------------------------------------------------------------------------

#: Outcomes of one cycle are recorded on the sources in batches of this many.
RECORD_BATCH = 100
#: Weight of the newest observed gap in the moving average of a source's publish gap.
GAP_WEIGHT = 0.3


async def update_due_sources(
    svc: Services,
    now: datetime,
    *,
    names: Sequence[str] | None = None,
    limit: int = 1000,
    progress: Progress | None = None,
) -> list[SourceReport]:
    """Claim the sources due now (or the named ones), update each, return their reports
    in claim order.

    One source's failure is recorded on that source and never stops the others. At
    most ``fetch.max_pending`` sources are in progress at once, so a cycle holds at
    most that many bodies; they start round-robin over hosts, so one host's queue
    (held back by the per-host limit) cannot fill every place. ``progress`` is told
    of each finished source with the number claimed.
    """
    lease_until = now + LEASE
    if names:
        claimed = await svc.storage.claim_sources(names, now, svc.owner, lease_until)
    else:
        claimed = await svc.storage.claim_due_sources(now, svc.owner, lease_until, limit)
    places = asyncio.Semaphore(svc.config.fetch.max_pending)
    recorder = _OutcomeRecorder(svc.storage, RECORD_BATCH)

    async def update(source: SourceForUpdate) -> SourceReport:
        async with places:
            report, outcome = await poll_source(svc, source, now)
        await recorder.add(source.name, outcome)
        if progress is not None:
            progress(report, len(claimed))
        return report

    try:
        reports = await asyncio.gather(*(update(s) for s in interleave_hosts(claimed)))
    finally:
        await recorder.flush()
    changed = {r.source for r in reports if r.new or r.changed}
    if changed:
        svc.on_feeds_changed(_subscriptions_of_sources(svc.config, changed))
    by_name = {r.source: r for r in reports}
    return [by_name[s.name] for s in claimed]


async def poll_source(
    svc: Services, source: SourceForUpdate, now: datetime
) -> tuple[SourceReport, FetchOutcome]:
    """Fetch → parse → store → match one claimed source; returns the report and the
    outcome to record on the source (the caller records it)."""
    spec = _source_config(svc.config, source.name)
    started = time.monotonic()
    try:
        result = await svc.fetcher.fetch(source, max_body_bytes=spec.max_body_bytes)
        if isinstance(result, NotModified):
            report = SourceReport(source.name, "not_modified")
            outcome = _not_modified_outcome(result, source, now, spec, svc.config.fetch)
        else:
            parsed, hits = await _parse(svc, result, spec, now)
            stored = await svc.storage.save_entries(source.name, parsed.feed, parsed.entries, now)
            matches = match_entries(svc.index, svc.config, stored, hits)
            await svc.storage.save_matches(matches, now)
            new = sum(1 for e in stored if e.first_seen == e.changed_at)
            report = SourceReport(source.name, "ok", new, len(stored) - new, len(matches))
            outcome = _success_outcome(result, parsed, source, now, spec, svc.config.fetch, new)
    except SourceError as e:
        report = SourceReport(source.name, "error", error=f"{e.kind}: {e.message}")
        outcome = _failure_outcome(e, source, now, spec, svc.config.fetch.max_backoff)
    report = replace(report, seconds=round(time.monotonic() - started, 3))
    _log_source_report(report, outcome)
    return report, outcome


class _OutcomeRecorder:
    """Records a cycle's outcomes in batches: one transaction per batch, not per source
    (on SQLite, the per-transaction cost capped a steady cycle below 1,000 sources/s).

    A crash loses at most the unrecorded batch: those sources' leases expire and they
    are polled again, which stores nothing twice.
    """

    def __init__(self, storage: Storage, size: int) -> None:
        self._storage = storage
        self._size = size
        self._pending: dict[str, FetchOutcome] = {}

    async def add(self, name: str, outcome: FetchOutcome) -> None:
        self._pending[name] = outcome
        if len(self._pending) >= self._size:
            await self.flush()

    async def flush(self) -> None:
        batch, self._pending = self._pending, {}
        if batch:
            await self._storage.record_fetches(batch)


def interleave_hosts(sources: Sequence[SourceForUpdate]) -> list[SourceForUpdate]:
    """The sources round-robin over their hosts, in claim order within each host."""
    by_host: dict[str, list[SourceForUpdate]] = {}
    for source in sources:
        by_host.setdefault((urlsplit(source.url).hostname or "").lower(), []).append(source)
    rounds = itertools.zip_longest(*by_host.values())
    return [source for round_ in rounds for source in round_ if source is not None]


async def _parse(
    svc: Services, fetched: Fetched, spec: SourceConfig, now: datetime
) -> tuple[ParsedFeed, EntryHits | None]:
    """Parse off the event loop: feedparser is CPU-bound and would stall HTTP and mail."""
    job = functools.partial(
        parse_and_match,
        fetched.body,
        source=spec.name,
        url=fetched.url,
        headers=dict(fetched.headers),
        now=now,
        encoding=spec.encoding,
        max_entries=svc.config.fetch.max_entries_per_poll,
    )
    return await asyncio.get_running_loop().run_in_executor(svc.parse_pool, job)


def match_entries(
    index: MatchIndex,
    config: Config,
    entries: Iterable[StoredEntry],
    hits: EntryHits | None = None,
) -> list[Match]:
    """Every (subscription, entry) pair the index matches, honouring ``sources:`` limits.

    ``hits``: the entries' hits by key as a parse worker found them (see
    ``workers.parse_and_match``); ``None`` matches here.
    """
    allowed = {s.name: set(s.sources) for s in config.subscriptions if s.sources is not None}
    entries = list(entries)
    if hits is None:
        found = index.match_many((entry.data, entry.source) for entry in entries)
    else:
        found = [hits.get(entry.data.key, []) for entry in entries]
    matches = []
    for entry, entry_hits in zip(entries, found, strict=True):
        for hit in entry_hits:
            if hit.subscription in allowed and entry.source not in allowed[hit.subscription]:
                continue
            matches.append(Match(hit.subscription, entry.entry_id, hit.terms))
    return matches


def _success_outcome(
    fetched: Fetched,
    parsed: ParsedFeed,
    source: SourceForUpdate,
    now: datetime,
    spec: SourceConfig,
    bounds: FetchConfig,
    new: int,
) -> FetchOutcome:
    last_new_at, gap = observe_new_entries(source, now, new)
    hints = (parsed.min_interval, _seconds(fetched.max_age))
    interval = poll_interval(spec.every, bounds, gap, last_new_at, now, hints)
    return FetchOutcome(
        at=now,
        next_poll=now + interval,
        ok=True,
        etag=fetched.etag,
        last_modified=fetched.last_modified,
        body_hash=fetched.body_hash,
        moved_to=fetched.moved_to,
        last_new_at=last_new_at,
        publish_gap=gap,
        feed_min_interval=parsed.min_interval,
    )


def _not_modified_outcome(
    result: NotModified,
    source: SourceForUpdate,
    now: datetime,
    spec: SourceConfig,
    bounds: FetchConfig,
) -> FetchOutcome:
    hints = (source.feed_min_interval, _seconds(result.max_age))
    gap, last_new_at = source.publish_gap, source.last_new_at
    return FetchOutcome(
        at=now,
        next_poll=now + poll_interval(spec.every, bounds, gap, last_new_at, now, hints),
        ok=True,
        not_modified=True,
        etag=result.etag,
        last_modified=result.last_modified,
        moved_to=result.moved_to,
    )


def observe_new_entries(
    source: SourceForUpdate, now: datetime, new: int
) -> tuple[datetime | None, timedelta | None]:
    """The source's (last_new_at, publish_gap) after a poll that found ``new`` entries.

    The gap since the last poll with new entries is divided by their number: a feed
    publishing every two minutes polled every ten shows five new entries, and its gap
    is two minutes, not ten. The first poll of a source only sets ``last_new_at``
    (everything is new then, which says nothing about the rhythm).
    """
    if not new:
        return source.last_new_at, source.publish_gap
    if source.last_new_at is None:
        return now, source.publish_gap
    observed = (now - source.last_new_at) / new
    if source.publish_gap is None:
        return now, observed
    return now, source.publish_gap * (1 - GAP_WEIGHT) + observed * GAP_WEIGHT


def poll_interval(
    every: timedelta,
    bounds: FetchConfig,
    gap: timedelta | None,
    last_new_at: datetime | None,
    now: datetime,
    hints: Iterable[timedelta | None],
) -> timedelta:
    """The normal time until a source's next poll.

    The source's average publish gap (``every`` until one is known), longer when the
    source has been quiet for more than twice that (half the silence: a source that
    stopped publishing slows down step by step), at least the feed's own hints (ttl,
    ``sy:update*``, ``Cache-Control: max-age``), all within ``[min_every, max_every]``
    widened to include ``every``. The operator's maximum wins over a feed's hint: a
    ``<ttl>`` of a year must not silence a source.
    """
    low, high = min(bounds.min_every, every), max(bounds.max_every, every)
    estimate = every if gap is None else gap
    if last_new_at is not None:
        estimate = max(estimate, (now - last_new_at) / 2)
    floor = max((hint for hint in hints if hint is not None), default=low)
    return min(high, max(low, estimate, floor))


def _failure_outcome(
    error: SourceError,
    source: SourceForUpdate,
    now: datetime,
    spec: SourceConfig,
    max_backoff: timedelta,
) -> FetchOutcome:
    retry_after = error.retry_after if isinstance(error, FetchError) else None
    delay = backoff_delay(spec.every, source.consecutive_failures + 1, max_backoff, retry_after)
    return FetchOutcome(
        at=now,
        next_poll=now + delay,
        ok=False,
        error_kind=error.kind,
        error=error.message,
        disable=isinstance(error, FetchError) and error.gone,
    )


def backoff_delay(
    interval: timedelta,
    failures: int,
    cap: timedelta,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> timedelta:
    """Exponential back-off with ±20 % jitter, capped; a server's Retry-After wins if longer.

    Jitter spreads the retries of many sources that failed together (one host down).
    """
    base = min(cap.total_seconds(), interval.total_seconds() * 2 ** min(failures - 1, 30))
    jittered = base * (rng or random).uniform(0.8, 1.2)
    seconds = min(cap.total_seconds(), jittered)
    if retry_after is not None:
        seconds = max(seconds, min(retry_after, cap.total_seconds()))
    return timedelta(seconds=seconds)


def _seconds(value: float | None) -> timedelta | None:
    return None if value is None else timedelta(seconds=value)


def _log_source_report(report: SourceReport, outcome: FetchOutcome) -> None:
    """One structured line per source update, greppable by key=value."""
    level = logging.WARNING if report.status == "error" else logging.INFO
    log.log(
        level,
        "source=%s status=%s new=%d changed=%d matches=%d seconds=%.3f next=%s%s%s",
        report.source,
        report.status,
        report.new,
        report.changed,
        report.matches,
        report.seconds,
        outcome.next_poll.isoformat(timespec="seconds"),
        f" moved_to={outcome.moved_to!r}" if outcome.moved_to else "",
        f" error={report.error!r}" if report.error else "",
    )


def _source_config(config: Config, name: str) -> SourceConfig:
    for source in config.sources:
        if source.name == name:
            return source
    # A source removed from the config can still be claimed once before sync disables it.
    return SourceConfig(name=name, url="http://invalid.invalid/", enabled=False)


def _subscriptions_of_sources(config: Config, sources: set[str]) -> set[str]:
    return {s.name for s in config.subscriptions if s.sources is None or sources & set(s.sources)}


# -- digests --------------------------------------------------------------------------


async def send_due_digests(svc: Services, now: datetime) -> DigestReport:
    """Enqueue every digest that is due at ``now`` and deliver the outbox as it fills.

    Delivery overlaps rendering: the first digests are on the wire while later ones
    render. Every message is still stored before it is sent and marked after.
    """
    enqueuing = asyncio.create_task(enqueue_due_digests(svc, now))
    sent = failed = 0
    try:
        while True:
            last_round = enqueuing.done()
            batch_sent, batch_failed = await deliver_outbox(svc, now, DELIVERY_BATCH)
            sent, failed = sent + batch_sent, failed + batch_failed
            if batch_sent or batch_failed:
                continue
            if last_round:
                return DigestReport(enqueuing.result(), sent, failed)
            await asyncio.wait({enqueuing}, timeout=DELIVERY_IDLE_SECONDS)
    finally:
        enqueuing.cancel()


async def enqueue_due_digests(svc: Services, now: datetime) -> int:
    """Render and store every digest due at ``now``; returns how many were enqueued.

    A digest covers the subscriber's pending matches up to the latest scheduled time at
    or before ``now``; its Message-ID derives from (subscriber, that time), so a second
    run for the same window finds it already enqueued and adds nothing.
    """
    enqueued = 0
    for subscriber in svc.config.subscribers:
        window_end = latest_fire_time(subscriber_trigger(svc.config, subscriber), now)
        if window_end is not None and await enqueue_digest(svc, subscriber, window_end, now):
            enqueued += 1
    return enqueued


async def enqueue_digest(
    svc: Services, subscriber: SubscriberConfig, window_end: datetime, now: datetime
) -> bool:
    """Render the subscriber's digest for the window and store it in the outbox.

    Every pending match is recorded as delivered by it, including stories left out
    because the subscriber already got them. An empty digest is never stored (its
    matches stay pending for the next one). Returns whether a message was enqueued.
    """
    pending, fresh = await digest_matches(svc, subscriber.email, window_end, now)
    if not fresh:
        return False
    last = await svc.storage.last_digest_at(subscriber.email)
    job = build_digest_job(svc, subscriber, fresh, last or fresh[0].matched_at, window_end)
    rendered = svc.renderer.render(job)
    raw = _digest_message(svc, job, rendered, now)
    outbox_id = await svc.storage.enqueue_digest(
        subscriber.email, job.message_id, raw, pending, now
    )
    log.info(
        "digest subscriber=%s window_end=%s stories=%d matches=%d outbox=%s",
        subscriber.email,
        window_end.isoformat(),
        len(job.items),
        len(pending),
        outbox_id,
    )
    return outbox_id is not None


async def preview_digest(svc: Services, email: str, now: datetime) -> RenderedDigest | None:
    """The digest this subscriber would get for everything pending now, not stored or sent."""
    subscriber = next((s for s in svc.config.subscribers if s.email == email), None)
    if subscriber is None:
        raise KeyError(f"no subscriber {email!r} in the config")
    _, fresh = await digest_matches(svc, email, now, now)
    if not fresh:
        return None
    last = await svc.storage.last_digest_at(email)
    return svc.renderer.render(
        build_digest_job(svc, subscriber, fresh, last or fresh[0].matched_at, now)
    )


async def digest_matches(
    svc: Services, email: str, until: datetime, now: datetime
) -> tuple[list[MatchedEntry], list[MatchedEntry]]:
    """The subscriber's pending matches, and those of them that are news to the
    subscriber: not a story (same link, or same title within a day) that an earlier
    digest already carried through another source."""
    pending = await svc.storage.pending_matches(email, until)
    if not pending:
        return pending, pending
    sent = await svc.storage.delivered_entries(email, now - STORY_MEMORY)
    return pending, drop_sent_stories(pending, sent)


def drop_sent_stories(
    pending: Sequence[MatchedEntry], sent: Sequence[StoredEntry]
) -> list[MatchedEntry]:
    links = {e.data.link for e in sent if e.data.link}
    titles: dict[str, list[datetime]] = {}
    for entry in sent:
        titles.setdefault(normalize(entry.data.title), []).append(_stored_time(entry))

    def already_sent(match: MatchedEntry) -> bool:
        if match.entry.data.link in links:
            return True
        when = _stored_time(match.entry)
        times = titles.get(normalize(match.entry.data.title), [])
        return any(abs(when - t) <= SAME_STORY_WINDOW for t in times)

    return [m for m in pending if not already_sent(m)]


def subscriber_trigger(config: Config, subscriber: SubscriberConfig) -> BaseTrigger:
    return schedule_trigger(subscriber.digest, config.subscriber_timezone(subscriber))


def latest_fire_time(trigger: BaseTrigger, now: datetime) -> datetime | None:
    """The latest time at or before ``now`` at which the schedule fires (None: not yet).

    Looks back over growing spans so that frequent schedules cost few iterations.
    """
    for lookback in (timedelta(hours=1), timedelta(days=1), timedelta(days=8), timedelta(days=366)):
        fire = trigger.get_next_fire_time(None, now - lookback)
        if fire is None or fire > now:
            continue
        while True:
            following = trigger.get_next_fire_time(fire, fire + timedelta(seconds=1))
            if following is None or following > now:
                # UTC: a local time in a DST gap never compares equal across zones.
                return fire.astimezone(UTC)  # type: ignore[no-any-return]
            fire = following
    return None


def build_digest_job(
    svc: Services,
    subscriber: SubscriberConfig,
    pending: Sequence[MatchedEntry],
    window_start: datetime,
    window_end: datetime,
) -> DigestJob:
    """Group, de-duplicate, cap and highlight a subscriber's pending matches."""
    config = svc.config
    stories = merge_same_stories(pending)
    ordered = sorted(
        stories,
        key=lambda s: (
            subscriber.subscriptions.index(s[0].subscription),
            s[0].entry.source,
            -_entry_time(s[0]).timestamp(),
        ),
    )
    shown, omitted = _cap_per_digest(ordered, config.mail.max_entries)
    labels = {s.name: s.title for s in config.sources if s.title}
    items = tuple(_digest_item([_labelled(m, labels) for m in story]) for story in shown)
    subscriptions = tuple(
        _subscription_info(svc, subscriber.email, name)
        for name in subscriber.subscriptions
        if any(item.match.subscription == name for item in items) or name in omitted
    )
    return DigestJob(
        subscriber=subscriber.email,
        locale=subscriber.locale,
        timezone=config.subscriber_timezone(subscriber),
        window_start=window_start,
        window_end=window_end,
        items=items,
        subscriptions=subscriptions,
        message_id=digest_message_id(subscriber.email, window_end, config.mail.sender),
        unsubscribe_url=unsubscribe_url(
            svc, subscriber.email, tuple(s.name for s in subscriptions)
        ),
        omitted=omitted,
    )


def merge_same_stories(matches: Sequence[MatchedEntry]) -> list[list[MatchedEntry]]:
    """Group matches that are the same story: same link, or same normalised title
    within a day (wire copy syndicated by several sources). Each group's first
    element is the one shown; the others name the sources beside it."""
    groups: list[list[MatchedEntry]] = []
    by_link: dict[tuple[str, str], list[MatchedEntry]] = {}
    by_title: dict[tuple[str, str], list[MatchedEntry]] = {}
    for match in sorted(matches, key=_entry_time):
        link_key = (match.subscription, match.entry.data.link or f"#{match.entry.entry_id}")
        title_key = (match.subscription, normalize(match.entry.data.title))
        group = by_link.get(link_key) or by_title.get(title_key)
        if group is not None and _entry_time(match) - _entry_time(group[0]) > SAME_STORY_WINDOW:
            group = None
        if group is None:
            group = []
            groups.append(group)
        group.append(match)
        by_link[link_key] = group
        by_title[title_key] = group
    return groups


def _cap_per_digest(
    stories: list[list[MatchedEntry]], cap: int
) -> tuple[list[list[MatchedEntry]], dict[str, int]]:
    omitted: dict[str, int] = {}
    for story in stories[cap:]:
        name = story[0].subscription
        omitted[name] = omitted.get(name, 0) + 1
    return stories[:cap], omitted


def _labelled(match: MatchedEntry, labels: dict[str, str]) -> MatchedEntry:
    """The operator's ``title:`` for a source wins over the title its feed gives itself."""
    label = labels.get(match.entry.source)
    if label is None:
        return match
    entry = replace(match.entry, feed=replace(match.entry.feed, title=label))
    return replace(match, entry=entry)


def _source_label(match: MatchedEntry) -> str:
    return match.entry.feed.title or match.entry.source


def _digest_item(story: list[MatchedEntry]) -> DigestItem:
    first = story[0]
    terms = sorted({t for m in story for t in m.terms}, key=len, reverse=True)
    data = first.entry.data
    others = (_source_label(m) for m in story[1:])
    also_in = tuple(dict.fromkeys(o for o in others if o != _source_label(first)))
    return DigestItem(
        match=first,
        title=highlight(data.title, terms),
        snippet=snippet(data.content or data.summary, terms),
        also_in=also_in,
    )


def _entry_time(match: MatchedEntry) -> datetime:
    return _stored_time(match.entry)


def _stored_time(entry: StoredEntry) -> datetime:
    return entry.data.published or entry.data.updated or entry.first_seen


def _subscription_info(svc: Services, email: str, name: str) -> SubscriptionInfo:
    sub = svc.config.subscription(name)
    assert sub is not None, f"subscription {name} vanished from the config"
    published = sub.atom and sub.token is None
    feed = feed_url(feed_meta(svc.config, name)) if published else None
    return SubscriptionInfo(
        name=name,
        title=sub.display_title,
        feed_url=feed,
        unsubscribe_url=unsubscribe_url(svc, email, (name,)),
    )


def unsubscribe_url(svc: Services, email: str, subscriptions: Sequence[str]) -> str:
    token = sign_unsubscribe(svc.secret, email, subscriptions)
    return f"{svc.config.http.base_url}/unsubscribe?token={token}"


def digest_message_id(email: str, window_end: datetime, sender: str) -> str:
    """Deterministic per (subscriber, window): a resend after a crash carries the same id."""
    digest = hashlib.sha256(f"{email.lower()}|{window_end.isoformat()}".encode()).hexdigest()[:32]
    domain = parseaddr(sender)[1].rpartition("@")[2] or "feedsvc.invalid"
    return f"<digest.{digest}@{domain}>"


def _digest_message(
    svc: Services, job: DigestJob, rendered: RenderedDigest, now: datetime
) -> bytes:
    domain = job.message_id.rpartition("@")[2].rstrip(">")
    return build_message(
        rendered,
        sender=svc.config.mail.sender,
        to=job.subscriber,
        message_id=job.message_id,
        list_id=f"feedsvc digests <digests.{domain}>",
        unsubscribe_url=job.unsubscribe_url,
        date=now,
    )


# -- delivery ----------------------------------------------------------------------


async def deliver_outbox(svc: Services, now: datetime, limit: int = 500) -> tuple[int, int]:
    """Send claimed outbox messages; mark each sent, or failed with a retry time.

    Marking happens only after the mail server accepted the message, so a crash in
    between resends that message (same Message-ID) instead of losing it.
    """
    messages = await svc.storage.claim_outbox(now, svc.owner, now + LEASE, limit)
    results = await asyncio.gather(*(_deliver_one(svc, message, now) for message in messages))
    return sum(results), len(results) - sum(results)


async def _deliver_one(svc: Services, message: OutboxMessage, now: datetime) -> bool:
    sender = parseaddr(svc.config.mail.sender)[1]
    try:
        await svc.mailer.send(message.raw, sender=sender, recipient=message.subscriber)
    except NotifyError as e:
        retry_at = now + outbox_retry_delay(message.attempts + 1)
        await svc.storage.mark_failed(
            message.id, now, str(e), permanent=e.permanent, retry_at=retry_at
        )
        log.warning(
            "delivery outbox=%d to=%s status=%s error=%r",
            message.id,
            message.subscriber,
            "failed" if e.permanent else "retry",
            str(e),
        )
        return False
    await svc.storage.mark_sent(message.id, now)
    log.info("delivery outbox=%d to=%s status=sent", message.id, message.subscriber)
    return True


def outbox_retry_delay(attempts: int) -> timedelta:
    seconds = OUTBOX_RETRY_BASE.total_seconds() * 2 ** min(attempts - 1, 20)
    return timedelta(seconds=min(seconds, OUTBOX_RETRY_MAX.total_seconds()))


# -- feeds ------------------------------------------------------------------------------


async def render_feed(
    svc_config: Config, storage: Storage, name: str, kind: str, now: datetime
) -> bytes:
    """A subscription's feed as bytes, newest matches first."""
    sub = svc_config.subscription(name)
    assert sub is not None
    matches = await storage.recent_matches(name, sub.max_entries)
    return build_feed(feed_meta(svc_config, name), matches, kind=kind, now=now)  # type: ignore[arg-type]


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
