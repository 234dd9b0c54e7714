"""Matcher benchmark: the compiled index against a naive per-subscription loop and normalisation.

10,000 subscriptions are drawn (seeded) from the corpus vocabulary (every Chinese 2–4-gram
and ASCII word of the corpus): 1–3 terms joined by AND or OR, some with a field, some with
an exclusion, a few pure negations and regexes. The corpus entries are repeated to at
least 20 MB of text (title + content, UTF-8). The naive loop is timed on a sample and its
MB/s extrapolated, as it would take many minutes.

The repetition only makes the text large enough to time: nothing in the matcher caches
by document text or entry, so every repeated entry is normalised, scanned and evaluated
again, as a new entry would be. The index matches one copy of the corpus (one parse of
all.xml, 104 entries) per ``match_many`` call, as a parse worker matches a feed's entries.

Every term occurs in the corpus, so with only 104 distinct entries each subscription
matches at least 1% of them: an entry matches about 127 of the 10,000 and hits about 150
distinct terms at about 330 places. A second run ("sparse") makes 49 in 50 terms absent from
the corpus (a "#" appended), the common case of many niche subscriptions, to show the
index's cost when few subscriptions match.

Run from the repository root: ``.venv/bin/python bench/match.py``.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import feedparser
import nh3

from feedsvc.match import And, MatchIndex, Not, Or, Query, Term, normalize, parse_query
from feedsvc.match.normalize import normalize_short, occurrences
from feedsvc.model import EntryData

CORPUS = Path("tests/data/corpus")
SUBSCRIPTIONS = 10_000
TARGET_BYTES = 20_000_000
NAIVE_SAMPLE = 300
#: Runs of the index and of normalisation; the best one counts.
REPEAT = 3
SEED = 20220531

Entry = tuple[EntryData, str]


def load_entries() -> list[Entry]:
    """The corpus entries with sanitised content, each with its source group as source."""
    groups = dict(
        line.split("\t")[1::2] for line in (CORPUS / "index.tsv").read_text().splitlines()[1:]
    )
    feed = feedparser.parse((CORPUS / "all.xml").read_bytes())
    return [
        (
            EntryData(
                id=e.id,
                key=e.id,
                title=e.title,
                link=e.link,
                published=None,
                updated=None,
                authors=tuple(a.get("name", "") for a in e.get("authors", [])),
                categories=tuple(t.term for t in e.get("tags", [])),
                content=nh3.clean(e.content[0].value),
            ),
            groups.get(e.id, "finance"),
        )
        for e in feed.entries
    ]


def vocabulary(entries: Sequence[Entry]) -> list[str]:
    """Every Chinese 2–4-gram and ASCII word of the corpus, sorted."""
    words: set[str] = set()
    for entry, _ in entries:
        text = normalize(entry.title) + " " + normalize(entry.content)
        words.update(re.findall(r"[a-z][a-z0-9]+", text))
        for run in re.findall(r"[\u4e00-\u9fff]{2,}", text):
            words.update(run[i : i + n] for n in (2, 3, 4) for i in range(len(run) - n + 1))
    return sorted(words)


def sparse(words: Sequence[str]) -> list[str]:
    """The vocabulary with 49 in 50 words made absent from the corpus."""
    return [word if i % 50 == 0 else f"{word}#" for i, word in enumerate(words)]


def make_queries(words: Sequence[str], sources: Sequence[str]) -> dict[str, str]:
    rng = random.Random(SEED)
    queries = {}
    for n in range(SUBSCRIPTIONS):
        queries[f"s{n}"] = make_query(rng, words, sources, n)
    return queries


def make_query(rng: random.Random, words: Sequence[str], sources: Sequence[str], n: int) -> str:
    if n % 2000 == 7:
        return f"-{rng.choice(words)}"
    if n % 2000 == 11:
        return rf"/{rng.choice(words)}\d+/"
    terms = [rng.choice(words) for _ in range(rng.choice((1, 1, 2, 2, 3)))]
    roll = rng.random()
    if roll < 0.10:
        terms[0] = f"title:{terms[0]}"
    elif roll < 0.15:
        terms[0] = f"content:{terms[0]}"
    elif roll < 0.18:
        terms.append(f"source:{rng.choice(sources)}")
    query = (" OR " if rng.random() < 0.4 else " ").join(terms)
    if rng.random() < 0.2:
        query = f"({query}) -{rng.choice(words)}"
    return query


def naive_match(queries: dict[str, Query], entry: EntryData, source: str) -> list[str]:
    """Each subscription on its own: normalise the fields once, then test every query."""
    fields = {
        "title": normalize(entry.title),
        "content": normalize(entry.content or entry.summary),
        "source": normalize_short(source),
        "category": "\n".join(normalize_short(c) for c in entry.categories),
    }
    fields["text"] = f"{fields['title']} {fields['content']}".strip()
    return [name for name, query in queries.items() if naive_eval(query, fields)]


def naive_eval(query: Query, fields: dict[str, str]) -> bool:
    if isinstance(query, Term):
        if query.is_regex:
            return re.search(query.normalized, fields[query.field], re.IGNORECASE) is not None
        return next(occurrences(fields[query.field], query.normalized), None) is not None
    if isinstance(query, Not):
        return not naive_eval(query.operand, fields)
    if isinstance(query, And):
        return all(naive_eval(q, fields) for q in query.operands)
    assert isinstance(query, Or)
    return any(naive_eval(q, fields) for q in query.operands)


def timed(run: Callable[[], object], repeat: int = 1) -> float:
    """The best of ``repeat`` wall-clock runs: other processes only ever add time."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def entry_bytes(entry: EntryData) -> int:
    return len(entry.title.encode()) + len((entry.content or entry.summary).encode())


def main() -> None:
    corpus = load_entries()
    words = vocabulary(corpus)
    per_pass = sum(entry_bytes(entry) for entry, _ in corpus)
    entries = corpus * -(-TARGET_BYTES // per_pass)
    total = len(entries) * per_pass // len(corpus)
    print(f"corpus: {len(corpus)} entries, {len(words)} vocabulary terms; repeated to")
    print(f"  {len(entries)} entries, {total / 1e6:.1f} MB of title+content text")
    print("  (repeated only for size: no cache by text or entry, each is matched afresh)")

    def run_normalize() -> None:
        for entry, _ in entries:
            normalize(entry.title)
            normalize(entry.content or entry.summary)

    t_norm = timed(run_normalize, REPEAT)
    print(f"(c) normalisation:     {total / t_norm / 1e6:8.2f} MB/s  ({t_norm:.2f} s)")
    sources = sorted({source for _, source in corpus})
    for label, vocabulary_used in (("corpus", words), ("sparse", sparse(words))):
        print(f"== {label} vocabulary")
        queries = make_queries(vocabulary_used, sources)
        run_workload(queries, entries, total, t_norm, len(corpus))


def run_workload(
    queries: dict[str, str], entries: Sequence[Entry], total: int, t_norm: float, feed_size: int
) -> None:
    """Time the index over all entries and the naive loop over a sample; print the figures."""
    build_start = time.perf_counter()
    index = MatchIndex.build(queries)
    print(f"build: {len(queries)} subscriptions in {time.perf_counter() - build_start:.2f} s")
    matches = 0

    feeds = [entries[i : i + feed_size] for i in range(0, len(entries), feed_size)]

    def run_index() -> None:
        nonlocal matches
        matches = sum(len(hits) for feed in feeds for hits in index.match_many(feed))

    sample = entries[:NAIVE_SAMPLE]
    parsed = {name: parse_query(text) for name, text in queries.items()}
    sample_bytes = sum(entry_bytes(entry) for entry, _ in sample)
    t_index = timed(run_index, REPEAT)
    t_naive = timed(lambda: [naive_match(parsed, entry, source) for entry, source in sample])
    check_agreement(index, parsed, sample)

    index_mbs, naive_mbs = total / t_index, sample_bytes / t_naive
    print(f"matches: {matches / len(entries):.1f} subscriptions per entry on average")
    print(
        f"(a) index:             {index_mbs / 1e6:8.2f} MB/s  ({t_index:.2f} s, "
        f"{t_index / len(entries) * 1e6:.0f} us per entry)"
    )
    print(
        f"(b) naive loop:        {naive_mbs / 1e6:8.2f} MB/s  "
        f"({t_naive:.2f} s on a sample of {len(sample)} entries, extrapolated)"
    )
    print(f"index vs naive:        {index_mbs / naive_mbs:8.1f}x faster   (target >= 30x)")
    print(f"index / normalisation: {t_index / t_norm:8.2f}x the time (target <= 2x)")


def check_agreement(index: MatchIndex, parsed: dict[str, Query], sample: Sequence[Entry]) -> None:
    for entry, source in sample:
        fast = [hit.subscription for hit in index.match(entry, source)]
        if fast != naive_match(parsed, entry, source):
            raise SystemExit(f"index and naive loop disagree on {entry.id}")


if __name__ == "__main__":
    main()
