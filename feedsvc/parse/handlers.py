"""feedparser's element handlers, replayed by the fast path onto a draft of the record.

Each function does what the named feedparser handler does with one lxml element;
``Fields`` collects the results until the element's feed or entry is complete.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from feedparser.mixin import _FeedParserMixin
from feedparser.urls import _urljoin
from feedparser.util import FeedParserDict

from feedsvc.parse import elements
from feedsvc.parse.elements import Unsure
from feedsvc.parse.record import RawEntry, RawFeed, TextDetail, first_text

_QUERY_ENTITY = re.compile("&([A-Za-z0-9_]+);")
PERSON_PARTS = frozenset({"name", "email", "uri"})


@dataclass(slots=True)
class Fields:
    """A feed's or an entry's fields while its elements are read."""

    id: str = ""
    #: None until set: a permalink guid doubles as the link only then.
    link: str | None = None
    title: TextDetail | None = None
    summary: TextDetail | None = None
    content: tuple[TextDetail, ...] = ()
    published_text: str = ""
    published: time.struct_time | None = None
    updated_text: str = ""
    updated: time.struct_time | None = None
    #: The feed's polling hints by feedparser's key (``ttl``, ``sy_updateperiod``, …).
    hints: dict[str, str] | None = None
    state: AuthorsAndTags | None = None

    def authors_and_tags(self) -> AuthorsAndTags:
        """feedparser's author and tag helpers, with this entry's state."""
        if self.state is None:
            self.state = AuthorsAndTags({})
        return self.state

    def entry(self) -> RawEntry:
        return RawEntry(
            id=self.id,
            link=self.link or "",
            title=self.title,
            summary=self.summary,
            content=self.content,
            published_text=self.published_text,
            updated_text=self.updated_text,
            published=self.published,
            updated=self.updated,
            authors=self.state.authors() if self.state else (),
            categories=self.state.categories() if self.state else (),
        )

    def feed(self, version: str, entries: tuple[RawEntry, ...]) -> RawFeed:
        hints = self.hints or {}
        return RawFeed(
            version=version,
            entries=entries,
            id=self.id,
            link=self.link or "",
            title=self.title,
            updated=self.updated,
            ttl=hints.get("ttl", ""),
            update_period=hints.get("sy_updateperiod", ""),
            update_frequency=hints.get("sy_updatefrequency", ""),
        )


class AuthorsAndTags:
    """Just enough of feedparser's parser for its author and tag helpers to run.

    They keep state across an entry's authors (a person without a name takes the
    previous author's): replaying it exactly means running them.
    """

    _save_author = _FeedParserMixin._save_author
    _sync_author_detail = _FeedParserMixin._sync_author_detail
    _add_tag = _FeedParserMixin._add_tag

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def _get_context(self) -> dict[str, Any]:
        return self.values

    def authors(self) -> tuple[str, ...]:
        persons = self.values.get("authors", ())
        return tuple(first_text(a.get("name"), a.get("email")) for a in persons)

    def categories(self) -> tuple[str, ...]:
        tags = self.values.get("tags", ())
        return tuple(first_text(t.get("term"), t.get("label")) for t in tags)


def link(fields: Fields, element: Any, base: str, *, in_entry: bool) -> None:
    """``_start_link``/``_end_link``: an alternate HTML href, else the element's text."""
    attributes = elements.attributes(element)
    if "url" in attributes or "uri" in attributes:
        raise Unsure
    if "href" in attributes:
        rel = attributes.get("rel", "alternate")
        default_type = "application/atom+xml" if rel == "self" else "text/html"
        kind = _FeedParserMixin.map_content_type(attributes.get("type", default_type))
        if rel == "alternate" and kind in _FeedParserMixin.html_types:
            fields.link = _urljoin(base, attributes["href"])
        return
    value = elements.text(element, resolve_against=base)
    # feedparser's repair of "?a=1&b;=2" query strings, which it applies to text links.
    if in_entry:
        value = value.replace("&amp;", "&")
    fields.link = _QUERY_ENTITY.sub(r"&\g<1>", value)


def identifier(fields: Fields, element: Any, base: str) -> None:
    """``_start_guid``/``_end_guid``: a permalink id is resolved and doubles as the link."""
    is_link = elements.attributes(element).get("ispermalink", "true") == "true"
    fields.id = elements.text(element, resolve_against=base if is_link else None)
    if is_link and fields.link is None:
        fields.link = fields.id


def author(state: AuthorsAndTags, element: Any, base: str) -> None:
    """``_start_author``/``_end_author``: an Atom person or an RSS "email (name)" string."""
    state.values.setdefault("authors", []).append(FeedParserDict())
    for part in elements.child_elements(element):
        name = elements.name(part)
        if name not in PERSON_PARTS:
            raise Unsure
        if name == "uri":
            uri_base = elements.base(part, base)
            state._save_author("href", elements.text(part, resolve_against=uri_base))
        else:
            state._save_author(name, elements.untransformed_text(part))
    if len(element):
        if elements.direct_text(element).strip():
            raise Unsure
        state.values["author"] = ""
    else:
        state.values["author"] = elements.text(element)
    state._sync_author_detail()


def category(state: AuthorsAndTags, element: Any) -> None:
    """``_start_category``/``_end_category``: attributes first, then the element's text."""
    attributes = elements.attributes(element)
    scheme = attributes.get("scheme", attributes.get("domain"))
    state._add_tag(attributes.get("term"), scheme, attributes.get("label"))
    value = elements.text(element)
    if not value:
        return
    tags = state.values["tags"]
    if tags and not tags[-1]["term"]:
        tags[-1]["term"] = value
    else:
        state._add_tag(value, None, None)
