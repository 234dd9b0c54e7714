"""The finews corpus: the index finds exactly what a substring check on normalised text finds."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from feedsvc.match import MatchIndex, normalize, snippet
from feedsvc.model import EntryData

Corpus = Callable[[str], list[EntryData]]
#: Keywords that OpenCC s2twp rewrites as other words, not just other characters.
TAIWAN_VOCABULARY = {"芯片"}

KEYWORDS = [
    "上海",
    "ETF",
    "新能源",
    "光伏",
    "港股",
    "人民币",
    "涨停",
    "美联储",
    "芯片",
    "央行",
    "基金",
]


def matching_ids(index: MatchIndex, entries: list[EntryData], subscription: str) -> set[str]:
    return {
        entry.id
        for entry in entries
        if any(hit.subscription == subscription for hit in index.match(entry, "finews"))
    }


@pytest.fixture(scope="module")
def index() -> MatchIndex:
    return MatchIndex.build({keyword: keyword for keyword in KEYWORDS})


@pytest.mark.parametrize("keyword", KEYWORDS)
def test_index_equals_substring_check(corpus: Corpus, index: MatchIndex, keyword: str) -> None:
    entries = corpus("all.xml")
    expected = {
        e.id
        for e in entries
        if normalize(keyword) in normalize(e.title) + " " + normalize(e.content or e.summary)
    }
    assert expected, f"{keyword} should occur in the corpus"
    assert len(expected) < len(entries)
    assert matching_ids(index, entries, keyword) == expected


@pytest.mark.parametrize(
    ("variant", "original"),
    [
        ("rss2/all.gb18030.xml", "rss2/all.xml"),
        ("traditional/all.xml", "all.xml"),
        ("match/traditional.big5.xml", "all.xml"),
    ],
)
def test_encodings_and_scripts_match_the_same_entries(
    corpus: Corpus, index: MatchIndex, variant: str, original: str
) -> None:
    """GB18030 and Big5 bytes, and Traditional text, match Simplified keywords alike.

    Except Taiwan vocabulary: the Traditional edition was made with OpenCC s2twp, which
    also swaps words (芯片 → 晶片); t2s converts characters only, as docs/architecture.md says.
    """
    for keyword in KEYWORDS:
        if keyword in TAIWAN_VOCABULARY and "traditional" in variant:
            continue
        expected = matching_ids(index, corpus(original), keyword)
        assert matching_ids(index, corpus(variant), keyword) == expected, keyword


def test_snippets_of_traditional_entries_highlight_simplified_keywords(corpus: Corpus) -> None:
    index = MatchIndex.build({"s": "人民币"})
    marked = []
    for entry in corpus("traditional/all.xml"):
        if not index.match(entry, "finews"):
            continue
        result = snippet(entry.content, ["人民币"])
        assert bool(result.spans) == ("人民币" in normalize(entry.content))
        marked += [result.text[start:end] for start, end in result.spans]
    assert marked
    assert set(marked) == {"人民幣"}
