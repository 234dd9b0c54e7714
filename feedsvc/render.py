"""Digest rendering: a DigestJob → subject, plain text and CSS-inlined HTML (Jinja2, per locale)."""

from __future__ import annotations

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

from feedsvc.model import DigestItem, DigestJob, Highlighted, SubscriptionInfo

#: Locale used when a subscriber's locale has no templates of its own.
DEFAULT_LOCALE = "en"
#: Subscriptions named in a subject before the rest are only counted.
SUBJECT_MAX_NAMES = 3

_WHITESPACE = re.compile(r"\s+")


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
class SourceView:
    name: str
    entries: tuple[EntryView, ...]


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
    """

    def __init__(self, templates_dir: Path) -> None:
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

    def render(self, job: DigestJob) -> RenderedDigest:
        """Render one digest; raises ``jinja2.TemplateError`` for a broken template."""
        locale = self.template_locale(job.locale)
        context = digest_context(job)
        subject = self._text_env.get_template(f"{locale}/digest-subject.txt").render(context)
        text = self._text_env.get_template(f"{locale}/digest-body.txt").render(context)
        html = self._html_env.get_template(f"{locale}/digest-body.html").render(context)
        return RenderedDigest(
            subject=display_text(subject),
            text=text,
            html=self._inliner.inline(html),
        )

    def template_locale(self, locale: str) -> str:
        """The template directory for ``locale``: itself, else its language's, else the default."""
        if locale in self._locales:
            return locale
        language = locale.split("-")[0].lower()
        same_language = sorted(c for c in self._locales if c.split("-")[0].lower() == language)
        return same_language[0] if same_language else DEFAULT_LOCALE


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


def digest_context(job: DigestJob) -> dict[str, object]:
    """The variables every digest template receives."""
    zone = ZoneInfo(job.timezone)
    subscriptions = _subscription_views(job, zone)
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


def _subscription_views(job: DigestJob, zone: ZoneInfo) -> tuple[SubscriptionView, ...]:
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
            views.append(_subscription_view(info, items, omitted, zone))
    return tuple(views)


def _subscription_view(
    info: SubscriptionInfo, items: list[DigestItem], omitted: int, zone: ZoneInfo
) -> SubscriptionView:
    by_source = _group(items, _source_name)
    return SubscriptionView(
        name=display_text(info.name),
        title=display_text(info.title or info.name),
        feed_url=safe_url(info.feed_url),
        unsubscribe_url=safe_url(info.unsubscribe_url),
        sources=tuple(
            SourceView(name, tuple(_entry_view(item, zone) for item in group))
            for name, group in by_source.items()
        ),
        total=len(items) + omitted,
        omitted=omitted,
    )


def _entry_view(item: DigestItem, zone: ZoneInfo) -> EntryView:
    stored = item.match.entry
    published = stored.data.published or stored.first_seen
    return EntryView(
        title=highlight_segments(item.title),
        link=safe_url(stored.data.link),
        source=_source_name(item),
        also_in=tuple(display_text(name) for name in item.also_in),
        published=published.astimezone(zone),
        snippet=highlight_segments(item.snippet),
        terms=tuple(display_text(term) for term in item.match.terms),
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
