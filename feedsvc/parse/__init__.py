"""Bytes → ``ParsedFeed``: encodings, safe parsing (lxml, else feedparser), clean HTML, keys."""

from __future__ import annotations

import codecs
import hashlib
import html
import io
import json
import re
import time
import xml.sax
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from functools import lru_cache, partial
from typing import Any
from urllib.parse import urljoin, urlsplit

import feedparser
import feedparser.mixin
import nh3

from feedsvc.errors import ParseError
from feedsvc.model import EntryData, FeedInfo, ParsedFeed
from feedsvc.parse.well_formed import parse_well_formed

#: Caps on what one entry may carry into the database (characters).
MAX_TITLE_CHARS = 1_000
MAX_HTML_CHARS = 500_000
MAX_URL_CHARS = 2_048
MAX_NAME_CHARS = 200
MAX_CATEGORIES = 50
#: Longer ids are stored under their hash so the storage key stays indexable.
MAX_KEY_CHARS = 512

#: Dates outside this window are not believed (the web's feeds start in the late 1990s).
EARLIEST_DATE = datetime(1995, 1, 1, tzinfo=UTC)
FUTURE_TOLERANCE = timedelta(days=1)
#: A feed's own polling hint is honoured up to this bound.
MAX_FEED_HINT = timedelta(days=7)

_LINK_SCHEMES = frozenset({"http", "https", "mailto"})
_URL_ATTRIBUTES = frozenset({"href", "src", "cite", "longdesc"})
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml", "html", "xhtml"})
_SY_PERIODS = {
    "hourly": timedelta(hours=1),
    "daily": timedelta(days=1),
    "weekly": timedelta(weeks=1),
    "monthly": timedelta(days=30),
    "yearly": timedelta(days=365),
}
# gb2312 and gbk are subsets of GB18030: decoding them strictly fails on characters in
# daily use (镕 in 朱镕基, 喆); Big5-HKSCS likewise extends Big5.
_SUPERSETS = {"gb2312": "gb18030", "gbk": "gb18030", "big5": "big5hkscs"}
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_XML_DECL_ENCODING = re.compile(rb"^\s*<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9._:-]+)[\"']")
_TEXT_DECL = re.compile(r"^\s*<\?xml[^>]*\?>")
_CHARSET = re.compile(r"charset\s*=\s*[\"']?([A-Za-z0-9._:-]+)", re.IGNORECASE)
_ENTITY_DECL = re.compile(r"<!ENTITY", re.IGNORECASE)
# C0 controls but TAB, LF, CR (XML 1.0 forbids them), C1 controls (feedparser would turn
# them into windows-1252 glyphs) and whole ANSI CSI sequences ("\x1b[31m", not just ESC).
_CONTROL = re.compile("(?:\x1b\\[|\x9b)[0-?]*[ -/]*[@-~]|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Every match of _CONTROL contains one of these: a cheap test before the costly scan.
_CONTROL_CHAR = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_WHITESPACE = re.compile(r"\s+")
_BLOCK_TAG = re.compile(r"<(?:br|p|div|li|h[1-6]|tr|td|blockquote)\b", re.IGNORECASE)
# A real UTF-8 document with a stray byte or two is still UTF-8; a GB18030 or Big5
# document read as UTF-8 fails on almost every Chinese character.
_STRAY_BYTES_PER_MB = 64


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

    JSON Feed (1.0 and 1.1), which feedparser does not read, is mapped onto the shape of
    feedparser's result so that both kinds of feed share every later step.

    Raises:
        ParseError: ``entities`` for a document declaring entities, ``not_a_feed``
            when nothing feed-like was found, ``parse`` when feedparser itself failed
            or a JSON document is not valid JSON.
    """
    text, warnings = decode_document(body, headers.get("content-type", ""), encoding)
    if _looks_like_json(text):
        result = _json_feed_result(text, source)
    elif _declares_entities(text):
        raise ParseError(source, "entities", "the document declares XML entities; refused")
    else:
        document = _prepared_document(text)
        result = (fast_path and parse_well_formed(document, url)) or _run_feedparser(
            document, url, headers, source
        )
    if not result.get("version") and not result.get("entries"):
        raise ParseError(source, "not_a_feed", _not_a_feed_reason(result))
    entries = _entries(_usable_entries(result, max_entries, warnings), url, now, warnings)
    feed = result.get("feed", {})
    return ParsedFeed(
        feed=_feed_info(feed, source, url, now),
        entries=entries,
        version=str(result.get("version") or ""),
        warnings=tuple(warnings),
        min_interval=_feed_hint(feed),
    )


# ---------------------------------------------------------------- encodings


def decode_document(
    body: bytes, content_type: str = "", forced: str | None = None
) -> tuple[str, list[str]]:
    """The document as text, and warnings about its encoding.

    Order: a forced encoding, then a BOM (always removed), then the declared encodings
    (HTTP charset, XML declaration; multi-byte ones before UTF-8, single-byte ones
    after it since they decode anything), then GB18030, then UTF-8 with a few stray
    bytes replaced, then windows-1252. A declared ``gb2312``/``gbk`` is read as
    GB18030 and ``big5`` as Big5-HKSCS, their supersets.
    """
    for bom, bom_encoding in _BOMS:
        if body.startswith(bom):
            body = body[len(bom) :]
            forced = forced or bom_encoding
            break
    if forced:
        try:
            return body.decode(_superset(forced), "replace"), []
        except LookupError:  # codecs.lookup accepts non-text codecs such as "base64"
            pass
    declared = [e for e in (_http_charset(content_type), _xml_encoding(body)) if e]
    for candidate in _candidates(declared):
        try:
            text = body.decode(candidate)
        except (UnicodeDecodeError, LookupError):
            continue
        return text, _encoding_warnings(declared, candidate)
    return _last_resort(body, declared)


def _candidates(declared: list[str]) -> list[str]:
    multi_byte = [e for e in declared if not _is_single_byte(e)]
    single_byte = [e for e in declared if _is_single_byte(e)]
    ordered = [*multi_byte, "utf-8", *single_byte, "gb18030"]
    return list(dict.fromkeys(ordered))


def _last_resort(body: bytes, declared: list[str]) -> tuple[str, list[str]]:
    text = body.decode("utf-8", "replace")
    if text.count("\ufffd") <= _STRAY_BYTES_PER_MB * (1 + len(body) // 1_000_000):
        return text, [f"invalid UTF-8 bytes replaced (declared: {_names(declared)})"]
    return body.decode("windows-1252", "replace"), [
        f"decoded as windows-1252 (declared: {_names(declared)})"
    ]


def _encoding_warnings(declared: list[str], used: str) -> list[str]:
    if not declared or used == declared[0]:
        return []
    return [f"declared encoding {_names(declared)} is wrong; decoded as {used}"]


def _names(declared: list[str]) -> str:
    return ", ".join(declared) or "none"


def _superset(name: str) -> str:
    try:
        canonical = codecs.lookup(name).name
    except LookupError:
        return name
    return _SUPERSETS.get(canonical, canonical)


def _is_single_byte(name: str) -> bool:
    try:
        return len("€é".encode(name, "replace")) <= 2
    except LookupError:
        return False


def _http_charset(content_type: str) -> str | None:
    match = _CHARSET.search(content_type)
    return _superset(match.group(1)) if match else None


def _xml_encoding(body: bytes) -> str | None:
    match = _XML_DECL_ENCODING.match(body[:200])
    return _superset(match.group(1).decode("ascii")) if match else None


# ---------------------------------------------------------------- feedparser

# feedparser re-joins the current xml:base with itself at every start tag (mixin.py,
# unknown_starttag): ~15 % of its time on the corpus. The function is pure (it depends
# only on its arguments and a module constant), so memoising it changes no result.
feedparser.mixin.make_safe_absolute_uri = lru_cache(maxsize=512)(
    feedparser.mixin.make_safe_absolute_uri
)


def _declares_entities(text: str) -> bool:
    """Whether the prolog declares entities (billion laughs, external entities).

    Declarations can only precede the root element, so everything before the first
    CDATA section is searched: a literal ``<!ENTITY`` in a CDATA article is fine.
    """
    cdata = text.find("<![CDATA[")
    return _ENTITY_DECL.search(text, 0, cdata if cdata >= 0 else len(text)) is not None


def _prepared_document(text: str) -> bytes:
    """The decoded document as both parsers read it: UTF-8, no declaration, no controls."""
    return _without_controls(_TEXT_DECL.sub("", text, count=1)).encode("utf-8")


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


# ---------------------------------------------------------------- JSON Feed

_JSON_FEED_VERSIONS = {
    "https://jsonfeed.org/version/1": "json1",
    "https://jsonfeed.org/version/1.1": "json11",
}


def _looks_like_json(text: str) -> bool:
    return text.lstrip("\ufeff \t\r\n").startswith("{")


def _json_feed_result(text: str, source: str) -> dict[str, Any]:
    """A JSON Feed (https://jsonfeed.org/version/1.1) in the shape of feedparser's result."""
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ParseError(source, "parse", f"invalid JSON: {e}") from e
    if not isinstance(document, dict):
        return {"version": "", "entries": [], "feed": {}}
    version = _JSON_FEED_VERSIONS.get(str(document.get("version", "")).rstrip("/"))
    if version is None:
        return {"version": "", "entries": [], "feed": {}}
    items = document.get("items")
    return {
        "version": version,
        "feed": {
            "id": document.get("feed_url"),
            "title_detail": _json_text(document.get("title")),
            "link": document.get("home_page_url"),
        },
        "entries": [_json_item(i) for i in items if isinstance(i, dict)]
        if isinstance(items, list)
        else [],
    }


def _json_item(item: dict[str, Any]) -> dict[str, Any]:
    html_content, text_content = item.get("content_html"), item.get("content_text")
    content = (
        [{"type": "text/html", "value": html_content}]
        if isinstance(html_content, str)
        else [{"type": "text/plain", "value": text_content}]
        if isinstance(text_content, str)
        else None
    )
    authors = item.get("authors") or ([item["author"]] if item.get("author") else [])
    tags = item.get("tags")
    return {
        "id": None if item.get("id") is None else str(item["id"]),
        "link": item.get("url") or item.get("external_url"),
        "title_detail": _json_text(item.get("title")),
        "summary_detail": _json_text(item.get("summary")),
        "content": content,
        "published": item.get("date_published"),
        "published_parsed": _json_date(item.get("date_published")),
        "updated_parsed": _json_date(item.get("date_modified")),
        "authors": [a for a in authors if isinstance(a, dict)] if isinstance(authors, list) else [],
        "tags": [{"term": t} for t in tags if isinstance(t, str)] if isinstance(tags, list) else [],
    }


def _json_text(value: object) -> dict[str, str] | None:
    return {"type": "text/plain", "value": value} if isinstance(value, str) else None


def _json_date(value: object) -> time.struct_time | None:
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


def _not_a_feed_reason(result: Any) -> str:
    error = result.get("bozo_exception")
    return f"no feed found ({error})" if error else "no feed found"


def _usable_entries(result: Any, max_entries: int, warnings: list[str]) -> list[Any]:
    """feedparser's entries minus the unusable ones, capped; each cut adds a warning.

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
    if len(entries) > max_entries:
        warnings.append(f"kept the first {max_entries} of {len(entries)} entries")
    return entries[:max_entries]


# ---------------------------------------------------------------- feed and entries


def _feed_info(feed: Any, source: str, url: str, now: datetime) -> FeedInfo:
    link = _safe_link(feed.get("link"), url)
    return FeedInfo(
        id=_clean(feed.get("id"), MAX_URL_CHARS) or link or url,
        title=_plain_text(feed.get("title_detail")) or source,
        link=link,
        updated=_date(dict.get(feed, "updated_parsed"), now),
    )


def _feed_hint(feed: Any) -> timedelta | None:
    """The feed's own polling hint: RSS ``<ttl>`` minutes or ``sy:updatePeriod``/``Frequency``."""
    hints = []
    ttl = _positive_int(feed.get("ttl"))
    if ttl:
        hints.append(timedelta(minutes=ttl))
    period = _SY_PERIODS.get(str(feed.get("sy_updateperiod", "")).strip().lower())
    if period:
        hints.append(period / (_positive_int(feed.get("sy_updatefrequency")) or 1))
    return min(max(hints), MAX_FEED_HINT) if hints else None


def _positive_int(value: object) -> int | None:
    text = str(value or "").strip()
    return int(text) if text.isdigit() and 0 < int(text) < 10**6 else None


def _entries(
    raw: list[Any], feed_url: str, now: datetime, warnings: list[str]
) -> tuple[EntryData, ...]:
    # An id shared by several entries identifies none of them (reused GUIDs).
    id_counts = Counter(_clean(e.get("id"), MAX_HTML_CHARS) for e in raw)
    entries: dict[str, EntryData] = {}
    for item in raw:
        entry = _entry(item, feed_url, now, id_counts)
        if entry.key in entries:
            warnings.append(f"dropped a second entry with key {entry.key!r}")
            continue
        entries[entry.key] = entry
    return tuple(entries.values())


def _entry(item: Any, feed_url: str, now: datetime, id_counts: Counter[str]) -> EntryData:
    title = _plain_text(item.get("title_detail"))
    link = _safe_link(item.get("link"), feed_url)
    # The whole id decides identity; only the copy shown as ``id`` is shortened.
    own_id = _clean(item.get("id"), MAX_HTML_CHARS)
    raw_date = str(item.get("published") or dict.get(item, "updated") or "")
    fallback = "sha256:" + _sha256(title, raw_date)
    key = own_id if own_id and id_counts[own_id] == 1 else (link or fallback)
    if len(key) > MAX_KEY_CHARS:
        key = "sha256:" + _sha256(key)
    base = link or feed_url
    summary = _sanitised(item.get("summary_detail"), base)
    content = _sanitised(_main_content(item.get("content")), base) or summary
    return EntryData(
        id=own_id[:MAX_URL_CHARS] or link or fallback,
        key=key,
        title=title,
        link=link,
        published=_date(item.get("published_parsed"), now),
        # dict.get: FeedParserDict.get would fall back to published_parsed (and warn).
        updated=_date(dict.get(item, "updated_parsed"), now),
        authors=_names_of(item.get("authors")),
        categories=_categories(item.get("tags")),
        content=content,
        summary=summary,
        content_hash=_sha256(title, link or "", content),
    )


def _main_content(contents: object) -> Any:
    """The HTML content when the feed offers several representations, else the first."""
    if not isinstance(contents, list) or not contents:
        return None
    return next((c for c in contents if c.get("type") in _HTML_TYPES), contents[0])


def _names_of(authors: object) -> tuple[str, ...]:
    if not isinstance(authors, list):
        return ()
    names = (_clean(a.get("name") or a.get("email"), MAX_NAME_CHARS) for a in authors)
    return tuple(dict.fromkeys(n for n in names if n))


def _categories(tags: object) -> tuple[str, ...]:
    if not isinstance(tags, list):
        return ()
    terms = (_clean(t.get("term") or t.get("label"), MAX_NAME_CHARS) for t in tags)
    return tuple(dict.fromkeys(t for t in terms if t))[:MAX_CATEGORIES]


# ---------------------------------------------------------------- field cleaning


def _clean(value: object, limit: int) -> str:
    """Text without control characters or surplus white space, at most ``limit`` chars."""
    if not isinstance(value, str):
        return ""
    return _WHITESPACE.sub(" ", _without_controls(value)).strip()[:limit]


def _without_controls(text: str) -> str:
    return _CONTROL.sub("", text) if _CONTROL_CHAR.search(text) else text


def _plain_text(detail: Any) -> str:
    """A text construct as plain text: markup stripped, entities decoded."""
    if not detail:
        return ""
    value = str(detail.get("value", ""))[:MAX_HTML_CHARS]
    if detail.get("type") in _HTML_TYPES:
        value = html.unescape(nh3.clean(_BLOCK_TAG.sub(r" \g<0>", value), tags=set()))
    return _clean(value, MAX_TITLE_CHARS)


def _sanitised(detail: Any, base: str) -> str:
    """A text construct as safe HTML, relative URLs resolved against its base."""
    if not detail or not detail.get("value"):
        return ""
    value = _without_controls(str(detail["value"])[:MAX_HTML_CHARS])
    if detail.get("type") not in _HTML_TYPES:
        return html.escape(value).strip()
    return _clean_html(value, detail.get("base") or base)


# feedparser gives an Atom entry without <summary> its content as summary too: the cache
# saves sanitising the same text twice in a row.
@lru_cache(maxsize=4)
def _clean_html(value: str, base: str) -> str:
    resolve = partial(_resolve_url_attribute, base)
    return nh3.clean(value, attribute_filter=resolve, url_schemes=set(_LINK_SCHEMES)).strip()


def _resolve_url_attribute(base: str, tag: str, attribute: str, value: str) -> str | None:
    """nh3 attribute filter: absolute http(s)/mailto URLs only; must never raise."""
    if attribute not in _URL_ATTRIBUTES:
        return value
    return _safe_link(value, base)


def _safe_link(value: object, base: str) -> str | None:
    """``value`` resolved against ``base`` if it is an http, https or mailto URL."""
    if not isinstance(value, str) or not value.strip():
        return None
    value = _without_controls(value.strip())
    if value.startswith(("https://", "http://")) and len(value) <= MAX_URL_CHARS:
        return value  # already absolute: the common case, and urljoin is slow
    try:
        url = urljoin(base, value)
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        return None
    if scheme not in _LINK_SCHEMES or len(url) > MAX_URL_CHARS:
        return None
    return url


def _date(parsed: object, now: datetime) -> datetime | None:
    """feedparser's UTC struct_time as an aware datetime; implausible dates become ``now``."""
    if not isinstance(parsed, time.struct_time):
        return None
    try:
        when = datetime(*parsed[:6], tzinfo=UTC)
    except (ValueError, OverflowError):
        return now
    return when if EARLIEST_DATE <= when <= now + FUTURE_TOLERANCE else now


def _sha256(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).hexdigest()
