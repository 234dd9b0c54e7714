"""The query parser: every construct of the grammar, precedence, and errors with their position."""

from __future__ import annotations

import pytest

from feedsvc.config import SubscriptionConfig
from feedsvc.errors import QueryError
from feedsvc.match import And, Not, Or, Query, Term, iter_terms, parse_query


def shape(query: Query) -> object:
    """A compact, comparable picture of the AST: terms as ``field:text`` (regexes ``/…/``)."""
    if isinstance(query, Term):
        return f"{query.field}:{query.text}"
    if isinstance(query, Not):
        return ("NOT", shape(query.operand))
    name = "AND" if isinstance(query, And) else "OR"
    return (name, *map(shape, query.operands))


PARSE_CASES = {
    "one Chinese term": ("深圳", "text:深圳"),
    "one English term": ("AI", "text:AI"),
    "juxtaposition is AND": ("深圳 新能源", ("AND", "text:深圳", "text:新能源")),
    "explicit AND": ("深圳 AND 新能源", ("AND", "text:深圳", "text:新能源")),
    "OR": ("深圳 OR 上海", ("OR", "text:深圳", "text:上海")),
    "bar is OR": ("深圳|上海", ("OR", "text:深圳", "text:上海")),
    "full-width bar": ("深圳｜上海", ("OR", "text:深圳", "text:上海")),
    "AND binds tighter than OR": (
        "深圳 新能源 OR 上海",
        ("OR", ("AND", "text:深圳", "text:新能源"), "text:上海"),
    ),
    "parentheses": (
        "深圳 (新能源 OR 光伏)",
        ("AND", "text:深圳", ("OR", "text:新能源", "text:光伏")),
    ),
    "full-width parentheses": (
        "深圳（新能源 OR 光伏）",
        ("AND", "text:深圳", ("OR", "text:新能源", "text:光伏")),
    ),
    "minus": ("深圳 -广告", ("AND", "text:深圳", ("NOT", "text:广告"))),
    "NOT": ("深圳 NOT 广告", ("AND", "text:深圳", ("NOT", "text:广告"))),
    "NOT a group": ("NOT (广告 OR 推广)", ("NOT", ("OR", "text:广告", "text:推广"))),
    "pure negation": ("-广告", ("NOT", "text:广告")),
    "double negation": ("--广告", ("NOT", ("NOT", "text:广告"))),
    "hyphen inside a word is literal": ("COVID-19", "text:COVID-19"),
    "lower-case or is a word": ("black or white", ("AND", "text:black", "text:or", "text:white")),
    "operator-like prefix is a word": ("ORACLE", "text:ORACLE"),
    "phrase": ('"新 能源"', "text:新 能源"),
    "phrase ends are trimmed": ('" 新能源 "', "text:新能源"),
    "Chinese quotes": ("“新能源 汽车”", "text:新能源 汽车"),
    "phrase keeps operators": ('"A OR B"', "text:A OR B"),
    "regex": (r"/\d+亿元/", r"text:/\d+亿元/"),
    "regex with an escaped slash": (r"/a\/b/", r"text:/a\/b/"),
    "field on a term": ("title:深圳", "title:深圳"),
    "every field": (
        "title:a content:b text:c category:d author:e source:f link:g",
        (
            "AND",
            *(
                f"{f}:{t}"
                for f, t in zip(
                    ("title", "content", "text", "category", "author", "source", "link"),
                    "abcdefg",
                    strict=True,
                )
            ),
        ),
    ),
    "full-width colon": ("title：深圳", "title:深圳"),
    "field names in any case": ("Title:深圳 SOURCE:hk", ("AND", "title:深圳", "source:hk")),
    "a word that starts like a field": ("titles:深圳", "text:titles:深圳"),
    "field on a phrase": ('title:"新 能源"', "title:新 能源"),
    "field on a regex": ("content:/5g/", "content:/5g/"),
    "field on a group": (
        "title:(深圳 OR 上海) 新能源",
        ("AND", ("OR", "title:深圳", "title:上海"), "text:新能源"),
    ),
    "space after the field colon": ("title: 深圳", "title:深圳"),
    "unknown prefix is part of the word": ("http://x.cn/深圳", "text:http://x.cn/深圳"),
    "link with a URL": (
        "link:https://finews.withounder.com/hk/",
        "link:https://finews.withounder.com/hk/",
    ),
    "operator word after a field is a word": ("title:NOT", "title:NOT"),
}


@pytest.mark.parametrize(("text", "expected"), list(PARSE_CASES.values()), ids=list(PARSE_CASES))
def test_parse(text: str, expected: object) -> None:
    assert shape(parse_query(text)) == expected


def test_terms_carry_normalised_form_and_position() -> None:
    terms = list(iter_terms(parse_query('深圳 -title:ＡＩ "電池 技術"')))
    assert [(t.text, t.normalized, t.position) for t in terms] == [
        ("深圳", "深圳", 0),
        ("ＡＩ", "ai", 10),
        ("電池 技術", "电池 技术", 13),
    ]


ERROR_CASES = {
    "empty query": ("", "expected a term", 0),
    "only spaces": ("   ", "expected a term", 3),
    "unclosed parenthesis": ("深圳 (新能源 OR 光伏", "unbalanced parenthesis", 3),
    "extra closing parenthesis": ("深圳 新能源) OR 光伏", "unbalanced parenthesis", 6),
    "second group unclosed": ("(深圳 OR 上海) (光伏", "unbalanced parenthesis", 11),
    "empty group": ("深圳 ()", "expected a term", 4),
    "OR at the end": ("深圳 OR", "expected a term", 5),
    "OR at the start": ("OR 深圳", "expected a term", 0),
    "two ORs": ("深圳 OR | 上海", "expected a term", 6),
    "AND AND": ("深圳 AND AND 上海", "expected a term", 7),
    "minus alone": ("深圳 -", "expected a term", 4),
    "NOT at the end": ("深圳 NOT", "expected a term", 6),
    "field without a term": ("深圳 title:", "expected a term after title:", 9),
    "field before an operator": ("title: | 深圳", "expected a term after title:", 7),
    "unterminated phrase": ('深圳 "新能源', "unterminated phrase", 3),
    "empty phrase": ('深圳 ""', "empty phrase", 3),
    "unterminated regex": ("深圳 /abc", "unterminated regex", 3),
    "empty regex": ("深圳 //", "empty regex", 3),
    "invalid regex": ("深圳 /(abc/", "invalid regex: missing ): (abc", 3),
    "backreference (not linear time)": (
        r"/(a)\1/",
        "invalid regex: invalid escape sequence: \\1",
        0,
    ),
    "regex glued to a word": ("/abc/def", "expected a space or an operator after the regex", 5),
    "term that normalises to nothing": ("深圳 &#8203;", "term has nothing to search for", 3),
    "too deep": ("(" * 100 + "a" + ")" * 100, "query nested too deeply", 65),
}


@pytest.mark.parametrize(
    ("text", "message", "position"), list(ERROR_CASES.values()), ids=list(ERROR_CASES)
)
def test_errors_name_what_was_expected_and_where(text: str, message: str, position: int) -> None:
    with pytest.raises(QueryError) as caught:
        parse_query(text)
    assert (caught.value.message, caught.value.position) == (message, position)
    assert str(caught.value) == f"{message} at {position}"


@pytest.mark.parametrize(
    "keywords",
    [["新能源", "光伏"], ["深圳"], ['say "hi"', "AI"], ["電池", "ＡＩ 芯片", "a OR b", "-广告"]],
)
def test_keyword_list_shorthand_round_trips(keywords: list[str]) -> None:
    config = SubscriptionConfig(name="kw", keywords=keywords)
    query = parse_query(config.query_text)
    expected = [k.replace('"', " ").strip() for k in keywords]
    terms = list(iter_terms(query))
    assert [t.text for t in terms] == expected
    assert all(t.field == "text" and not t.is_regex for t in terms)
    assert isinstance(query, Or) or len(keywords) == 1
