"""Fast path for well-formed Atom 1.0 and RSS 2.0/0.9x: lxml → feedparser's result, or None.

feedparser spends most of its time in its per-element SAX machinery. For the documents
almost every source serves, this module walks an lxml tree instead and builds the
dictionary feedparser's strict parser would build (the keys ``parse_feed`` reads), by
replaying feedparser's rules and calling its own helpers (date parsing, URI joining,
author splitting, tags). Anything it cannot replay exactly — an unknown element or
namespace, a repeated single-valued element, inline XHTML, base64 content, a DOCTYPE,
RSS 1.0 — makes it return ``None`` and the caller runs feedparser: a different answer is
never an option (``tests/fetch/test_parse_fast.py`` compares both paths).
"""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from typing import Any

import feedparser.mixin
from feedparser.datetimes import _parse_date
from feedparser.html import _cp1252
from feedparser.mixin import _FeedParserMixin
from feedparser.urls import _urljoin
from feedparser.util import FeedParserDict
from lxml import etree

_ATOM = "http://www.w3.org/2005/Atom"
_XML_BASE = "{http://www.w3.org/XML/1998/namespace}base"
_PREFIXES: dict[str, str] = {
    uri.lower(): prefix for uri, prefix in _FeedParserMixin.namespaces.items()
}
#: Namespaced elements this path knows, by feedparser's prefix for their namespace.
_KNOWN_PREFIXES = frozenset({"dc", "content", "sy"})
_RSS_VERSIONS = {"0.91": "rss091u", "0.92": "rss092", "0.93": "rss093", "0.94": "rss094"}
_NAMESPACE_DECL = re.compile(rb"xmlns:([A-Za-z0-9_.-]+)\s*=\s*[\"']([^\"']*)[\"']")
# These namespace URIs, declared anywhere, change feedparser's idea of the version.
_VERSION_NAMESPACES = frozenset(
    {"http://purl.org/rss/1.0/", "http://my.netscape.com/rdf/simple/0.9/"}
)
_QUERY_ENTITY = re.compile("&([A-Za-z0-9_]+);")
_C1 = re.compile("[\x80-\x9f]")
_CONTAINER_ATTRIBUTES = frozenset({"xml:base", "xml:lang"})
_ENTRIES = frozenset({"entry", "item"})
#: Date elements, by the key feedparser stores them under.
_DATES = {
    "published": "published",
    "pubdate": "published",
    "updated": "updated",
    "modified": "updated",
    "lastbuilddate": "updated",
    "dc_date": "updated",
}
#: Elements feedparser stores under their own name (it has no handler for them).
_HINTS = frozenset({"ttl", "sy_updateperiod", "sy_updatefrequency"})
#: Elements whose repetition feedparser resolves by depth and order rules: refused.
_SINGLE_VALUED = {
    **_DATES,
    **{hint: hint for hint in _HINTS},
    "title": "title",
    "id": "id",
    "guid": "id",
    "summary": "summary",
    "description": "summary",
}
# Elements feedparser reads but whose values parse_feed never uses: checked for shape
# (no child elements but an author's parts) and otherwise skipped.
_IGNORED_IN_FEED = frozenset(
    {
        "author",
        "category",
        "copyright",
        "description",
        "docs",
        "generator",
        "icon",
        "language",
        "logo",
        "managingeditor",
        "published",
        "pubdate",
        "rights",
        "subtitle",
        "sy_updatebase",
        "webmaster",
    }
)
_IGNORED_IN_ENTRY = frozenset({"comments", "enclosure"})
_PERSON_PARTS = frozenset({"name", "email", "uri"})


class _Unsure(Exception):
    """The document uses something this path does not replay exactly."""


def parse_well_formed(document: bytes, base_url: str) -> dict[str, Any] | None:
    """feedparser's result for ``document``, or None when only feedparser can tell.

    Args:
        document: The prepared document: UTF-8, no XML declaration, no control
            characters, no entity declarations (``parse_feed`` checked).
        base_url: Where it came from; relative URIs resolve against it.
    """
    if not base_url.startswith(("http://", "https://")) or not _namespaces_agree(document):
        return None
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
    )
    try:
        root = etree.fromstring(document, parser)
    except (etree.LxmlError, ValueError):
        return None
    if root.getroottree().docinfo.doctype:
        return None
    try:
        return _result(root, base_url)
    except _Unsure:
        return None


def _namespaces_agree(document: bytes) -> bool:
    """Whether every declared prefix means for feedparser what it means for lxml.

    feedparser names elements by prefix: a document binding ``dc`` to another namespace
    (or binding the RSS 1.0 namespace at all) reads differently there.
    """
    for prefix, uri in _NAMESPACE_DECL.findall(document):
        name, address = prefix.decode("ascii").lower(), uri.decode("utf-8", "replace").lower()
        if address in _VERSION_NAMESPACES:
            return False
        if name in _PREFIXES.values() and _PREFIXES.get(address) != name:
            return False
    return True


def _result(root: Any, url: str) -> dict[str, Any]:
    base = _base(root, url)
    if root.tag == f"{{{_ATOM}}}feed":
        _check_attributes(root, {"version"})
        reader, channel = _Reader("atom10"), root
    elif root.tag == "rss":
        _check_attributes(root, {"version"})
        reader = _Reader(_rss_version(root.get("version", "")))
        children = _elements(root)
        if len(children) != 1 or children[0].tag != "channel":
            raise _Unsure
        channel = children[0]
        _check_attributes(channel, set())
        base = _base(channel, base)
    else:
        raise _Unsure
    return reader.container(channel, base)


def _rss_version(attribute: str) -> str:
    if attribute in _RSS_VERSIONS:
        return _RSS_VERSIONS[attribute]
    return "rss20" if attribute.startswith("2.") else "rss"


class _Reader:
    """Replays feedparser's handlers for one document's version."""

    def __init__(self, version: str) -> None:
        self.version = version

    def container(self, channel: Any, base: str) -> dict[str, Any]:
        feed: dict[str, Any] = {}
        entries = []
        for name, child in _named_children(channel):
            if name in _ENTRIES:
                entries.append(self.entry(child, base))
            else:
                self.feed_field(feed, name, child, _base(child, base))
        return {"version": self.version, "feed": feed, "entries": entries, "bozo": False}

    def entry(self, item: Any, parent_base: str) -> dict[str, Any]:
        _check_attributes(item, set())
        base = _base(item, parent_base)
        entry: dict[str, Any] = {}
        for name, child in _named_children(item):
            self.entry_field(entry, name, child, _base(child, base))
        return entry

    def feed_field(self, feed: dict[str, Any], name: str, element: Any, base: str) -> None:
        if name in _IGNORED_IN_FEED:
            _check_ignorable(element, name)
        elif name in _HINTS:
            _check_attributes(element, set())
            feed[name] = _text(element)
        else:
            self.common_field(feed, name, element, base, in_entry=False)

    def entry_field(self, entry: dict[str, Any], name: str, element: Any, base: str) -> None:
        if name in _IGNORED_IN_ENTRY:
            _check_ignorable(element, name)
        elif name in ("summary", "description"):
            default = "text/plain" if name == "summary" else "text/html"
            detail = self.construct(element, base, default)
            entry["summary"], entry["summary_detail"] = detail["value"], detail
        elif name in ("content", "content_encoded"):
            default = "text/plain" if name == "content" else "text/html"
            detail = self.construct(element, base, default)
            entry.setdefault("content", []).append(detail)
            entry.setdefault("summary", detail["value"])
        elif name in ("author", "dc_creator"):
            _author(entry, element, base)
        elif name == "category":
            _category(entry, element)
        else:
            self.common_field(entry, name, element, base, in_entry=True)

    def common_field(
        self, context: dict[str, Any], name: str, element: Any, base: str, *, in_entry: bool
    ) -> None:
        if name == "title":
            detail = self.construct(element, base, "text/plain")
            context["title"], context["title_detail"] = detail["value"], detail
        elif name == "link":
            _link(context, element, base, in_entry=in_entry)
        elif name in ("id", "guid"):
            _identifier(context, element, base)
        elif name in _DATES:
            key = _DATES[name]
            context[key] = _text(element)
            context[key + "_parsed"] = _parse_date(context[key])
        else:
            raise _Unsure

    def construct(self, element: Any, base: str, default_type: str) -> dict[str, Any]:
        """A text construct's detail (type, base, value) as feedparser's ``pop`` leaves it."""
        attributes = _attributes(element)
        if "src" in attributes or attributes.get("mode") == "base64":
            raise _Unsure
        kind = _FeedParserMixin.map_content_type(attributes.get("type", default_type))
        if not kind.startswith("text/"):  # XHTML inline markup, base64 payloads
            raise _Unsure
        value = _text(element)
        # RSS leaves consumers to guess whether "plain text" is HTML; feedparser guesses.
        if (
            not self.version.startswith("atom")
            and kind == "text/plain"
            and _FeedParserMixin.looks_like_html(value)
        ):
            kind = "text/html"
        return {"type": kind, "base": base, "value": value}


def _link(context: dict[str, Any], element: Any, base: str, *, in_entry: bool) -> None:
    """``_start_link``/``_end_link``: an alternate HTML href, else the element's text."""
    attributes = _attributes(element)
    if "url" in attributes or "uri" in attributes:
        raise _Unsure
    if "href" in attributes:
        rel = attributes.get("rel", "alternate")
        default_type = "application/atom+xml" if rel == "self" else "text/html"
        kind = _FeedParserMixin.map_content_type(attributes.get("type", default_type))
        if rel == "alternate" and kind in _FeedParserMixin.html_types:
            context["link"] = _urljoin(base, attributes["href"])
        return
    value = _text(element, resolve_against=base)
    # feedparser's repair of "?a=1&b;=2" query strings, which it applies to text links.
    if in_entry:
        value = value.replace("&amp;", "&")
    context["link"] = _QUERY_ENTITY.sub(r"&\g<1>", value)


def _identifier(context: dict[str, Any], element: Any, base: str) -> None:
    """``_start_guid``/``_end_guid``: a permalink id is resolved and doubles as the link."""
    is_link = _attributes(element).get("ispermalink", "true") == "true"
    value = _text(element, resolve_against=base if is_link else None)
    context["id"] = value
    context.setdefault("guidislink", is_link and "link" not in context)
    if is_link:
        context.setdefault("link", value)


def _author(entry: dict[str, Any], element: Any, base: str) -> None:
    """``_start_author``/``_end_author``: an Atom person or an RSS "email (name)" string."""
    context = _Context(entry)
    entry.setdefault("authors", []).append(FeedParserDict())
    parts = _elements(element)
    for part in parts:
        name = _name(part)
        if name not in _PERSON_PARTS:
            raise _Unsure
        if name == "uri":
            context._save_author("href", _text(part, resolve_against=_base(part, base)))
        else:
            context._save_author(name, _untransformed_text(part))
    if len(element):
        if _direct_text(element).strip():
            raise _Unsure
        entry["author"] = ""
    else:
        entry["author"] = _text(element)
    context._sync_author_detail()


def _category(entry: dict[str, Any], element: Any) -> None:
    """``_start_category``/``_end_category``: attributes first, then the element's text."""
    context = _Context(entry)
    attributes = _attributes(element)
    scheme = attributes.get("scheme", attributes.get("domain"))
    context._add_tag(attributes.get("term"), scheme, attributes.get("label"))
    value = _text(element)
    if not value:
        return
    tags = entry["tags"]
    if tags and not tags[-1]["term"]:
        tags[-1]["term"] = value
    else:
        context._add_tag(value, None, None)


class _Context:
    """Just enough of feedparser's parser for its author and tag helpers to run on a dict."""

    _save_author = _FeedParserMixin._save_author
    _sync_author_detail = _FeedParserMixin._sync_author_detail
    _add_tag = _FeedParserMixin._add_tag

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def _get_context(self) -> dict[str, Any]:
        return self.values


# ---------------------------------------------------------------- elements


def _text(element: Any, resolve_against: str | None = None) -> str:
    """An element's text as feedparser's ``pop`` returns it for a text-bearing element."""
    output = _untransformed_text(element)
    if resolve_against is not None and output:
        output = _urljoin(resolve_against, output)
    # feedparser repairs UTF-8 that was decoded as Latin-1, then maps C1 code points to
    # their windows-1252 characters.
    with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):
        output = output.encode("iso-8859-1").decode("utf-8")
    # Only C1 code points (from character references) are mapped: skip the scan else.
    return output.translate(_cp1252) if _C1.search(output) else output


def _untransformed_text(element: Any) -> str:
    """The stripped text of an element without children (child elements mean markup)."""
    if len(element):
        raise _Unsure
    return str(element.text or "").strip()


def _direct_text(element: Any) -> str:
    return str(element.text or "") + "".join(str(child.tail or "") for child in element)


def _name(element: Any) -> str:
    """The name feedparser dispatches on: lower-case, prefixed for known namespaces."""
    tag = element.tag
    if tag[0] != "{":
        return str(tag).lower()
    uri, _, local = tag[1:].partition("}")
    if uri == _ATOM:
        return str(local).lower()
    prefix = _PREFIXES.get(uri.lower())
    if prefix not in _KNOWN_PREFIXES:
        raise _Unsure
    return f"{prefix}_{local.lower()}"


def _base(element: Any, parent: str) -> str:
    """The element's base URI, computed as feedparser's ``unknown_starttag`` does."""
    value = element.get(_XML_BASE)
    if value is None:
        value = element.get("base")
    # Through the module attribute: feedparser.parse memoises that function.
    return feedparser.mixin.make_safe_absolute_uri(parent, value or parent) or parent


def _attributes(element: Any) -> dict[str, str]:
    """Attributes keyed as feedparser's strict parser keys them (``rel``/``type`` lowered)."""
    attributes = {}
    for key, value in element.attrib.items():
        if key[0] == "{":
            uri, _, local = key[1:].partition("}")
            prefix = _PREFIXES.get(uri.lower(), "")
            key = f"{prefix}:{local}" if prefix else local
        key = key.lower()
        attributes[key] = value.lower() if key in ("rel", "type") else value
    return attributes


def _elements(element: Any) -> list[Any]:
    """Child elements, without comments and processing instructions."""
    return [child for child in element if isinstance(child.tag, str)]


def _check_attributes(element: Any, allowed: set[str]) -> None:
    if element.attrib and not set(_attributes(element)) <= _CONTAINER_ATTRIBUTES | allowed:
        raise _Unsure


def _named_children(element: Any) -> list[tuple[str, Any]]:
    """Child elements with their feedparser names; refused if a single value repeats."""
    children = [(_name(child), child) for child in _elements(element)]
    counts = Counter(_SINGLE_VALUED.get(name) for name, _ in children)
    counts.pop(None, None)
    if counts and max(counts.values()) > 1:
        raise _Unsure
    return children


def _check_ignorable(element: Any, name: str) -> None:
    """An element skipped here must not hold markup that feedparser would read."""
    if name in ("author", "managingeditor"):
        for part in _elements(element):
            if _name(part) not in _PERSON_PARTS or len(part):
                raise _Unsure
    elif len(element):
        raise _Unsure
