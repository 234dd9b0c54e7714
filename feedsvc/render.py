"""Digest rendering: a DigestJob → subject, plain text and CSS-inlined HTML (Jinja2, per locale)."""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import css_inline
import jinja2
from markupsafe import Markup

from feedsvc.model import DigestItem, DigestJob, Highlighted, SubscriptionInfo

#: Locale used when a subscriber's locale has no templates of its own.
DEFAULT_LOCALE = "en"
#: Subscriptions named in a subject before the rest are only counted.
SUBJECT_MAX_NAMES = 3

#: Distinct stories whose rendered fragments a renderer keeps (~2 KB each), least
#: recently used first out.
STORY_CACHE_SIZE = 4096
#: The digest stylesheet (the HTML layout includes it in <style>), relative to the templates.
STYLESHEET = "_layout/digest.css"

_WHITESPACE = re.compile(r"\s+")
_SLOT_FORMAT = "<!--feedsvc-story-{}-->"
_SLOT = re.compile(r"<!--feedsvc-story-(\d+)-->")


@dataclass(frozen=True)
class RenderedDigest:
    """The three parts of a digest: a one-line subject, the plain text and the HTML."""

    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class Segment:
    """A run of plain text; ``hit`` marks a matched term, which templates highlight."""

    text: str
    hit: bool


@dataclass(frozen=True)
class StoryKey:
    """Everything one story's fragments are rendered from: equal keys, equal fragments.

    The story's view is built from the key alone (:func:`entry_view`), so a cached
    fragment can only stand in for a story that renders to the same bytes: another
    title, snippet, highlight, link, source, "also in", terms or time, or another
    locale, zone or digest year, is another key.
    """

    #: Template directory (see :meth:`DigestRenderer.template_locale`).
    locale: str
    timezone: str
    #: The digest's year in ``timezone``: a story from another year shows its own.
    year: int
    title: Highlighted
    snippet: Highlighted
    link: str | None
    #: Display name of the story's source (also the heading it is grouped under).
    source: str
    also_in: tuple[str, ...]
    terms: tuple[str, ...]
    #: Publication time, else the time feedsvc first saw the story.
    published: datetime


@dataclass(frozen=True)
class EntryView:
    """One story as the templates see it: every value display-ready, every link http(s) or None."""

    title: tuple[Segment, ...]
    link: str | None
    source: str
    also_in: tuple[str, ...]
    #: Publication time (first-seen time when the feed gives none) in the subscriber's zone.
    published: datetime
    snippet: tuple[Segment, ...]
    terms: tuple[str, ...]


@dataclass(frozen=True)
class StoryFragments:
    """A story rendered for a digest: HTML with its CSS inlined, and plain text."""

    html: str
    text: str


@dataclass(frozen=True)
class StorySlot:
    """A story as the digest layouts see it: its text, and a placeholder for its HTML.

    The placeholder (an HTML comment no escaped value can spell) is replaced by the
    story's own inlined HTML once the rest of the digest has had its CSS inlined.
    """

    text: str
    html: Markup


@dataclass(frozen=True)
class SourceView:
    name: str
    stories: tuple[StorySlot, ...]


@dataclass(frozen=True)
class SubscriptionView:
    name: str
    title: str
    feed_url: str | None
    unsubscribe_url: str | None
    sources: tuple[SourceView, ...]
    #: Stories shown plus stories left out by the cap.
    total: int
    omitted: int


class DigestRenderer:
    """Renders digests with ``<locale>/digest-{subject.txt,body.txt,body.html}`` templates.

    Templates get only display-ready values (see :class:`EntryView`): text is plain and
    escaped by Jinja2's autoescape in HTML, links are http(s) or None, datetimes are in the
    subscriber's zone. Undefined variables raise (``StrictUndefined``) in every template.

    Stories recur across digests (subscribers share subscriptions), so each story is
    rendered with ``<locale>/digest-story.{html,txt}`` and CSS-inlined once, then reused
    from a bounded LRU cache keyed by :class:`StoryKey`. The output is byte for byte what
    inlining the whole document would give: the stylesheet has only element and class
    selectors, so an element's style never depends on where it sits.
    """

    def __init__(self, templates_dir: Path, *, story_cache_size: int = STORY_CACHE_SIZE) -> None:
        self._text_env = _environment(templates_dir, autoescape=False)
        self._html_env = _environment(templates_dir, autoescape=True)
        # A locale is a directory with digest templates (others hold layouts or web pages).
        self._locales = frozenset(
            p.parent.name for p in templates_dir.glob("*/digest-subject.txt") if p.is_file()
        )
        # keep_at_rules keeps @media queries in <style> for clients that honour them;
        # everything else is inlined because Gmail and Outlook drop or mangle <style>.
        self._inliner = css_inline.CSSInliner(
            keep_at_rules=True, minify_css=True, load_remote_stylesheets=False
        )
        self._stylesheet = (templates_dir / STYLESHEET).read_text(encoding="utf-8")
        self.story_fragments = functools.lru_cache(maxsize=story_cache_size)(self._render_story)

    def render(self, job: DigestJob) -> RenderedDigest:
        """Render one digest; raises ``jinja2.TemplateError`` for a broken template."""
        locale = self.template_locale(job.locale)
        stories = _StoryCollector(self.story_fragments, locale, job)
        context = digest_context(job, stories.slot)
        subject = self._text_env.get_template(f"{locale}/digest-subject.txt").render(context)
        text = self._text_env.get_template(f"{locale}/digest-body.txt").render(context)
        html = self._html_env.get_template(f"{locale}/digest-body.html").render(context)
        return RenderedDigest(
            subject=display_text(subject),
            text=text,
            html=stories.fill(self._inliner.inline(html)),
        )

    def template_locale(self, locale: str) -> str:
        """The template directory for ``locale``: itself, else its language's, else the default."""
        if locale in self._locales:
            return locale
        language = locale.split("-")[0].lower()
        same_language = sorted(c for c in self._locales if c.split("-")[0].lower() == language)
        return same_language[0] if same_language else DEFAULT_LOCALE

    def _render_story(self, key: StoryKey) -> StoryFragments:
        context = {"entry": entry_view(key), "year": key.year}
        html = self._html_env.get_template(f"{key.locale}/digest-story.html").render(context)
        text = self._text_env.get_template(f"{key.locale}/digest-story.txt").render(context)
        return StoryFragments(html=self._inliner.inline_fragment(html, self._stylesheet), text=text)


class _StoryCollector:
    """The stories of one digest: slots for its layouts, then their HTML put in place."""

    def __init__(
        self, fragments: Callable[[StoryKey], StoryFragments], locale: str, job: DigestJob
    ) -> None:
        self._fragments = fragments
        self._locale = locale
        self._timezone = job.timezone
        self._year = job.window_end.astimezone(ZoneInfo(job.timezone)).year
        self._html: list[str] = []

    def slot(self, item: DigestItem, source: str) -> StorySlot:
        fragments = self._fragments(self._key(item, source))
        self._html.append(fragments.html)
        return StorySlot(text=fragments.text, html=Markup(_SLOT_FORMAT.format(len(self._html) - 1)))

    def fill(self, html: str) -> str:
        """``html`` with every story placeholder replaced by that story's inlined HTML."""
        return _SLOT.sub(lambda m: self._html[int(m[1])], html)

    def _key(self, item: DigestItem, source: str) -> StoryKey:
        stored = item.match.entry
        return StoryKey(
            locale=self._locale,
            timezone=self._timezone,
            year=self._year,
            title=item.title,
            snippet=item.snippet,
            link=stored.data.link,
            source=source,
            also_in=item.also_in,
            terms=item.match.terms,
            published=stored.data.published or stored.first_seen,
        )


def _environment(templates_dir: Path, *, autoescape: bool) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        # Templates are read once: no stat() per digest to look for edits.
        auto_reload=False,
    )


#: Makes the digest layouts' placeholder for one story, from its position in the digest.
StorySlots = Callable[[DigestItem, str], StorySlot]


def digest_context(job: DigestJob, story: StorySlots) -> dict[str, object]:
    """The variables every digest template receives; ``story`` gives each story's slot."""
    zone = ZoneInfo(job.timezone)
    subscriptions = _subscription_views(job, story)
    return {
        "subscriber": job.subscriber,
        "subscriptions": subscriptions,
        "total": sum(s.total for s in subscriptions),
        "window_start": job.window_start.astimezone(zone),
        "window_end": job.window_end.astimezone(zone),
        "timezone": job.timezone,
        "unsubscribe_url": safe_url(job.unsubscribe_url),
        "subject_names_max": SUBJECT_MAX_NAMES,
    }


def _subscription_views(job: DigestJob, story: StorySlots) -> tuple[SubscriptionView, ...]:
    """Group items by subscription (in ``job.subscriptions`` order), then by source."""
    infos = {s.name: s for s in job.subscriptions}
    by_subscription = _group(job.items, lambda item: item.match.subscription)
    names = [s.name for s in job.subscriptions] + [n for n in by_subscription if n not in infos]
    views = []
    for name in names:
        items = by_subscription.get(name, [])
        omitted = job.omitted.get(name, 0)
        if items or omitted:
            info = infos.get(name, SubscriptionInfo(name=name, title=name))
            views.append(_subscription_view(info, items, omitted, story))
    return tuple(views)


def _subscription_view(
    info: SubscriptionInfo, items: list[DigestItem], omitted: int, story: StorySlots
) -> SubscriptionView:
    by_source = _group(items, _source_name)
    return SubscriptionView(
        name=display_text(info.name),
        title=display_text(info.title or info.name),
        feed_url=safe_url(info.feed_url),
        unsubscribe_url=safe_url(info.unsubscribe_url),
        sources=tuple(
            SourceView(name, tuple(story(item, name) for item in group))
            for name, group in by_source.items()
        ),
        total=len(items) + omitted,
        omitted=omitted,
    )


def entry_view(key: StoryKey) -> EntryView:
    """What the story templates show of ``key``, and nothing it does not hold."""
    return EntryView(
        title=highlight_segments(key.title),
        link=safe_url(key.link),
        source=key.source,
        also_in=tuple(display_text(name) for name in key.also_in),
        published=key.published.astimezone(ZoneInfo(key.timezone)),
        snippet=highlight_segments(key.snippet),
        terms=tuple(display_text(term) for term in key.terms),
    )


def _source_name(item: DigestItem) -> str:
    stored = item.match.entry
    return display_text(stored.feed.title) or display_text(stored.source)


def _group(
    items: Iterable[DigestItem], key: Callable[[DigestItem], str]
) -> dict[str, list[DigestItem]]:
    """Items by key, keys in order of first appearance (dicts keep insertion order)."""
    groups: dict[str, list[DigestItem]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return groups


def highlight_segments(highlighted: Highlighted) -> tuple[Segment, ...]:
    """Split text at its highlight spans; overlapping spans merge, out-of-range ones are clipped."""
    text = highlighted.text
    segments: list[Segment] = []
    position = 0
    for start, end in _clean_spans(highlighted.spans, len(text)):
        if start > position:
            segments.append(Segment(display_text(text[position:start], strip=False), False))
        segments.append(Segment(display_text(text[start:end], strip=False), True))
        position = end
    if position < len(text):
        segments.append(Segment(display_text(text[position:], strip=False), False))
    return tuple(s for s in segments if s.text)


def _clean_spans(spans: Iterable[tuple[int, int]], length: int) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted((max(0, s), min(length, e)) for s, e in spans):
        if start >= end:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def display_text(text: str, *, strip: bool = True) -> str:
    """Plain text for display: control characters (CR/LF included) become spaces, runs collapse."""
    # isprintable() is False for every control character (and for some rare spaces),
    # so the character-by-character pass runs only for text that may need it.
    cleaned = text if text.isprintable() else "".join(" " if _is_control(ch) else ch for ch in text)
    collapsed = _WHITESPACE.sub(" ", cleaned)
    return collapsed.strip() if strip else collapsed


def _is_control(ch: str) -> bool:
    # Cc covers CR/LF/TAB/NUL/DEL; Cf holds zero-width and bidi overrides that can
    # disguise a subject or a link text; Zl/Zp are Unicode line/paragraph separators.
    return unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")


def safe_url(url: str | None) -> str | None:
    """``url`` if it is an absolute http(s) URL free of whitespace and control chars, else None.

    Refusing rather than repairing matters: browsers drop TAB/CR/LF inside a scheme, so
    ``java\\tscript:`` would become ``javascript:`` if it were passed through.
    """
    # isprintable() is False for control characters and every space but " ".
    if not url or not url.isprintable() or " " in url:
        return None
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return url
