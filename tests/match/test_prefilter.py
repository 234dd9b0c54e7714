"""The literals a regex cannot match without: exact where sure, nothing where not."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedsvc.match import MatchIndex
from feedsvc.match.prefilter import required_literals
from feedsvc.match.query import compile_regex
from feedsvc.model import EntryData

CASES = {
    "literal, class, literal": (r"深圳\d+亿", ["深圳", "亿"]),
    "plus keeps the character": (r"a+b", ["a", "b"]),
    "star drops it": (r"ab*c", ["a", "c"]),
    "question mark drops it": (r"ab?c", ["a", "c"]),
    "braces from zero drop it": (r"a{0,2}bc", ["bc"]),
    "braces from two keep it": (r"a{2}bc", ["a", "bc"]),
    "a group is skipped, whatever is in it": (r"(深圳|上海)银行", ["银行"]),
    "an optional group costs nothing before it": (r"港股(通)?", ["港股"]),
    "escaped punctuation is literal": (r"\.com", [".com"]),
    "dot and anchors break a run": (r"^a.b$", ["a", "b"]),
    "a class breaks a run": (r"x[ab]y", ["x", "y"]),
    "a class with a bracket first": (r"x[]a]y", ["x", "y"]),
    "top-level alternation: no literal": (r"深圳|上海", []),
    "flags: unsure": (r"(?i)abc", []),
    "POSIX class: unsure": (r"[[:alpha:]]x", []),
    "Unicode class: unsure": (r"\p{Han}银行", []),
    "quoted text: unsure": (r"\Qa.b\E", []),
    "hex escape: unsure": (r"\x41b", []),
    "a brace that is no repetition: unsure": (r"a{b", []),
    "unbalanced: unsure": (r"a)b", []),
}


@pytest.mark.parametrize(("pattern", "expected"), list(CASES.values()), ids=list(CASES))
def test_required_literals(pattern: str, expected: list[str]) -> None:
    assert required_literals(pattern) == expected


# Random patterns from pieces whose meaning RE2 and the reading agree on, or that make
# the reading unsure; texts from the characters they use.
PATTERN_PIECES = ["a", "b", "5", "深", "圳", "亿", r"\d", ".", "?", "*", "+", "{0,1}", "{2}"]
PATTERN_PIECES += ["(a|深)", "[b5]", "|", r"\.", " ", "A"]
TEXT_PIECES = ["a", "b", "5", "深", "圳", "亿", ".", " ", "A", "55", "深圳"]
patterns = st.lists(st.sampled_from(PATTERN_PIECES), min_size=1, max_size=8).map("".join)
texts = st.lists(st.sampled_from(TEXT_PIECES), max_size=12).map("".join)


def _compiles(pattern: str) -> bool:
    try:
        compile_regex(pattern, 0)
    except Exception:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(patterns.filter(_compiles), texts)
def test_every_match_contains_the_literals(pattern: str, text: str) -> None:
    if compile_regex(pattern, 0).search(text.casefold()):
        for literal in required_literals(pattern):
            assert literal.casefold() in text.casefold()


@settings(max_examples=200, deadline=None)
@given(patterns.filter(_compiles), texts)
def test_a_regex_alone_matches_as_the_regex_does(pattern: str, text: str) -> None:
    # The index runs the regex only where its prefilter needle occurs: never fewer matches.
    index = MatchIndex.build({"s": f"/{pattern}/"})
    entry = EntryData("e", "e", text, None, None, None)
    expected = compile_regex(pattern, 0).search(" ".join(text.casefold().split())) is not None
    assert bool(index.match(entry, "x")) == expected


def test_quoted_text_inside_a_group_gives_no_literal() -> None:
    # Inside \Q…\E a parenthesis is literal: reading the group would end it too early.
    assert required_literals(r"(\Qa)\E)b") == []
