"""The polling flow: claim the due sources, then fetch → parse → store → match each one
and record when to poll it next (the rules of "when" live in ``feedsvc.schedule``)."""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from feedsvc.config import Config, FetchConfig, SourceConfig
from feedsvc.errors import FetchError, SourceError
from feedsvc.match import MatchIndex
from feedsvc.model import Fetched, Match, NotModified, ParsedFeed, SourceForUpdate, StoredEntry
from feedsvc.pipeline.services import LEASE, Progress, Services, SourceReport
from feedsvc.schedule import backoff_delay, observe_new_entries, poll_interval
from feedsvc.store.base import FetchOutcome, Storage
from feedsvc.workers import EntryHits, parse_and_match

log = logging.getLogger("feedsvc.pipeline")

#: Outcomes of one cycle are recorded on the sources in batches of this many.
RECORD_BATCH = 100


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
    interval = _poll_interval(spec, bounds, gap, last_new_at, now, hints)
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
        next_poll=now + _poll_interval(spec, bounds, gap, last_new_at, now, hints),
        ok=True,
        not_modified=True,
        etag=result.etag,
        last_modified=result.last_modified,
        moved_to=result.moved_to,
    )


def _poll_interval(
    spec: SourceConfig,
    bounds: FetchConfig,
    gap: timedelta | None,
    last_new_at: datetime | None,
    now: datetime,
    hints: Iterable[timedelta | None],
) -> timedelta:
    return poll_interval(
        spec.every,
        gap,
        last_new_at,
        now,
        hints,
        min_every=bounds.min_every,
        max_every=bounds.max_every,
    )


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
