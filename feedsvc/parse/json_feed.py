"""JSON Feed 1.0 and 1.1 (https://jsonfeed.org/version/1.1), which feedparser does not read."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime

from feedsvc.errors import ParseError
from feedsvc.parse.record import RawEntry, RawFeed, TextDetail, first_text

_VERSIONS = {
    "https://jsonfeed.org/version/1": "json1",
    "https://jsonfeed.org/version/1.1": "json11",
}


def looks_like_json(text: str) -> bool:
    return text.lstrip("\ufeff \t\r\n").startswith("{")


def read_json_feed(text: str, source: str) -> RawFeed:
    """The JSON Feed in ``text``.

    Raises:
        ParseError: ``parse`` for a document that is not valid JSON, ``not_a_feed`` for
            JSON that is not a JSON Feed of a known version.
    """
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ParseError(source, "parse", f"invalid JSON: {e}") from e
    version = _version(document)
    if version is None:
        raise ParseError(source, "not_a_feed", "no feed found")
    items = document.get("items")
    return RawFeed(
        version=version,
        entries=tuple(_item(i) for i in items if isinstance(i, dict))
        if isinstance(items, list)
        else (),
        id=first_text(document.get("feed_url")),
        link=first_text(document.get("home_page_url")),
        title=_text(document.get("title")),
    )


def _version(document: object) -> str | None:
    if not isinstance(document, dict):
        return None
    return _VERSIONS.get(str(document.get("version", "")).rstrip("/"))


def _item(item: Mapping[str, object]) -> RawEntry:
    authors = item.get("authors") or ([item["author"]] if item.get("author") else [])
    tags = item.get("tags")
    return RawEntry(
        id="" if item.get("id") is None else str(item["id"]),
        link=first_text(item.get("url"), item.get("external_url")),
        title=_text(item.get("title")),
        summary=_text(item.get("summary")),
        content=_content(item.get("content_html"), item.get("content_text")),
        published_text=str(item.get("date_published") or ""),
        published=_date(item.get("date_published")),
        updated=_date(item.get("date_modified")),
        authors=tuple(
            first_text(a.get("name"), a.get("email")) for a in authors if isinstance(a, dict)
        )
        if isinstance(authors, list)
        else (),
        categories=tuple(t for t in tags if isinstance(t, str)) if isinstance(tags, list) else (),
    )


def _content(html: object, text: object) -> tuple[TextDetail, ...]:
    if isinstance(html, str):
        return (TextDetail(html, "text/html"),)
    if isinstance(text, str):
        return (TextDetail(text, "text/plain"),)
    return ()


def _text(value: object) -> TextDetail | None:
    return TextDetail(value, "text/plain") if isinstance(value, str) else None


def _date(value: object) -> time.struct_time | None:
    """An RFC 3339 date as feedparser would give it: a UTC struct_time."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).timetuple()
