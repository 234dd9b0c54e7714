"""Fast path for well-formed Atom 1.0 and RSS 2.0/0.9x: lxml → ``RawFeed``, or None.

feedparser spends most of its time in its per-element SAX machinery. For the documents
almost every source serves, this module walks an lxml tree instead and builds the record
feedparser's strict parser would lead to (the fields ``parse.entries`` reads), by
replaying feedparser's rules and calling its own helpers (date parsing, URI joining,
author splitting, tags). Anything it cannot replay exactly — an unknown element or
namespace, a repeated single-valued element, inline XHTML, base64 content, a DOCTYPE,
RSS 1.0 — makes it return ``None`` and the caller runs feedparser: a different answer is
never an option (``tests/parse/test_parse_fast.py`` compares both paths).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from feedparser.datetimes import _parse_date
from feedparser.mixin import _FeedParserMixin
from lxml import etree

from feedsvc.parse import elements, handlers
from feedsvc.parse.elements import ATOM, PREFIXES, Unsure
from feedsvc.parse.handlers import PERSON_PARTS, Fields
from feedsvc.parse.record import RawEntry, RawFeed, TextDetail

_RSS_VERSIONS = {"0.91": "rss091u", "0.92": "rss092", "0.93": "rss093", "0.94": "rss094"}
_NAMESPACE_DECL = re.compile(rb"xmlns:([A-Za-z0-9_.-]+)\s*=\s*[\"']([^\"']*)[\"']")
# These namespace URIs, declared anywhere, change feedparser's idea of the version.
_VERSION_NAMESPACES = frozenset(
    {"http://purl.org/rss/1.0/", "http://my.netscape.com/rdf/simple/0.9/"}
)
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


def read_well_formed(document: bytes, base_url: str) -> RawFeed | None:
    """The record feedparser's result for ``document`` leads to, or None when only it can tell.

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
        return _feed(root, base_url)
    except Unsure:
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
        if name in PREFIXES.values() and PREFIXES.get(address) != name:
            return False
    return True


def _feed(root: Any, url: str) -> RawFeed:
    base = elements.base(root, url)
    if root.tag == f"{{{ATOM}}}feed":
        elements.check_attributes(root, {"version"})
        reader, channel = _Reader("atom10"), root
    elif root.tag == "rss":
        elements.check_attributes(root, {"version"})
        reader = _Reader(_rss_version(root.get("version", "")))
        children = elements.child_elements(root)
        if len(children) != 1 or children[0].tag != "channel":
            raise Unsure
        channel = children[0]
        elements.check_attributes(channel, set())
        base = elements.base(channel, base)
    else:
        raise Unsure
    return reader.container(channel, base)


def _rss_version(attribute: str) -> str:
    if attribute in _RSS_VERSIONS:
        return _RSS_VERSIONS[attribute]
    return "rss20" if attribute.startswith("2.") else "rss"


class _Reader:
    """Replays feedparser's handlers for one document's version."""

    def __init__(self, version: str) -> None:
        self.version = version

    def container(self, channel: Any, base: str) -> RawFeed:
        feed = Fields()
        entries = []
        for name, child in _named_children(channel):
            if name in _ENTRIES:
                entries.append(self.entry(child, base))
            else:
                self.feed_field(feed, name, child, elements.base(child, base))
        return feed.feed(self.version, tuple(entries))

    def entry(self, item: Any, parent_base: str) -> RawEntry:
        elements.check_attributes(item, set())
        base = elements.base(item, parent_base)
        entry = Fields()
        for name, child in _named_children(item):
            self.entry_field(entry, name, child, elements.base(child, base))
        return entry.entry()

    def feed_field(self, feed: Fields, name: str, element: Any, base: str) -> None:
        if name in _IGNORED_IN_FEED:
            _check_ignorable(element, name)
        elif name in _HINTS:
            elements.check_attributes(element, set())
            if feed.hints is None:
                feed.hints = {}
            feed.hints[name] = elements.text(element)
        else:
            self.common_field(feed, name, element, base, in_entry=False)

    def entry_field(self, entry: Fields, name: str, element: Any, base: str) -> None:
        if name in _IGNORED_IN_ENTRY:
            _check_ignorable(element, name)
        elif name in ("summary", "description"):
            default = "text/plain" if name == "summary" else "text/html"
            entry.summary = self.construct(element, base, default)
        elif name in ("content", "content_encoded"):
            default = "text/plain" if name == "content" else "text/html"
            entry.content += (self.construct(element, base, default),)
        elif name in ("author", "dc_creator"):
            handlers.author(entry.authors_and_tags(), element, base)
        elif name == "category":
            handlers.category(entry.authors_and_tags(), element)
        else:
            self.common_field(entry, name, element, base, in_entry=True)

    def common_field(
        self, fields: Fields, name: str, element: Any, base: str, *, in_entry: bool
    ) -> None:
        if name == "title":
            fields.title = self.construct(element, base, "text/plain")
        elif name == "link":
            handlers.link(fields, element, base, in_entry=in_entry)
        elif name in ("id", "guid"):
            handlers.identifier(fields, element, base)
        elif name in _DATES:
            text = elements.text(element)
            if _DATES[name] == "published":
                fields.published_text, fields.published = text, _parse_date(text)
            else:
                fields.updated_text, fields.updated = text, _parse_date(text)
        else:
            raise Unsure

    def construct(self, element: Any, base: str, default_type: str) -> TextDetail:
        """A text construct's detail (type, base, value) as feedparser's ``pop`` leaves it."""
        attributes = elements.attributes(element)
        if "src" in attributes or attributes.get("mode") == "base64":
            raise Unsure
        kind = _FeedParserMixin.map_content_type(attributes.get("type", default_type))
        if not kind.startswith("text/"):  # XHTML inline markup, base64 payloads
            raise Unsure
        value = elements.text(element)
        # RSS leaves consumers to guess whether "plain text" is HTML; feedparser guesses.
        if (
            not self.version.startswith("atom")
            and kind == "text/plain"
            and _FeedParserMixin.looks_like_html(value)
        ):
            kind = "text/html"
        return TextDetail(value=value, type=kind, base=base)


def _named_children(element: Any) -> list[tuple[str, Any]]:
    """Child elements with their feedparser names; refused if a single value repeats."""
    children = [(elements.name(child), child) for child in elements.child_elements(element)]
    counts = Counter(_SINGLE_VALUED.get(name) for name, _ in children)
    counts.pop(None, None)
    if counts and max(counts.values()) > 1:
        raise Unsure
    return children


def _check_ignorable(element: Any, name: str) -> None:
    """An element skipped here must not hold markup that feedparser would read."""
    if name in ("author", "managingeditor"):
        for part in elements.child_elements(element):
            if elements.name(part) not in PERSON_PARTS or len(part):
                raise Unsure
    elif len(element):
        raise Unsure
