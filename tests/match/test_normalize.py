"""Each normalisation step, its position-mapping twin and the boundary rule, Chinese and English."""

from __future__ import annotations

import pytest

from feedsvc.match import normalize
from feedsvc.match.normalize import normalize_mapped, occurrences, plain_text
from feedsvc.match.scan import mark_boundaries

NORMALIZE_CASES = {
    "inline tags vanish": ("新<b>能源</b>汽车", "新能源汽车"),
    "inline tag inside an English word": ("Bat<i>tery</i>", "battery"),
    "block tags become a space": ("<p>深圳</p><p>上海</p>", "深圳 上海"),
    "br is a block tag": ("深圳<br/>上海", "深圳 上海"),
    "tag attributes are not text": ('<a href="http://x/深圳">上海</a>', "上海"),
    "named entity": ("AT&amp;T 与 &lt;深圳&gt;", "at&t 与 <深圳>"),
    "decimal character reference": ("&#28145;&#22323;", "深圳"),
    "hex character reference": ("&#x6DF1;&#x5733;", "深圳"),
    "entity without semicolon stays (URLs)": ("?a=1&copy=2", "?a=1&copy=2"),
    "plain less-than is not a tag": ("a < b 且 c<d", "a < b 且 c<d"),
    "full-width letters (NFKC)": ("ＡＩ芯片", "ai芯片"),
    "full-width digits and punctuation": ("５Ｇ（手机）", "5g(手机)"),
    "ideographic space": ("深圳\u3000上海", "深圳 上海"),
    "case folding": ("NVIDIA Straße", "nvidia strasse"),
    "Traditional to Simplified": ("電池與鋰電", "电池与锂电"),
    "Traditional phrase": ("頭髮", "头发"),
    "characters, not Taiwan vocabulary": ("晶片與記憶體", "晶片与记忆体"),
    "zero-width joiner inside a word": ("新\u200d能源", "新能源"),
    "zero-width space and BOM": ("\ufeff深\u200b圳", "深圳"),
    "soft hyphen": ("bat\u00adtery", "battery"),
    "zero-width from a reference": ("新&#8203;能源", "新能源"),
    "white space collapsed and stripped": ("  深圳 \n\t 上海  ", "深圳 上海"),
    "non-breaking space": ("深圳&nbsp;上海", "深圳 上海"),
    "empty": ("", ""),
}


@pytest.mark.parametrize(
    ("raw", "expected"), list(NORMALIZE_CASES.values()), ids=list(NORMALIZE_CASES)
)
def test_normalize(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


@pytest.mark.parametrize(
    "raw", [raw for raw, _ in NORMALIZE_CASES.values()], ids=list(NORMALIZE_CASES)
)
def test_mapped_twin_gives_the_same_text(raw: str) -> None:
    assert normalize_mapped(raw).text == normalize(raw)


def test_mapped_twin_points_into_the_original() -> None:
    original = "新<b>能源</b> ＡＩ &#28145;圳 電池"
    mapped = normalize_mapped(original)
    assert mapped.text == "新能源 ai 深圳 电池"
    spans = {
        word: mapped.original_span(mapped.text.index(word), mapped.text.index(word) + len(word))
        for word in ("新能源", "ai", "深圳", "电池")
    }
    assert {word: original[s:e] for word, (s, e) in spans.items()} == {
        "新能源": "新<b>能源",
        "ai": "ＡＩ",
        "深圳": "&#28145;圳",
        "电池": "電池",
    }


def test_mapped_twin_follows_converted_phrases() -> None:
    original = "DRAM記憶體價格"
    mapped = normalize_mapped(original)
    assert mapped.text == "dram记忆体价格"
    start = mapped.text.index("记忆体")
    assert _source_of(original, mapped.original_span(start, start + 3)) == "記憶體"
    start = mapped.text.index("价格")
    assert _source_of(original, mapped.original_span(start, start + 2)) == "價格"


def test_mapped_twin_keeps_expansions_and_combining_marks_together() -> None:
    original = "Straße Cafe\u0301"
    mapped = normalize_mapped(original)
    assert mapped.text == "strasse café"
    ss, e_acute = mapped.text.index("ss"), mapped.text.index("é")
    assert _source_of(original, mapped.original_span(ss, ss + 2)) == "ß"
    assert _source_of(original, mapped.original_span(e_acute, e_acute + 1)) == "e\u0301"


def _source_of(original: str, span: tuple[int, int]) -> str:
    return original[span[0] : span[1]]


def test_plain_text_keeps_case_and_script() -> None:
    assert plain_text("<p>ＡＩ 電池</p><p>AT&amp;T</p>") == "ＡＩ 電池 AT&T"


BOUNDARY_CASES = {
    "Chinese inside a longer word": ("深圳", "深圳市", [0]),
    "Chinese after Chinese": ("深圳", "前往深圳", [2]),
    "English before Chinese": ("ai", "ai芯片", [0]),
    "English after Chinese": ("ai", "发展ai", [2]),
    "English inside an English word": ("ai", "said", []),
    "English at a digit": ("ai", "ai5", []),
    "English between punctuation": ("ai", "(ai)", [1]),
    "digits glued to digits": ("5g", "15g", []),
    "digits after Chinese": ("5g", "发展5g网络", [2]),
    "mixed term, Chinese end is free": ("ai芯片", "ai芯片组", [0]),
    "mixed term, English start is bound": ("ai芯片", "mai芯片", []),
    "every occurrence": ("深圳", "深圳深圳", [0, 2]),
    "a glued occurrence does not hide a free one": ("ai", "said ai", [5]),
}


@pytest.mark.parametrize(
    ("term", "text", "starts"), list(BOUNDARY_CASES.values()), ids=list(BOUNDARY_CASES)
)
def test_boundary_rule(term: str, text: str, starts: list[int]) -> None:
    assert list(occurrences(text, term)) == starts


@pytest.mark.parametrize(
    ("term", "text", "starts"), list(BOUNDARY_CASES.values()), ids=list(BOUNDARY_CASES)
)
def test_marked_substring_search_is_the_boundary_rule(
    term: str, text: str, starts: list[int]
) -> None:
    # What the index's automata rely on (feedsvc.match.scan): see also test_property.py.
    assert (mark_boundaries(term) in mark_boundaries(text)) == bool(starts)


def test_marks_go_around_ascii_runs_only() -> None:
    assert mark_boundaries("深圳ai芯片 5g") == "深圳\u200bai\u200b芯片 \u200b5g\u200b"
    assert mark_boundaries("深圳市") == "深圳市"
