"""Untrusted feed text made safe: plain text, sanitised HTML, absolute http(s)/mailto links."""

from __future__ import annotations

import html
import re
from functools import lru_cache, partial
from urllib.parse import urljoin, urlsplit

import nh3

from feedsvc.parse.decode import without_controls
from feedsvc.parse.record import TextDetail

#: Caps on what one entry may carry into the database (characters).
MAX_TITLE_CHARS = 1_000
MAX_HTML_CHARS = 500_000
MAX_URL_CHARS = 2_048

_LINK_SCHEMES = frozenset({"http", "https", "mailto"})
_URL_ATTRIBUTES = frozenset({"href", "src", "cite", "longdesc"})
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml", "html", "xhtml"})
_WHITESPACE = re.compile(r"\s+")
_BLOCK_TAG = re.compile(r"<(?:br|p|div|li|h[1-6]|tr|td|blockquote)\b", re.IGNORECASE)


def clean_text(value: str, limit: int) -> str:
    """Text without control characters or surplus white space, at most ``limit`` chars."""
    return _WHITESPACE.sub(" ", without_controls(value)).strip()[:limit]


def plain_text(detail: TextDetail | None) -> str:
    """A text construct as plain text: markup stripped, entities decoded."""
    if detail is None:
        return ""
    value = detail.value[:MAX_HTML_CHARS]
    if detail.type in HTML_TYPES:
        value = html.unescape(nh3.clean(_BLOCK_TAG.sub(r" \g<0>", value), tags=set()))
    return clean_text(value, MAX_TITLE_CHARS)


def sanitised_html(detail: TextDetail | None, base: str) -> str:
    """A text construct as safe HTML, relative URLs resolved against its base."""
    if detail is None or not detail.value:
        return ""
    value = without_controls(detail.value[:MAX_HTML_CHARS])
    if detail.type not in HTML_TYPES:
        return html.escape(value).strip()
    return _clean_html(value, detail.base or base)


def safe_link(value: str, base: str) -> str | None:
    """``value`` resolved against ``base`` if it is an http, https or mailto URL."""
    if not value.strip():
        return None
    value = without_controls(value.strip())
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
    return safe_link(value, base)
