"""highlight() and snippet(): spans in the original text, found the way the matcher finds terms."""

from __future__ import annotations

import pytest

from feedsvc.match import highlight, snippet
from feedsvc.model import Highlighted


def marked(result: Highlighted) -> list[str]:
    return [result.text[start:end] for start, end in result.spans]


HIGHLIGHT_CASES = {
    "Chinese in a longer word": ("深圳市发布新政", ["深圳"], ["深圳"]),
    "every occurrence": ("深圳、深圳", ["深圳"], ["深圳", "深圳"]),
    "English by the boundary rule": ("said AI芯片 and AI", ["AI"], ["AI", "AI"]),
    "full-width text": ("ＡＩ芯片", ["AI"], ["ＡＩ"]),
    "Traditional text, Simplified term": ("固態電池", ["电池"], ["電池"]),
    "Simplified text, Traditional term": ("固态电池", ["電池"], ["电池"]),
    "zero-width joiner inside the word": ("新\u200d能源车", ["新能源"], ["新\u200d能源"]),
    "several terms": ("深圳光伏与上海", ["上海", "深圳"], ["深圳", "上海"]),
    "overlapping terms merge": ("新能源汽车", ["新能源", "能源汽车"], ["新能源汽车"]),
    "regex term": ("净利润12亿元", [r"/\d+亿元/"], ["12亿元"]),
    "regex on full-width digits": ("净利润１２亿元", [r"/\d+亿元/"], ["１２亿元"]),
    "phrase that looks like a broken regex": ("a /x(/ b", ["/x(/"], ["/x(/"]),
    "term that is not there": ("上海", ["深圳"], []),
    "no terms": ("深圳", [], []),
    "collapsed white space": ("新能源   汽车", ["新能源 汽车"], ["新能源   汽车"]),
}


@pytest.mark.parametrize(
    ("text", "terms", "expected"), list(HIGHLIGHT_CASES.values()), ids=list(HIGHLIGHT_CASES)
)
def test_highlight(text: str, terms: list[str], expected: list[str]) -> None:
    result = highlight(text, terms)
    assert result.text == text
    assert marked(result) == expected


def test_highlight_spans_are_sorted_and_disjoint() -> None:
    result = highlight("深圳 上海 深圳 北京", ["北京", "深圳", "上海"])
    assert result.spans == ((0, 2), (3, 5), (6, 8), (9, 11))


def test_snippet_of_short_html_is_its_plain_text() -> None:
    result = snippet("<p>深圳<b>新能源</b>车企</p><p>AT&amp;T</p>", ["新能源"])
    assert result.text == "深圳新能源车企 AT&T"
    assert marked(result) == ["新能源"]


def test_snippet_centres_on_the_first_hit_and_marks_cuts() -> None:
    html = "<p>" + "甲" * 300 + "深圳" + "乙" * 300 + "</p>"
    result = snippet(html, ["深圳"], width=40)
    assert result.text == "…" + "甲" * 10 + "深圳" + "乙" * 28 + "…"
    assert marked(result) == ["深圳"]


def test_snippet_without_hits_starts_at_the_beginning() -> None:
    result = snippet("<p>" + "深圳" * 100 + "</p>", ["上海"], width=10)
    assert result == Highlighted("深圳" * 5 + "…")


def test_snippet_near_the_end_is_not_short() -> None:
    result = snippet("<p>" + "甲" * 100 + "深圳</p>", ["深圳"], width=20)
    assert result.text == "…" + "甲" * 18 + "深圳"
    assert marked(result) == ["深圳"]


def test_snippet_clips_a_span_cut_by_the_window() -> None:
    result = snippet("<p>" + "深圳" * 50 + "</p>", ["深圳"], width=5)
    assert result.text == "深圳深圳深…"
    assert marked(result) == ["深圳深圳深"]


def test_snippet_of_traditional_html() -> None:
    result = snippet("<p>比亞迪<em>電池</em>產能</p>", ["电池"])
    assert result.text == "比亞迪電池產能"
    assert marked(result) == ["電池"]
