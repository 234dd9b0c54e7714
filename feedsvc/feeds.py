"""A subscription's matches as Atom (RFC 4287), RSS 2.0 and JSON Feed 1.1; OPML of feeds."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote, urlsplit
from xml.sax.saxutils import quoteattr

import nh3
from feedgen.entry import FeedEntry
from feedgen.ext.base import BaseEntryExtension
from feedgen.feed import FeedGenerator
from feedgen.util import xml_elem

from feedsvc import __version__
from feedsvc.config import Config
from feedsvc.model import FeedInfo, MatchedEntry

FeedKind = Literal["atom", "rss", "json"]

#: Media type served for each kind (RFC 4287 §7, RSS Advisory Board, JSON Feed 1.1).
MEDIA_TYPES: dict[FeedKind, str] = {
    "atom": "application/atom+xml; charset=utf-8",
    "rss": "application/rss+xml; charset=utf-8",
    "json": "application/feed+json; charset=utf-8",
}

# Characters XML 1.0 forbids (C0 controls except TAB/LF/CR, surrogates, U+FFFE/FFFF);
# lxml refuses to serialise them, and one bad title must not break a whole feed.
_NOT_XML_CHAR = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_SAFE_SCHEMES = frozenset({"http", "https"})
# A fixed namespace so the same base URL and name give the same feed id on every node.
_FEED_ID_NAMESPACE = uuid.UUID("6c2f3f0e-5b7a-4f4e-9a35-1d7f3c0a9e21")


@dataclass(frozen=True)
class FeedMeta:
    """What a republished feed says about itself."""

    #: The subscription's name; the feed lives at ``{base_url}/feeds/{name}.atom``.
    name: str
    title: str
    subtitle: str | None
    #: ``config.http.base_url``, without a trailing slash.
    base_url: str
    #: A private feed's token: added to its own URLs (``?token=…``).
    token: str | None = None
    #: A WebSub hub advertised with ``rel="hub"`` (public feeds only).
    hub: str | None = None

    @property
    def feed_id(self) -> str:
        """Stable for the subscription's life: derived from the base URL and name only."""
        return f"urn:uuid:{uuid.uuid5(_FEED_ID_NAMESPACE, f'{self.base_url}/feeds/{self.name}')}"


def feed_meta(config: Config, name: str) -> FeedMeta:
    """The ``FeedMeta`` of a configured subscription: its title, its query as subtitle.

    Raises:
        KeyError: when no subscription has this name.
    """
    sub = config.subscription(name)
    if sub is None:
        raise KeyError(name)
    token = sub.token.get_secret_value() if sub.token else None
    return FeedMeta(sub.name, sub.display_title, sub.query_text, config.http.base_url, token)


def feed_url(meta: FeedMeta, kind: FeedKind = "atom") -> str:
    """The absolute URL of one variant of the feed (with ``?token=`` when private)."""
    url = f"{meta.base_url}/feeds/{quote(meta.name)}.{kind}"
    return f"{url}?token={quote(meta.token, safe='')}" if meta.token else url


def listing_url(meta: FeedMeta) -> str:
    """The HTML page listing the public feeds (the feeds' ``rel="alternate"``)."""
    return f"{meta.base_url}/feeds/"


def build_feed(
    meta: FeedMeta, matches: Sequence[MatchedEntry], *, kind: FeedKind, now: datetime
) -> bytes:
    """Render the matches, newest first as given, as one feed document.

    The bytes depend only on ``meta`` and ``matches`` (``now`` is used only as the
    ``updated`` of an empty feed), so every node renders the same bytes and the same
    ETag for the same matches. Entry HTML is sanitised again here, links other than
    http(s) are dropped.
    """
    updated = feed_updated(matches) or now
    if kind == "json":
        return _json_feed(meta, matches)
    generator = _feed_generator(meta, updated)
    for match in matches:
        _add_entry(generator, match, rss=kind == "rss")
    if kind == "rss":
        return bytes(generator.rss_str(pretty=False, encoding="UTF-8"))
    return bytes(generator.atom_str(pretty=False, encoding="UTF-8"))


def feed_updated(matches: Sequence[MatchedEntry]) -> datetime | None:
    """The feed's ``updated``: the newest match, entry change or entry update time."""
    times = [t for m in matches for t in (m.matched_at, m.entry.changed_at, entry_updated(m))]
    return max(times, default=None)


def entry_updated(match: MatchedEntry) -> datetime:
    """An entry's ``updated`` in the republished feed.

    The source's own ``updated`` when it gives one; otherwise the time feedsvc saw the
    content change (so a reader notices an edit under the same id), else ``published``
    or first sight. Never earlier than ``published``.
    """
    stored, data = match.entry, match.entry.data
    changed = stored.changed_at if stored.changed_at > stored.first_seen else None
    updated = data.updated or changed or data.published or stored.first_seen
    return max(updated, data.published) if data.published else updated


def build_opml(metas: Sequence[FeedMeta], *, title: str) -> bytes:
    """An OPML 2.0 subscription list of the feeds' Atom variants, in the order given."""
    outlines = "".join(
        '<outline type="rss" version="ATOM" text={t} title={t} xmlUrl={x} htmlUrl={h}/>'.format(
            t=quoteattr(_xml_text(meta.title)),
            x=quoteattr(feed_url(meta)),
            h=quoteattr(listing_url(meta)),
        )
        for meta in metas
    )
    document = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<opml version="2.0"><head>'
        f"<title>{_escape_text(title)}</title></head><body>{outlines}</body></opml>\n"
    )
    return document.encode("utf-8")


# -- Atom and RSS through feedgen ------------------------------------------------


class _AtomSourceExtension(BaseEntryExtension):  # type: ignore[misc]
    """Adds ``atom:source`` with id, title, link and updated (feedgen writes only two)."""

    feed: FeedInfo | None = None

    def extend_atom(self, entry: Any) -> Any:
        # Names without namespace, like feedgen's own: the root's xmlns gives them Atom's.
        if self.feed is None:
            return entry
        source = xml_elem("source", entry)
        xml_elem("id", source).text = _xml_text(self.feed.id)
        xml_elem("title", source).text = _xml_text(self.feed.title)
        if link := _safe_url(self.feed.link):
            xml_elem("link", source, rel="alternate", href=link)
        if self.feed.updated is not None:
            xml_elem("updated", source).text = _iso(self.feed.updated)
        return entry


def _feed_generator(meta: FeedMeta, updated: datetime) -> FeedGenerator:
    generator = FeedGenerator()
    generator.id(meta.feed_id)
    generator.title(_xml_text(meta.title))
    # RSS requires a channel description; the title stands in when there is no subtitle.
    generator.subtitle(_xml_text(meta.subtitle or meta.title))
    generator.link(href=feed_url(meta), rel="self", type="application/atom+xml")
    if meta.hub:
        generator.link(href=meta.hub, rel="hub")
    # Last: feedgen makes the last link RSS's <link>.
    generator.link(href=listing_url(meta), rel="alternate", type="text/html")
    generator.updated(updated)  # also RSS lastBuildDate, which would default to now
    generator.generator("feedsvc", version=__version__)
    return generator


def _add_entry(generator: FeedGenerator, match: MatchedEntry, *, rss: bool) -> None:
    stored, data = match.entry, match.entry.data
    entry: FeedEntry = generator.add_entry(order="append")
    entry.id(_xml_text(data.id))
    entry.title(_xml_text(data.title) or "(untitled)")
    entry.updated(entry_updated(match))
    if data.published is not None:
        entry.published(data.published)
    link = _safe_url(data.link)
    if link:
        entry.link(href=link, rel="alternate", type="text/html")
    # An Atom entry without an alternate link needs content; an empty one is valid.
    entry.content(_clean_html(data.content or data.summary), type="html")
    for category in data.categories:
        if _xml_text(category).strip():
            entry.category(term=_xml_text(category))
    _add_authors(entry, data.authors, rss=rss)
    _add_source(entry, stored.feed, rss=rss)


def _add_authors(entry: FeedEntry, authors: Sequence[str], *, rss: bool) -> None:
    names = [_xml_text(a) for a in authors if _xml_text(a).strip()]
    if not names:
        return
    if rss:
        # RSS <author> must be an e-mail address; Dublin Core carries plain names.
        entry.load_extension("dc", atom=False, rss=True)
        entry.dc.dc_creator(names)
    else:
        entry.author([{"name": name} for name in names])


def _add_source(entry: FeedEntry, feed: FeedInfo, *, rss: bool) -> None:
    if not rss:
        entry.register_extension("feedsvc_source", _AtomSourceExtension, atom=True, rss=False)
        entry.feedsvc_source.feed = feed
    elif link := _safe_url(feed.link) or _safe_url(feed.id):
        # RSS <source> requires a url attribute: without one the element is left out.
        entry.source(url=link, title=_xml_text(feed.title))


# -- JSON Feed 1.1 -----------------------------------------------------------------


def _json_feed(meta: FeedMeta, matches: Sequence[MatchedEntry]) -> bytes:
    document: dict[str, Any] = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": meta.title,
        "home_page_url": listing_url(meta),
        "feed_url": feed_url(meta, "json"),
        "items": [_json_item(m) for m in matches],
    }
    if meta.subtitle:
        document["description"] = meta.subtitle
    if meta.hub:
        document["hubs"] = [{"type": "WebSub", "url": meta.hub}]
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _json_item(match: MatchedEntry) -> dict[str, Any]:
    data, feed = match.entry.data, match.entry.feed
    item: dict[str, Any] = {
        "id": data.id,
        "title": data.title,
        "content_html": _clean_html(data.content or data.summary),
        "date_modified": _iso(entry_updated(match)),
    }
    if link := _safe_url(data.link):
        item["url"] = link
    if data.published is not None:
        item["date_published"] = _iso(data.published)
    if data.authors:
        item["authors"] = [{"name": a} for a in data.authors]
    if data.categories:
        item["tags"] = list(data.categories)
    item["_source"] = {"id": feed.id, "title": feed.title, "url": _safe_url(feed.link)}
    return item


# -- text hygiene ------------------------------------------------------------------


def _clean_html(html: str) -> str:
    """Sanitise again: the database may hold rows written before today's sanitiser."""
    return _xml_text(nh3.clean(html)) if html else ""


def _safe_url(url: str | None) -> str | None:
    if not url:
        return None
    try:
        scheme = urlsplit(url.strip()).scheme.lower()
    except ValueError:
        return None
    return url.strip() if scheme in _SAFE_SCHEMES else None


def _xml_text(text: str) -> str:
    return _NOT_XML_CHAR.sub("", text)


def _escape_text(text: str) -> str:
    return _xml_text(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()
