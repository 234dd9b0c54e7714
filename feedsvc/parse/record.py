"""The raw record every reader of a document produces: what the feed says, not yet cleaned.

feedparser's result, the lxml fast path and JSON Feed are each turned into a ``RawFeed``;
``parse.entries`` alone turns that into ``FeedInfo`` and ``EntryData`` (cleaning,
sanitising, keys). Text is as written: an empty string means the feed gave none.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TextDetail:
    """A text construct: its value and how to read it."""

    value: str
    #: A MIME type (``text/plain``, ``text/html``, ``application/xhtml+xml``).
    type: str
    #: The base for its relative URLs (xml:base), when the document sets one.
    base: str = ""


@dataclass(frozen=True, slots=True)
class RawEntry:
    """One entry as the document gives it."""

    id: str = ""
    link: str = ""
    title: TextDetail | None = None
    summary: TextDetail | None = None
    #: Every representation of the content, in document order.
    content: tuple[TextDetail, ...] = ()
    #: Dates as written: a key of last resort hashes them when there is no id or link.
    published_text: str = ""
    updated_text: str = ""
    #: Dates as UTC struct_time (feedparser's form), when they could be read.
    published: time.struct_time | None = None
    updated: time.struct_time | None = None
    #: Each author's name, else e-mail address.
    authors: tuple[str, ...] = ()
    #: Each category's term, else label.
    categories: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RawFeed:
    """A document read as a feed: its own fields, its entries, its polling hints."""

    #: feedparser's version string, e.g. "atom10", "rss20", "json11".
    version: str
    entries: tuple[RawEntry, ...] = ()
    id: str = ""
    link: str = ""
    title: TextDetail | None = None
    updated: time.struct_time | None = None
    #: RSS ``<ttl>`` (minutes), ``sy:updatePeriod`` and ``sy:updateFrequency``, as written.
    ttl: str = ""
    update_period: str = ""
    update_frequency: str = ""
    #: Problems the reader met that did not stop it.
    warnings: tuple[str, ...] = ()


def first_text(*values: object) -> str:
    """The first non-empty value if it is text, else "": ``a or b`` for untrusted fields."""
    value = next((v for v in values if v), "")
    return value if isinstance(value, str) else ""
