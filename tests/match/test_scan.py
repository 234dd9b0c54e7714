"""Scanning long and hostile texts: windows lose no term and list no millions of places."""

from __future__ import annotations

import pytest

from feedsvc.match import Hit, MatchIndex
from feedsvc.match.scan import _WINDOW
from feedsvc.model import EntryData


def _entry(content: str) -> EntryData:
    return EntryData("e", "e", "", None, None, None, content=content)


@pytest.mark.parametrize("window", [1, 2])
@pytest.mark.parametrize("shift", range(8))
def test_a_term_across_a_window_boundary_is_found(window: int, shift: int) -> None:
    # "中" is three UTF-8 bytes, "," one: the six bytes of 深圳 start at every offset
    # from nine bytes before the boundary to one byte before it.
    filler = "," * shift + "中" * ((window * _WINDOW) // 3 - 3)
    index = MatchIndex.build({"cn": "深圳", "en": "ai", "phrase": '"中深"'})
    assert index.match(_entry(filler + "深圳"), "x") == [
        Hit("cn", ("深圳",)),
        Hit("phrase", ("中深",)),
    ]
    assert index.match(_entry(filler + " ai"), "x") == [Hit("en", ("ai",))]
    assert index.match(_entry(filler + "said"), "x") == []


def test_a_text_that_repeats_a_short_term_is_matched() -> None:
    # 500,000 characters (the parser's limit) of one character: four needles each occur
    # at nearly every place, which a single scan would list as two million tuples.
    index = MatchIndex.build({"one": "哈", "four": "哈哈哈哈", "not": "-哈", "other": "深圳"})
    found = index.match(_entry("哈" * 500_000), "x")
    assert found == [Hit("one", ("哈",)), Hit("four", ("哈哈哈哈",))]
