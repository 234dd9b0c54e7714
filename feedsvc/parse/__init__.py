"""Bytes → ``ParsedFeed``: encodings, safe parsing (lxml, else feedparser), clean HTML, keys.

Three readers turn a document into one ``RawFeed`` record (``parse.record``): the lxml
fast path for well-formed Atom and RSS 2.0 (``parse.well_formed``), feedparser for
everything else (``parse.feedparser_path``) and JSON Feed (``parse.json_feed``).
``parse.entries`` turns that record into the feed's data and its entries.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from feedsvc.errors import ParseError
from feedsvc.model import ParsedFeed
from feedsvc.parse.clean import MAX_TITLE_CHARS
from feedsvc.parse.decode import declares_entities, decode_document, prepared_document
from feedsvc.parse.entries import MAX_KEY_CHARS, entry_data, feed_info, polling_hint
from feedsvc.parse.feedparser_path import read_with_feedparser
from feedsvc.parse.json_feed import looks_like_json, read_json_feed
from feedsvc.parse.record import RawFeed
from feedsvc.parse.well_formed import read_well_formed

__all__ = ["MAX_KEY_CHARS", "MAX_TITLE_CHARS", "decode_document", "parse_feed"]


def parse_feed(
    body: bytes,
    *,
    source: str,
    url: str,
    headers: Mapping[str, str],
    now: datetime,
    encoding: str | None = None,
    max_entries: int = 500,
    fast_path: bool = True,
) -> ParsedFeed:
    """Parse a fetched document into the feed and its usable entries.

    A pure function of its arguments (the lead runs it in a worker pool): feedparser
    gets a file object, so the body is never opened as a path or URL.

    Args:
        body: The document as fetched (already decompressed).
        source: The source's name, for errors.
        url: Where the body came from: the base for relative links and the feed id of
            last resort.
        headers: Response headers, keys lower-cased (``content-type`` gives a charset).
        now: The poll time; implausible dates become this first-seen time.
        encoding: Forced by the source's config, overriding BOM, HTTP and XML.
        max_entries: Entries kept (the first ones, normally the newest).
        fast_path: Try the lxml reading of well-formed Atom/RSS 2.0 first (same result,
            several times faster); False runs feedparser only (tests, benchmarks).

    Raises:
        ParseError: ``entities`` for a document declaring entities, ``not_a_feed``
            when nothing feed-like was found, ``parse`` when feedparser itself failed
            or a JSON document is not valid JSON.
    """
    text, warnings = decode_document(body, headers.get("content-type", ""), encoding)
    raw = _read(text, source=source, url=url, headers=headers, fast_path=fast_path)
    warnings.extend(raw.warnings)
    entries = entry_data(raw.entries, url, now, max_entries, warnings)
    return ParsedFeed(
        feed=feed_info(raw, source, url, now),
        entries=entries,
        version=raw.version,
        warnings=tuple(warnings),
        min_interval=polling_hint(raw),
    )


def _read(
    text: str, *, source: str, url: str, headers: Mapping[str, str], fast_path: bool
) -> RawFeed:
    """The decoded document read by the first reader that can."""
    if looks_like_json(text):
        return read_json_feed(text, source)
    if declares_entities(text):
        raise ParseError(source, "entities", "the document declares XML entities; refused")
    document = prepared_document(text)
    raw = read_well_formed(document, url) if fast_path else None
    return raw or read_with_feedparser(document, url, headers, source)
