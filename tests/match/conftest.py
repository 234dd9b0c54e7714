"""Fixtures of the matcher tests: hand-made entries and the finews corpus as EntryData."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import feedparser
import nh3
import pytest

from feedsvc.model import EntryData

DATA = Path(__file__).resolve().parent.parent / "data"

EntryFactory = Callable[..., EntryData]


def _entry(title: str = "", content: str = "", **fields: Any) -> EntryData:
    fields.setdefault("id", "urn:test:1")
    fields.setdefault("key", fields["id"])
    fields.setdefault("link", None)
    return EntryData(title=title, content=content, published=None, updated=None, **fields)


@pytest.fixture
def entry() -> EntryFactory:
    """``entry(title, content, categories=..., authors=..., link=..., summary=...)``."""
    return _entry


def load_feed(path: Path) -> list[EntryData]:
    """A feed file's entries as the parser hands them over: content is sanitised HTML."""
    feed = feedparser.parse(path.read_bytes())
    assert feed.entries, f"no entries in {path}"
    return [
        _entry(
            e.title,
            nh3.clean(e.content[0].value if "content" in e else e.get("summary", "")),
            id=e.id,
            link=e.get("link"),
            categories=tuple(t.term for t in e.get("tags", [])),
            authors=tuple(a.get("name", "") for a in e.get("authors", [])),
        )
        for e in feed.entries
    ]


@pytest.fixture(scope="session")
def corpus() -> Callable[[str], list[EntryData]]:
    """``corpus("all.xml")``: entries of a corpus file (or ``match/…`` test data), cached."""
    cache: dict[str, list[EntryData]] = {}

    def load(name: str) -> list[EntryData]:
        if name not in cache:
            base = DATA if name.startswith("match/") else DATA / "corpus"
            cache[name] = load_feed(base / name)
        return cache[name]

    return load
