"""feedparser, for every document the fast path declines: its result → ``RawFeed``.

feedparser's result is an untyped tree of dictionaries; this module alone reads it.
"""

from __future__ import annotations

import io
import time
import xml.sax
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import feedparser
import feedparser.mixin

from feedsvc.errors import ParseError
from feedsvc.parse.record import RawEntry, RawFeed, TextDetail, first_text

# feedparser re-joins the current xml:base with itself at every start tag (mixin.py,
# unknown_starttag): ~15 % of its time on the corpus. The function is pure (it depends
# only on its arguments and a module constant), so memoising it changes no result.
feedparser.mixin.make_safe_absolute_uri = lru_cache(maxsize=512)(
    feedparser.mixin.make_safe_absolute_uri
)


def read_with_feedparser(
    document: bytes, url: str, headers: Mapping[str, str], source: str
) -> RawFeed:
    """feedparser's reading of the prepared document.

    Raises:
        ParseError: ``parse`` when feedparser itself failed, ``not_a_feed`` when it
            found nothing feed-like.
    """
    result = _run_feedparser(document, url, headers, source)
    if not result.get("version") and not result.get("entries"):
        error = result.get("bozo_exception")
        reason = f"no feed found ({error})" if error else "no feed found"
        raise ParseError(source, "not_a_feed", reason)
    feed = result.get("feed", {})
    warnings: list[str] = []
    return RawFeed(
        version=str(result.get("version") or ""),
        entries=tuple(_entry(e) for e in _usable_entries(result, warnings)),
        id=first_text(feed.get("id")),
        link=first_text(feed.get("link")),
        title=_optional_detail(feed.get("title_detail")),
        updated=_struct_time(dict.get(feed, "updated_parsed")),
        ttl=str(feed.get("ttl") or ""),
        update_period=str(feed.get("sy_updateperiod") or ""),
        update_frequency=str(feed.get("sy_updatefrequency") or ""),
        warnings=tuple(warnings),
    )


def _run_feedparser(document: bytes, url: str, headers: Mapping[str, str], source: str) -> Any:
    """feedparser on the prepared document; its exceptions become ParseError.

    Its own sanitising and relative-URI resolution are off (nh3 does both, faster).
    """
    response_headers = {
        # We decoded the body ourselves; declare what feedparser now receives.
        "content-type": "application/xml; charset=utf-8",
        "content-location": url,
    }
    if "content-language" in headers:
        response_headers["content-language"] = headers["content-language"]
    try:
        return feedparser.parse(
            io.BytesIO(document),
            response_headers=response_headers,
            sanitize_html=False,
            resolve_relative_uris=False,
        )
    except Exception as e:
        raise ParseError(source, "parse", f"feedparser failed: {type(e).__name__}: {e}") from e


def _usable_entries(result: Any, warnings: list[str]) -> list[Any]:
    """feedparser's entries minus the unusable ones; a document not well-formed adds a warning.

    ``bozo`` is not a verdict: a feed that is not well-formed is kept, but after a SAX
    error the loose parser may have produced fragments, so entries with neither a
    title nor a link are dropped.
    """
    entries = list(result.get("entries", []))
    if result.get("bozo"):
        error = result.get("bozo_exception")
        warning = f"feed is not well-formed: {error}"
        if isinstance(error, xml.sax.SAXException):
            usable = [e for e in entries if e.get("title") or e.get("link")]
            if len(usable) < len(entries):
                warning += f"; dropped {len(entries) - len(usable)} entries without title or link"
            entries = usable
        warnings.append(warning)
    return entries


def _entry(item: Any) -> RawEntry:
    contents = item.get("content")
    authors, tags = item.get("authors"), item.get("tags")
    return RawEntry(
        id=first_text(item.get("id")),
        link=first_text(item.get("link")),
        title=_optional_detail(item.get("title_detail")),
        summary=_optional_detail(item.get("summary_detail")),
        content=tuple(_detail(c) for c in contents) if isinstance(contents, list) else (),
        published_text=str(item.get("published") or ""),
        # dict.get: FeedParserDict.get would fall back to the published date (and warn).
        updated_text=str(dict.get(item, "updated") or ""),
        published=_struct_time(item.get("published_parsed")),
        updated=_struct_time(dict.get(item, "updated_parsed")),
        authors=tuple(first_text(a.get("name"), a.get("email")) for a in authors)
        if isinstance(authors, list)
        else (),
        categories=tuple(first_text(t.get("term"), t.get("label")) for t in tags)
        if isinstance(tags, list)
        else (),
    )


def _optional_detail(detail: Any) -> TextDetail | None:
    return _detail(detail) if detail else None


def _detail(detail: Any) -> TextDetail:
    return TextDetail(
        value=str(detail.get("value") or ""),
        type=str(detail.get("type") or ""),
        base=str(detail.get("base") or ""),
    )


def _struct_time(value: object) -> time.struct_time | None:
    return value if isinstance(value, time.struct_time) else None
