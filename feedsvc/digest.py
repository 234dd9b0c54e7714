"""Pure digest composition: which pending matches a digest shows, in what order, under
which labels, and the digest's Message-ID.

No I/O and no configuration objects: the flows in ``pipeline.send`` pass plain values,
so the rules are tested with tables (tests/digest/).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from email.utils import parseaddr

from feedsvc.match import highlight, normalize, snippet
from feedsvc.model import DigestItem, MatchedEntry, StoredEntry

#: The same story seen twice within this time (same normalised title) is listed once.
SAME_STORY_WINDOW = timedelta(days=1)
#: How far back digests are remembered to recognise a story arriving again.
STORY_MEMORY = timedelta(days=7)

#: Matches that are one story; the first is shown, the others name their sources beside it.
Story = list[MatchedEntry]


def compose(
    pending: Sequence[MatchedEntry],
    subscriptions: Sequence[str],
    cap: int,
    labels: Mapping[str, str],
) -> tuple[tuple[DigestItem, ...], dict[str, int]]:
    """The digest's items and the stories the cap left out, per subscription.

    Stories are grouped by subscription (in the subscriber's order), then by source,
    newest first; ``labels`` are the operator's titles of sources, by source name.
    """
    stories = order_stories(merge_same_stories(pending), subscriptions)
    shown, omitted = cap_per_digest(stories, cap)
    items = tuple(digest_item([labelled(m, labels) for m in story]) for story in shown)
    return items, omitted


def drop_sent_stories(
    pending: Sequence[MatchedEntry], sent: Sequence[StoredEntry]
) -> list[MatchedEntry]:
    """The pending matches that are news: not a story (same link, or same normalised
    title within a day) that an earlier digest already carried through another source."""
    links = {e.data.link for e in sent if e.data.link}
    titles: dict[str, list[datetime]] = {}
    for entry in sent:
        titles.setdefault(normalize(entry.data.title), []).append(entry.time)

    def already_sent(match: MatchedEntry) -> bool:
        if match.entry.data.link in links:
            return True
        when = match.entry.time
        times = titles.get(normalize(match.entry.data.title), [])
        return any(abs(when - t) <= SAME_STORY_WINDOW for t in times)

    return [m for m in pending if not already_sent(m)]


def merge_same_stories(matches: Sequence[MatchedEntry]) -> list[Story]:
    """Group matches that are the same story: same link, or same normalised title
    within a day (wire copy syndicated by several sources). Each group's first
    element is the one shown; the others name the sources beside it."""
    groups: list[Story] = []
    by_link: dict[tuple[str, str], Story] = {}
    by_title: dict[tuple[str, str], Story] = {}
    for match in sorted(matches, key=_time):
        link_key = (match.subscription, match.entry.data.link or f"#{match.entry.entry_id}")
        title_key = (match.subscription, normalize(match.entry.data.title))
        group = by_link.get(link_key) or by_title.get(title_key)
        if group is not None and _time(match) - _time(group[0]) > SAME_STORY_WINDOW:
            group = None
        if group is None:
            group = []
            groups.append(group)
        group.append(match)
        by_link[link_key] = group
        by_title[title_key] = group
    return groups


def order_stories(stories: Sequence[Story], subscriptions: Sequence[str]) -> list[Story]:
    """By subscription in the subscriber's order, then by source, newest first."""
    return sorted(
        stories,
        key=lambda s: (
            subscriptions.index(s[0].subscription),
            s[0].entry.source,
            -_time(s[0]).timestamp(),
        ),
    )


def cap_per_digest(stories: Sequence[Story], cap: int) -> tuple[list[Story], dict[str, int]]:
    """The first ``cap`` stories, and how many were left out per subscription."""
    omitted: dict[str, int] = {}
    for story in stories[cap:]:
        name = story[0].subscription
        omitted[name] = omitted.get(name, 0) + 1
    return list(stories[:cap]), omitted


def labelled(match: MatchedEntry, labels: Mapping[str, str]) -> MatchedEntry:
    """The operator's ``title:`` for a source wins over the title its feed gives itself."""
    label = labels.get(match.entry.source)
    if label is None:
        return match
    entry = replace(match.entry, feed=replace(match.entry.feed, title=label))
    return replace(match, entry=entry)


def digest_item(story: Story) -> DigestItem:
    """The story's first match, highlighted with every term any of its matches hit."""
    first = story[0]
    terms = sorted({t for m in story for t in m.terms}, key=len, reverse=True)
    data = first.entry.data
    others = (_source_label(m) for m in story[1:])
    also_in = tuple(dict.fromkeys(o for o in others if o != _source_label(first)))
    return DigestItem(
        match=first,
        title=highlight(data.title, terms),
        snippet=snippet(data.content or data.summary, terms),
        also_in=also_in,
    )


def digest_message_id(email: str, window_end: datetime, sender: str) -> str:
    """Deterministic per (subscriber, window): a resend after a crash carries the same id."""
    digest = hashlib.sha256(f"{email.lower()}|{window_end.isoformat()}".encode()).hexdigest()[:32]
    domain = parseaddr(sender)[1].rpartition("@")[2] or "feedsvc.invalid"
    return f"<digest.{digest}@{domain}>"


def _source_label(match: MatchedEntry) -> str:
    return match.entry.feed.title or match.entry.source


def _time(match: MatchedEntry) -> datetime:
    return match.entry.time
