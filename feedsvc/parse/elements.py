"""lxml elements as feedparser sees them: names, attributes, base URIs and text.

Helpers of the fast path (``parse.well_formed``); each raises ``Unsure`` where
feedparser's answer would depend on something they do not replay.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

import feedparser.mixin
from feedparser.html import _cp1252
from feedparser.mixin import _FeedParserMixin
from feedparser.urls import _urljoin

ATOM = "http://www.w3.org/2005/Atom"
_XML_BASE = "{http://www.w3.org/XML/1998/namespace}base"
#: feedparser's prefix for each namespace URI it knows (lower-cased).
PREFIXES: dict[str, str] = {
    uri.lower(): prefix for uri, prefix in _FeedParserMixin.namespaces.items()
}
#: Namespaced elements the fast path knows, by feedparser's prefix for their namespace.
_KNOWN_PREFIXES = frozenset({"dc", "content", "sy"})
_C1 = re.compile("[\x80-\x9f]")
_CONTAINER_ATTRIBUTES = frozenset({"xml:base", "xml:lang"})


class Unsure(Exception):
    """The document uses something the fast path does not replay exactly."""


def text(element: Any, resolve_against: str | None = None) -> str:
    """An element's text as feedparser's ``pop`` returns it for a text-bearing element."""
    output = untransformed_text(element)
    if resolve_against is not None and output:
        output = _urljoin(resolve_against, output)
    # feedparser repairs UTF-8 that was decoded as Latin-1, then maps C1 code points to
    # their windows-1252 characters.
    with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):
        output = output.encode("iso-8859-1").decode("utf-8")
    # Only C1 code points (from character references) are mapped: skip the scan else.
    return output.translate(_cp1252) if _C1.search(output) else output


def untransformed_text(element: Any) -> str:
    """The stripped text of an element without children (child elements mean markup)."""
    if len(element):
        raise Unsure
    return str(element.text or "").strip()


def direct_text(element: Any) -> str:
    return str(element.text or "") + "".join(str(child.tail or "") for child in element)


def name(element: Any) -> str:
    """The name feedparser dispatches on: lower-case, prefixed for known namespaces."""
    tag = element.tag
    if tag[0] != "{":
        return str(tag).lower()
    uri, _, local = tag[1:].partition("}")
    if uri == ATOM:
        return str(local).lower()
    prefix = PREFIXES.get(uri.lower())
    if prefix not in _KNOWN_PREFIXES:
        raise Unsure
    return f"{prefix}_{local.lower()}"


def base(element: Any, parent: str) -> str:
    """The element's base URI, computed as feedparser's ``unknown_starttag`` does."""
    value = element.get(_XML_BASE)
    if value is None:
        value = element.get("base")
    # Through the module attribute: parse.feedparser_path memoises that function.
    return feedparser.mixin.make_safe_absolute_uri(parent, value or parent) or parent


def attributes(element: Any) -> dict[str, str]:
    """Attributes keyed as feedparser's strict parser keys them (``rel``/``type`` lowered)."""
    keyed = {}
    for key, value in element.attrib.items():
        if key[0] == "{":
            uri, _, local = key[1:].partition("}")
            prefix = PREFIXES.get(uri.lower(), "")
            key = f"{prefix}:{local}" if prefix else local
        key = key.lower()
        keyed[key] = value.lower() if key in ("rel", "type") else value
    return keyed


def child_elements(element: Any) -> list[Any]:
    """Child elements, without comments and processing instructions."""
    return [child for child in element if isinstance(child.tag, str)]


def check_attributes(element: Any, allowed: set[str]) -> None:
    if element.attrib and not set(attributes(element)) <= _CONTAINER_ATTRIBUTES | allowed:
        raise Unsure
