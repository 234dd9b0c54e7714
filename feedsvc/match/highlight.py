"""Where matched terms occur in the original title and content: highlight spans and snippets."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import Any

from feedsvc.errors import QueryError
from feedsvc.match.normalize import Normalized, normalize, normalize_mapped, occurrences, plain_text
from feedsvc.match.query import compile_regex
from feedsvc.model import Highlighted

ELLIPSIS = "…"


def highlight(text: str, terms: Sequence[str]) -> Highlighted:
    """Spans ``[start, end)`` of plain ``text`` where a term matches, as the matcher sees it.

    ``terms`` are as in ``Hit.terms``: words and phrases are normalised and found under the
    boundary rule, so ``电池`` highlights ``電池`` and ``AI`` highlights ``ＡＩ``; a term
    written ``/…/`` is a regex run on the normalised text. Overlapping spans are merged.
    """
    mapped = normalize_mapped(text)
    spans = [span for term in terms for span in _term_spans(mapped, term)]
    return Highlighted(text, _merge(spans))


def snippet(html: str, terms: Sequence[str], width: int = 160) -> Highlighted:
    """About ``width`` characters of the plain text of ``html`` around the first hit.

    Starts a quarter of ``width`` before the first hit (at the start when nothing hits);
    "…" marks each end that was cut. Spans are those of ``highlight``, clipped.
    """
    marked = highlight(plain_text(html), terms)
    text = marked.text
    first = marked.spans[0][0] if marked.spans else 0
    start = max(0, min(first - width // 4, len(text) - width))
    end = min(len(text), start + width)
    prefix = ELLIPSIS if start > 0 else ""
    suffix = ELLIPSIS if end < len(text) else ""
    shift = len(prefix) - start
    spans = tuple(
        (max(s, start) + shift, min(e, end) + shift)
        for s, e in marked.spans
        if s < end and e > start
    )
    return Highlighted(prefix + text[start:end] + suffix, spans)


def _term_spans(mapped: Normalized, term: str) -> Iterator[tuple[int, int]]:
    regex = _as_regex(term)
    if regex is not None:
        for m in regex.finditer(mapped.text):
            if m.end() > m.start():
                yield mapped.original_span(m.start(), m.end())
        return
    needle = normalize(term)
    if needle:
        for start in occurrences(mapped.text, needle):
            yield mapped.original_span(start, start + len(needle))


@lru_cache(maxsize=1024)
def _as_regex(term: str) -> Any:
    """The compiled regex of a ``/…/`` term; None for words, phrases and invalid patterns."""
    if len(term) < 3 or not (term.startswith("/") and term.endswith("/")):
        return None
    try:
        return compile_regex(term[1:-1], 0)
    except QueryError:
        # A quoted phrase that merely looks like /…/: highlight it as text.
        return None


def _merge(spans: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return tuple(merged)
