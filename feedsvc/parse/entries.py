"""``RawFeed`` → ``FeedInfo`` and ``EntryData``: cleaned fields, plausible dates, stable keys."""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

from feedsvc.model import EntryData, FeedInfo
from feedsvc.parse.clean import (
    HTML_TYPES,
    MAX_HTML_CHARS,
    MAX_URL_CHARS,
    clean_text,
    plain_text,
    safe_link,
    sanitised_html,
)
from feedsvc.parse.record import RawEntry, RawFeed, TextDetail

MAX_NAME_CHARS = 200
MAX_CATEGORIES = 50
#: Longer ids are stored under their hash so the storage key stays indexable.
MAX_KEY_CHARS = 512

#: Dates outside this window are not believed (the web's feeds start in the late 1990s).
EARLIEST_DATE = datetime(1995, 1, 1, tzinfo=UTC)
FUTURE_TOLERANCE = timedelta(days=1)
#: A feed's own polling hint is honoured up to this bound.
MAX_FEED_HINT = timedelta(days=7)

_SY_PERIODS = {
    "hourly": timedelta(hours=1),
    "daily": timedelta(days=1),
    "weekly": timedelta(weeks=1),
    "monthly": timedelta(days=30),
    "yearly": timedelta(days=365),
}


def feed_info(raw: RawFeed, source: str, url: str, now: datetime) -> FeedInfo:
    """The feed's own fields; its id falls back to its link, then to the fetched URL."""
    link = safe_link(raw.link, url)
    return FeedInfo(
        id=clean_text(raw.id, MAX_URL_CHARS) or link or url,
        title=plain_text(raw.title) or source,
        link=link,
        updated=_date(raw.updated, now),
    )


def polling_hint(raw: RawFeed) -> timedelta | None:
    """The feed's own polling hint: RSS ``<ttl>`` minutes or ``sy:updatePeriod``/``Frequency``."""
    hints = []
    ttl = _positive_int(raw.ttl)
    if ttl:
        hints.append(timedelta(minutes=ttl))
    period = _SY_PERIODS.get(raw.update_period.strip().lower())
    if period:
        hints.append(period / (_positive_int(raw.update_frequency) or 1))
    return min(max(hints), MAX_FEED_HINT) if hints else None


def entry_data(
    raw: tuple[RawEntry, ...], feed_url: str, now: datetime, max_entries: int, warnings: list[str]
) -> tuple[EntryData, ...]:
    """The first ``max_entries`` entries, each key once; each cut adds a warning."""
    if len(raw) > max_entries:
        warnings.append(f"kept the first {max_entries} of {len(raw)} entries")
        raw = raw[:max_entries]
    # An id shared by several entries identifies none of them (reused GUIDs).
    id_counts = Counter(clean_text(e.id, MAX_HTML_CHARS) for e in raw)
    kept: dict[str, EntryData] = {}
    for item in raw:
        entry = _entry(item, feed_url, now, id_counts)
        if entry.key in kept:
            warnings.append(f"dropped a second entry with key {entry.key!r}")
            continue
        kept[entry.key] = entry
    return tuple(kept.values())


def _entry(item: RawEntry, feed_url: str, now: datetime, id_counts: Counter[str]) -> EntryData:
    title = plain_text(item.title)
    link = safe_link(item.link, feed_url)
    # The whole id decides identity; only the copy shown as ``id`` is shortened.
    own_id = clean_text(item.id, MAX_HTML_CHARS)
    fallback = "sha256:" + _sha256(title, item.published_text or item.updated_text)
    key = own_id if own_id and id_counts[own_id] == 1 else (link or fallback)
    if len(key) > MAX_KEY_CHARS:
        key = "sha256:" + _sha256(key)
    base = link or feed_url
    summary = sanitised_html(item.summary, base)
    content = sanitised_html(_main_content(item.content), base) or summary
    return EntryData(
        id=own_id[:MAX_URL_CHARS] or link or fallback,
        key=key,
        title=title,
        link=link,
        published=_date(item.published, now),
        updated=_date(item.updated, now),
        authors=tuple(dict.fromkeys(_names(item.authors))),
        categories=tuple(dict.fromkeys(_names(item.categories)))[:MAX_CATEGORIES],
        content=content,
        summary=summary,
        content_hash=_sha256(title, link or "", content),
    )


def _main_content(contents: tuple[TextDetail, ...]) -> TextDetail | None:
    """The HTML content when the feed offers several representations, else the first."""
    if not contents:
        return None
    return next((c for c in contents if c.type in HTML_TYPES), contents[0])


def _names(values: tuple[str, ...]) -> list[str]:
    """Author names or category terms, cleaned; the empty ones left out."""
    return [name for value in values if (name := clean_text(value, MAX_NAME_CHARS))]


def _positive_int(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() and 0 < int(text) < 10**6 else None


def _date(parsed: time.struct_time | None, now: datetime) -> datetime | None:
    """A UTC struct_time as an aware datetime; implausible dates become ``now``."""
    if parsed is None:
        return None
    try:
        when = datetime(*parsed[:6], tzinfo=UTC)
    except (ValueError, OverflowError):
        return now
    return when if EARLIEST_DATE <= when <= now + FUTURE_TOLERANCE else now


def _sha256(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).hexdigest()
