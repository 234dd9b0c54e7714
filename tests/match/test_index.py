"""MatchIndex: each construct and each field through the compiled index, Chinese and English."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from feedsvc.config import SubscriptionConfig
from feedsvc.errors import QueryError
from feedsvc.match import Hit, MatchIndex
from feedsvc.model import EntryData

#: The ``entry`` fixture of conftest.py.
EntryFactory = Callable[..., EntryData]

# name: (query, entry fields, the terms of the hit or None for no match)
CASES: dict[str, tuple[str, dict[str, Any], tuple[str, ...] | None]] = {
    "Chinese term inside a longer word": ("深圳", {"title": "深圳市发布新政"}, ("深圳",)),
    "Chinese term absent": ("深圳", {"title": "上海市发布新政"}, None),
    "English before Chinese": ("AI", {"title": "AI芯片大涨"}, ("AI",)),
    "English after Chinese": ("AI", {"title": "大力发展AI"}, ("AI",)),
    "English inside an English word": ("AI", {"title": "He said so"}, None),
    "lower-case query, upper-case text": ("nvidia", {"title": "NVIDIA 财报"}, ("nvidia",)),
    "full-width text, ASCII query": ("AI", {"title": "ＡＩ芯片"}, ("AI",)),
    "ASCII text, full-width query": ("ＡＩ", {"title": "AI芯片"}, ("ＡＩ",)),
    "Traditional text, Simplified query": ("电池", {"title": "固態電池量產"}, ("电池",)),
    "Simplified text, Traditional query": ("電池", {"title": "固态电池量产"}, ("電池",)),
    "Taiwan vocabulary is its own term": ("芯片 OR 晶片", {"title": "台積電晶片出貨"}, ("晶片",)),
    "Taiwan vocabulary is not rewritten": ("芯片", {"title": "台積電晶片出貨"}, None),
    "keyword split by markup": ("新能源", {"content": "<p>新<b>能源</b>车</p>"}, ("新能源",)),
    "block tags separate words": ('"深圳上海"', {"content": "<p>深圳</p><p>上海</p>"}, None),
    "named entity": ("AT&T", {"content": "<p>AT&amp;T 公布财报</p>"}, ("AT&T",)),
    "numeric reference": ("深圳", {"content": "<p>&#28145;&#22323;</p>"}, ("深圳",)),
    "zero-width joiner inside a word": ("新能源", {"title": "新\u200d能\u200b源"}, ("新能源",)),
    "phrase with a space": ('"新能源 汽车"', {"title": "新能源  汽车"}, ("新能源 汽车",)),
    "AND needs both": ("深圳 新能源", {"title": "深圳 光伏"}, None),
    "AND with both": ("深圳 新能源", {"title": "深圳新能源"}, ("深圳", "新能源")),
    "explicit AND": ("深圳 AND 新能源", {"title": "新能源在深圳"}, ("深圳", "新能源")),
    "OR lists every term that hit": (
        "深圳 OR 上海 OR 北京",
        {"title": "上海 深圳"},
        ("深圳", "上海"),
    ),
    "OR with one": ("深圳 | 上海", {"title": "上海"}, ("上海",)),
    "exclusion blocks": ("深圳 -广告", {"title": "深圳 广告"}, None),
    "exclusion absent": ("深圳 -广告", {"title": "深圳 新闻"}, ("深圳",)),
    "NOT keyword": ("深圳 NOT 广告", {"title": "深圳 廣告"}, None),
    "pure negation matches without hits": ("-广告", {"title": "深圳 新闻"}, ()),
    "pure negation blocked": ("-广告", {"title": "广告"}, None),
    "negated group": ("深圳 -(广告 OR 推广)", {"title": "深圳 推广"}, None),
    "double negation": ("--深圳", {"title": "深圳"}, ()),
    "only the branch that matched contributes": (
        "深圳 OR (上海 北京)",
        {"title": "深圳 上海"},
        ("深圳",),
    ),
    "terms de-duplicated in query order": (
        "(上海 OR 深圳) (深圳 OR 上海)",
        {"title": "深圳 上海"},
        ("上海", "深圳"),
    ),
    "equal terms written differently stay apart": (
        "电池 OR 電池",
        {"title": "电池"},
        ("电池", "電池"),
    ),
    "regex": (r"/\d+亿元/", {"title": "净利润12亿元"}, (r"/\d+亿元/",)),
    "regex absent": (r"/\d+亿元/", {"title": "净利润增长"}, None),
    "regex on normalised text": (r"/ai\d/", {"title": "ＡＩ５芯片"}, (r"/ai\d/",)),
    "regex is case-insensitive": (r"/NVIDIA/", {"title": "nvidia"}, (r"/NVIDIA/",)),
    "regex with a term": (r"深圳 /\d+亿/", {"title": "深圳 5亿"}, ("深圳", r"/\d+亿/")),
    "negated regex": (r"深圳 -/广告\d/", {"title": "深圳 广告1"}, None),
    "title field": ("title:深圳", {"title": "深圳", "content": "上海"}, ("深圳",)),
    "title field, boundary in the title": ("title:AI", {"title": "said", "content": "AI"}, None),
    "content field, phrase across the seam": (
        'content:"深圳 上海"',
        {"title": "深圳", "content": "上海"},
        None,
    ),
    "title field ignores content": ("title:上海", {"title": "深圳", "content": "上海"}, None),
    "content field": ("content:上海", {"title": "深圳", "content": "<p>上海</p>"}, ("上海",)),
    "content field ignores title": ("content:深圳", {"title": "深圳", "content": "上海"}, None),
    "content falls back to summary": ("content:上海", {"summary": "<p>上海</p>"}, ("上海",)),
    "text is title plus content": (
        "text:深圳 text:上海",
        {"title": "深圳", "content": "上海"},
        ("深圳", "上海"),
    ),
    "text spans title and content": (
        '"深圳 上海"',
        {"title": "去深圳", "content": "上海"},
        ("深圳 上海",),
    ),
    "category field": ("category:港股", {"categories": ("美股", "港股")}, ("港股",)),
    "category is normalised": ("category:港股", {"categories": ("港股",)}, ("港股",)),
    "no match across two categories": ("category:港股通", {"categories": ("港股", "通讯")}, None),
    "category not in text": ("港股", {"categories": ("港股",)}, None),
    "author field": ("author:张三", {"authors": ("張三", "Li Si")}, ("张三",)),
    "author boundary": ("author:li", {"authors": ("Lisa",)}, None),
    "source field": ("source:finews", {}, ("finews",)),
    "other source": ("source:hk", {}, None),
    "link field": (
        "link:finews.withounder.com/hk",
        {"link": "https://FINEWS.withounder.com/hk/1.html"},
        ("finews.withounder.com/hk",),
    ),
    "link with no link": ("link:finews", {"link": None}, None),
    "field on a group": ("title:(深圳 OR 上海)", {"title": "上海", "content": "深圳"}, ("上海",)),
    "all of three with an exclusion": (
        "深圳 新能源 AI -广告",
        {"title": "深圳新能源", "content": "AI芯片"},
        ("深圳", "新能源", "AI"),
    ),
    "all of three, one missing": ("深圳 新能源 AI", {"title": "深圳新能源 said"}, None),
    "all of, excluded term hit": ("深圳 新能源 -广告", {"title": "深圳新能源广告"}, None),
    "any of, two terms and an exclusion": (
        "(深圳 OR 上海 OR 北京) -广告",
        {"title": "北京 深圳"},
        ("深圳", "北京"),
    ),
    "any of, excluded term hit": ("(深圳 OR 上海) -广告", {"title": "上海广告"}, None),
    "neither any of nor all of": (
        "(深圳 OR 上海) (新能源 OR 光伏)",
        {"title": "上海光伏"},
        ("上海", "光伏"),
    ),
    "too many terms for a table": (
        "深圳 OR 上海 OR 北京 OR 广州 OR 杭州 OR 南京",
        {"title": "杭州 深圳"},
        ("深圳", "杭州"),
    ),
    "boundary rule at the seam of title and content": (
        '"ai 芯片"',
        {"title": "said ai", "content": "芯片"},
        ("ai 芯片",),
    ),
    "boundary rule at the seam, glued": ('"ai 芯片"', {"title": "saidai", "content": "芯片"}, None),
    "title and text terms of one word": (
        "title:深圳 上海",
        {"title": "深圳", "content": "上海"},
        ("深圳", "上海"),
    ),
    "boundary inside a Chinese title": ("title:5g", {"title": "华为5g手机 5gx"}, ("5g",)),
    "boundary failing in a title": ("title:5g", {"title": "华为5gx手机"}, None),
}


@pytest.mark.parametrize(("query", "fields", "terms"), list(CASES.values()), ids=list(CASES))
def test_construct(
    entry: EntryFactory, query: str, fields: dict[str, Any], terms: tuple[str, ...] | None
) -> None:
    index = MatchIndex.build({"s": query})
    expected = [] if terms is None else [Hit("s", terms)]
    assert index.match(entry(**fields), "finews") == expected


def test_one_index_answers_for_every_subscription(entry: EntryFactory) -> None:
    index = MatchIndex.build(
        {
            "shenzhen": "深圳",
            "new-energy": "(新能源 OR 光伏 OR 储能) -广告",
            "ai": "AI",
            "hk": "title:港股",
            "no-ads": "-广告",
            "big": r"/\d+亿元/",
        }
    )
    story = entry("深圳光伏企业获AI订单", "<p>金额达12亿元</p>")
    advert = entry("广告：光伏板促销", "")
    assert index.match(story, "finews") == [
        Hit("shenzhen", ("深圳",)),
        Hit("new-energy", ("光伏",)),
        Hit("ai", ("AI",)),
        Hit("no-ads", ()),
        Hit("big", (r"/\d+亿元/",)),
    ]
    assert index.match(advert, "finews") == []


def test_exclusion_binds_to_its_neighbour_not_to_the_whole_or(entry: EntryFactory) -> None:
    # The grammar gives AND (juxtaposition) precedence over OR: docs/architecture.md's example
    # `新能源 OR 光伏 OR 储能 -广告` excludes adverts only from 储能.
    index = MatchIndex.build({"s": "新能源 OR 光伏 OR 储能 -广告"})
    assert index.match(entry("广告：光伏板促销"), "x") == [Hit("s", ("光伏",))]
    assert index.match(entry("广告：储能"), "x") == []


def test_same_text_in_two_fields_is_two_terms(entry: EntryFactory) -> None:
    index = MatchIndex.build({"t": "title:深圳", "c": "content:深圳"})
    assert [h.subscription for h in index.match(entry("深圳", "上海"), "x")] == ["t"]
    assert [h.subscription for h in index.match(entry("上海", "深圳"), "x")] == ["c"]


def test_empty_index_matches_nothing(entry: EntryFactory) -> None:
    assert MatchIndex.build({}).match(entry("深圳"), "finews") == []


def test_bad_query_names_its_subscription() -> None:
    with pytest.raises(QueryError) as caught:
        MatchIndex.build({"good": "深圳", "bad": "深圳 (光伏", "worse": "("})
    assert (caught.value.subscription, caught.value.position) == ("bad", 3)
    assert caught.value.message == "unbalanced parenthesis"


def test_keyword_list_from_config(entry: EntryFactory) -> None:
    config = SubscriptionConfig(name="kw", keywords=["新能源", "光伏", "ＡＩ 芯片"])
    index = MatchIndex.build({config.name: config.query_text})
    assert index.match(entry("光伏与AI 芯片"), "x") == [Hit("kw", ("光伏", "ＡＩ 芯片"))]
    assert index.match(entry("新 能源"), "x") == []


def test_a_batch_matches_as_its_entries_one_by_one(entry: EntryFactory) -> None:
    # Tabled queries come from the batch's matrix product, the regex one is evaluated on
    # its own: the results still merge in build order, across more than one batch.
    index = MatchIndex.build(
        {
            "any": "(深圳 OR 上海) -广告",
            "all": "深圳 新能源 -广告",
            "regex": r"/\d+亿/ 深圳",
            "none": "-广告",
            "other": "(深圳 OR 上海) 光伏",
        }
    )
    titles = ["深圳新能源光伏 5亿", "广告 深圳 5亿", "上海", "", "新能源"] * 60
    entries = [(entry(title), "x") for title in titles]
    batch = index.match_many(entries)
    assert batch == [index.match(e, source) for e, source in entries]
    assert [[h.subscription for h in hits] for hits in batch[:5]] == [
        ["any", "all", "regex", "none", "other"],
        ["regex"],
        ["any", "none"],
        ["none"],
        ["none"],
    ]


class CountingRegex:
    """A real compiled regex that counts its searches."""

    def __init__(self, regex: Any) -> None:
        self.regex = regex
        self.searches = 0

    def search(self, text: str) -> Any:
        self.searches += 1
        return self.regex.search(text)


def test_regex_runs_only_when_the_rest_of_the_query_needs_it(entry: EntryFactory) -> None:
    index = MatchIndex.build({"s": r"深圳 /\d+亿/ OR 上海 /\d+亿/"})
    regexes = index._regexes  # the index's own compiled regexes, observed
    [(term_id, (field, regex))] = regexes.items()
    counting = CountingRegex(regex)
    regexes[term_id] = (field, counting)  # type: ignore[index]
    assert index.match(entry("北京 5亿"), "x") == []
    assert counting.searches == 0
    assert index.match(entry("深圳 上海 5亿"), "x") == [Hit("s", ("深圳", r"/\d+亿/", "上海"))]
    assert counting.searches == 1


def test_a_regex_alone_runs_only_where_its_literal_occurs(entry: EntryFactory) -> None:
    index = MatchIndex.build({"s": r"/深圳\d+/"})
    [(term_id, (field, regex))] = index._regexes.items()
    counting = CountingRegex(regex)
    index._regexes[term_id] = (field, counting)  # type: ignore[index]
    assert index.match_many([(entry("上海 5"), "x"), (entry("北京"), "x")]) == [[], []]
    assert counting.searches == 0
    assert index.match(entry("深圳 5"), "x") == []
    assert index.match(entry("深圳5号"), "x") == [Hit("s", (r"/深圳\d+/",))]
    assert counting.searches == 2


def test_a_query_of_many_terms_is_evaluated_in_its_batch(entry: EntryFactory) -> None:
    # Six terms: too many for a truth table, so the product only wakes it.
    index = MatchIndex.build({"few": "深圳", "many": "a OR b OR c OR d OR e OR 深圳 -广告"})
    found = index.match_many([(entry("深圳"), "x"), (entry("广告 深圳"), "x"), (entry("e"), "x")])
    assert found == [
        [Hit("few", ("深圳",)), Hit("many", ("深圳",))],
        [Hit("few", ("深圳",))],
        [Hit("many", ("e",))],
    ]
    assert index.match_many([]) == []
