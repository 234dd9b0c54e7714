"""Properties: the index agrees with a per-query evaluator; the mapped twin with normalize."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from feedsvc.match import (
    And,
    Hit,
    MatchIndex,
    Not,
    Or,
    Query,
    Term,
    highlight,
    iter_terms,
    normalize,
    parse_query,
)
from feedsvc.match.normalize import normalize_mapped, occurrences
from feedsvc.match.scan import mark_boundaries
from feedsvc.model import EntryData

CHINESE = ["深圳", "圳", "深圳市", "新能源", "能源", "电池", "電池", "广告", "港股"]
ENGLISH = ["ai", "AI", "ＡＩ", "said", "5g", "a b"]
WORDS = CHINESE + ENGLISH
REGEXES = [r"\d+亿", r"ai\d", r"深.市", r"AI\d", r"1亿", r"(深圳|港股)市?", r"能源|电池"]
# Pieces of documents: the words, glue that tests markup, entities and zero-width handling.
PIECES = [*WORDS, "", " ", "<b>", "</b>", "<p>", "&amp;", "&#28145;", "\u200d", "x", "1", "亿"]
FIELDS = ["", "", "", "title:", "content:", "category:", "source:"]

PROPERTY = settings(max_examples=200, deadline=None)


def _render(node: Any) -> str:
    """Query text for a generated tree; compound operands are parenthesised."""
    kind = node[0]
    if kind == "term":
        return node[1] + (f'"{node[2]}"' if " " in node[2] else node[2])
    if kind == "regex":
        return f"{node[1]}/{node[2]}/"
    if kind == "not":
        return "-" + _wrap(node[1])
    joiner = " OR " if kind == "or" else " "
    return joiner.join(_wrap(child) for child in node[1])


def _wrap(node: Any) -> str:
    return _render(node) if node[0] in ("term", "regex") else f"({_render(node)})"


leaves = st.one_of(
    st.tuples(st.just("term"), st.sampled_from(FIELDS), st.sampled_from(WORDS)),
    st.tuples(st.just("regex"), st.sampled_from(FIELDS), st.sampled_from(REGEXES)),
)
trees = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.tuples(st.just("not"), children),
        st.tuples(st.sampled_from(["and", "or"]), st.lists(children, min_size=2, max_size=3)),
    ),
    max_leaves=6,
)
texts = st.lists(st.sampled_from(PIECES), max_size=12).map("".join)
entries = st.builds(
    lambda title, content, categories: EntryData(
        id="e",
        key="e",
        title=title,
        link=None,
        published=None,
        updated=None,
        content=content,
        categories=tuple(categories),
    ),
    texts,
    texts,
    st.lists(st.sampled_from(["港股", "深圳", "ai"]), max_size=2),
)


def reference_fields(entry: EntryData, source: str) -> dict[str, str]:
    title, content = normalize(entry.title), normalize(entry.content or entry.summary)
    return {
        "title": title,
        "content": content,
        "text": " ".join(part for part in (title, content) if part),
        "category": "\n".join(normalize(c) for c in entry.categories),
        "source": normalize(source),
    }


def reference_present(term: Term, text: str) -> bool:
    if term.is_regex:
        return re.search(term.normalized, text, re.IGNORECASE) is not None
    before = r"(?<![A-Za-z0-9])" if re.match(r"[A-Za-z0-9]", term.normalized[0]) else ""
    after = r"(?![A-Za-z0-9])" if re.match(r"[A-Za-z0-9]", term.normalized[-1]) else ""
    return re.search(before + re.escape(term.normalized) + after, text) is not None


def reference_eval(query: Query, fields: dict[str, str]) -> tuple[bool, list[Term]]:
    """The matching semantics of docs/architecture.md applied to one query; the terms
    of the true branches."""
    if isinstance(query, Term):
        present = reference_present(query, fields[query.field])
        return present, [query] if present else []
    if isinstance(query, Not):
        return not reference_eval(query.operand, fields)[0], []
    results = [reference_eval(operand, fields) for operand in query.operands]
    if isinstance(query, And):
        ok = all(r[0] for r in results)
        return ok, [t for r in results for t in r[1]] if ok else []
    assert isinstance(query, Or)
    return any(r[0] for r in results), [t for r in results if r[0] for t in r[1]]


def reference_match(queries: dict[str, str], entry: EntryData, source: str) -> list[Hit]:
    fields = reference_fields(entry, source)
    hits = []
    for name, text in queries.items():
        query = parse_query(text)
        ok, terms = reference_eval(query, fields)
        if ok:
            first_seen = {t.text: i for i, t in reversed(list(enumerate(iter_terms(query))))}
            hit_texts = sorted({t.text for t in terms}, key=first_seen.__getitem__)
            hits.append(Hit(name, tuple(hit_texts)))
    return hits


@PROPERTY
@given(
    st.lists(trees.map(_render), min_size=1, max_size=8),
    st.lists(entries, min_size=1, max_size=3),
    st.sampled_from(["finews", "港股"]),
)
def test_index_agrees_with_each_query_on_its_own(
    queries: list[str], documents: list[EntryData], source: str
) -> None:
    subscriptions = {f"s{i}": text for i, text in enumerate(queries)}
    index = MatchIndex.build(subscriptions)
    for document in documents:
        assert index.match(document, source) == reference_match(subscriptions, document, source)


unicode_texts = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "<b>",
                "</p>",
                "<br/>",
                "&amp;",
                "&#28145;",
                "&lt;",
                "\u200d",
                "\u00ad",
                "  ",
                "\n",
                "ß",
                "ﬁ",
                "e\u0301",
                "\u0301",
                "ᄀ",
                "ᅡ",
                "ＡＩ",
                "電池",
                "乾隆",
                "頭髮",
                "㈱",
                "Ⅻ",
            ]
        ),
        st.characters(codec="utf-8"),
    ),
    max_size=30,
).map("".join)


@PROPERTY
@given(unicode_texts)
def test_mapped_twin_is_normalize(original: str) -> None:
    mapped = normalize_mapped(original)
    assert mapped.text == normalize(original)
    assert len(mapped.starts) == len(mapped.ends) == len(mapped.text)
    assert all(
        0 <= s <= e <= len(original) for s, e in zip(mapped.starts, mapped.ends, strict=True)
    )
    assert list(mapped.starts) == sorted(mapped.starts)


@PROPERTY
@given(texts, st.sampled_from(WORDS))
def test_what_matches_a_title_is_highlighted_in_it(title: str, word: str) -> None:
    index = MatchIndex.build({"s": f'title:"{word}"'})
    hits = index.match(EntryData("e", "e", title, None, None, None), "x")
    spans = highlight(title, [word]).spans
    assert bool(hits) == bool(spans)
    for start, end in spans:
        assert normalize(word) in normalize(title[start:end])


marked_pieces = st.lists(
    st.sampled_from(["ai", "a", "5", "g", "深", "圳", " ", "-", "\n"]), max_size=10
)


@PROPERTY
@given(marked_pieces.map("".join), marked_pieces.filter(bool).map("".join))
def test_marked_substring_search_is_the_boundary_rule(text: str, term: str) -> None:
    expected = next(occurrences(text, term), None) is not None
    assert (mark_boundaries(term) in mark_boundaries(text)) == expected
