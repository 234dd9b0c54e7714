"""Which literal terms occur in a document: boundary-marked text scanned by Aho–Corasick.

One automaton per field (ahocorasick_rs, Rust's aho-corasick crate: its contiguous
automaton is compact enough to stay in the CPU caches between documents). With 10,000
subscriptions an entry hits ~150 distinct terms at ~330 places; every place costs a
Python tuple, the largest part of a scan (bench/match.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt
from ahocorasick_rs import BytesAhoCorasick, Implementation
from scipy.sparse import csr_array

from feedsvc.match.normalize import normalize, normalize_short
from feedsvc.match.query import Field
from feedsvc.model import EntryData

_chain = chain.from_iterable
_first = itemgetter(0)
_T = TypeVar("_T")
_Int32 = npt.NDArray[np.int32]
_Int64 = npt.NDArray[np.int64]

#: Put around every run of ASCII letters and digits of the text and of the terms before
#: scanning. ``normalize`` deletes it and produces it from no other character (checked
#: over every code point), so it never occurs in normalised text on its own.
_MARK = "\u200b"
#: Bytes scanned at a time (see ``_distinct``): more than most entries have.
_WINDOW = 16 << 10
_ALNUM_RUN = re.compile("([A-Za-z0-9]+)")


def mark_boundaries(text: str) -> str:
    """``text`` with ``_MARK`` before and after each maximal run of ASCII letters and digits.

    This turns the boundary rule (docs/architecture.md) into plain substring search: a term starting
    with a letter or digit occurs with no letter or digit before it exactly where its
    marked form, which starts with the mark, occurs in the marked text; the same at its
    end. Chinese text gains no marks, so ``深圳`` still occurs in ``深圳市``.
    """
    parts = _ALNUM_RUN.split(text)
    return text if len(parts) == 1 else _MARK.join(parts)


def plain_chunks(text: str) -> list[str]:
    """``text`` cut where ASCII letters and digits meet other characters.

    Each chunk occurs unchanged in the marked form of any text that contains ``text``
    (marks only ever stand between such a pair): needles for plain substring search.
    """
    return [chunk for chunk in _ALNUM_RUN.split(text) if chunk]


class Document:
    """One entry's fields, each normalised the first time a term or regex needs it."""

    __slots__ = ("_encoded", "_entry", "_marked", "_source", "_texts")

    def __init__(self, entry: EntryData, source: str) -> None:
        self._entry = entry
        self._source = source
        self._texts: dict[Field, str] = {}
        self._encoded: dict[Field, bytes] = {}
        self._marked: dict[Field, bytes] = {}

    def field(self, name: Field) -> str:
        """The normalised field (what regexes read)."""
        return _memo(self._texts, name, self._normalize)

    def utf8(self, name: Field) -> bytes:
        """The normalised field as UTF-8 (what RE2 reads)."""
        return _memo(self._encoded, name, self._encode)

    def marked(self, name: Field) -> bytes:
        """The normalised field, boundary-marked, as UTF-8 (what the automata read)."""
        return _memo(self._marked, name, self._mark)

    def _encode(self, name: Field) -> bytes:
        return self.field(name).encode("utf-8")

    def _mark(self, name: Field) -> bytes:
        if name == "text":
            # Marks never span the joining space: the title's and content's marked
            # bytes joined are the text's, without marking the body twice.
            return b" ".join(
                part for part in (self.marked("title"), self.marked("content")) if part
            )
        return mark_boundaries(self.field(name)).encode("utf-8")

    def _normalize(self, name: Field) -> str:
        entry = self._entry
        if name == "title":
            return normalize(entry.title)
        if name == "content":
            return normalize(entry.content or entry.summary)
        if name == "text":
            # Joined after normalising (not normalised joined): the same text, and the
            # title and content are not normalised twice.
            return " ".join(part for part in (self.field("title"), self.field("content")) if part)
        if name == "category":
            return _join_values(entry.categories)
        if name == "author":
            return _join_values(entry.authors)
        if name == "source":
            return normalize_short(self._source)
        return normalize(entry.link or "")


def _memo(cache: dict[Field, _T], name: Field, compute: Callable[[Field], _T]) -> _T:
    value = cache.get(name)
    if value is None:
        value = cache[name] = compute(name)
    return value


def _join_values(values: Sequence[str]) -> str:
    # "\n" never occurs in normalised text or terms, so no term matches across two values,
    # and it is a boundary for the boundary rule.
    return "\n".join(normalize_short(value) for value in values)


class Pattern(NamedTuple):
    """What to look for in a field: a term's id and the text that stands for it in the
    marked field (``mark_boundaries`` of its normalised text, or a plain chunk)."""

    term_id: int
    field: Field
    needle: str


@dataclass(frozen=True)
class _FieldScan:
    field: Field
    automaton: BytesAhoCorasick
    #: Column of needle 0; needle i is column ``offset + i``.
    offset: int
    #: How far windows overlap: one byte less than the longest needle.
    overlap: int


class Scanner:
    """Finds which terms occur in documents, as a documents × columns matrix.

    Column 0 is hit by every document ("always"); then each field with terms has one
    automaton, its needle ``i`` a column. The text field is scanned whole (title,
    space, content): phrases across the join are found like any other.
    """

    always_column = 0

    def __init__(self, patterns: Sequence[Pattern]) -> None:
        by_field: dict[Field, dict[str, list[int]]] = {}
        for pattern in patterns:
            by_field.setdefault(pattern.field, {}).setdefault(pattern.needle, []).append(
                pattern.term_id
            )
        #: The term ids of each column (terms whose needles are equal share one).
        columns: list[list[int]] = [[]]
        self._fields: list[_FieldScan] = []
        for field, needles in by_field.items():
            automaton = BytesAhoCorasick(
                [needle.encode("utf-8") for needle in needles],
                implementation=Implementation.ContiguousNFA,
            )
            overlap = max(len(needle.encode("utf-8")) for needle in needles) - 1
            self._fields.append(_FieldScan(field, automaton, len(columns), overlap))
            columns += needles.values()
        self.column_count = len(columns)
        self.column_of = {term_id: i for i, ids in enumerate(columns) for term_id in ids}
        self._term_of = np.array([ids[0] if ids else -1 for ids in columns], np.int64)
        #: The other terms of columns that stand for more than one.
        self._shared = {i: ids[1:] for i, ids in enumerate(columns) if len(ids) > 1}

    def matrix(self, documents: Sequence[Document]) -> csr_array:
        """The documents × columns matrix of the terms that occur (1 where one does).

        All fields are normalised first, then each automaton scans every document in
        turn, so that it stays in the CPU caches.
        """
        count = len(documents)
        texts = [[document.marked(f.field) for document in documents] for f in self._fields]
        found = [_scan(f, marked) for f, marked in zip(self._fields, texts, strict=True)]
        sizes = sum((field_sizes for field_sizes, _ in found), np.ones(count, np.int64))
        indptr = np.concatenate(([0], np.cumsum(sizes)))
        indices = np.empty(int(indptr[-1]), np.int32)
        indices[indptr[:-1]] = self.always_column
        # Each row: "always", then each field's columns.
        starts = indptr[:-1] + 1
        for field_sizes, columns in found:
            indices[_places(starts, field_sizes)] = columns
            starts = starts + field_sizes
        ones = np.ones(len(indices), np.int32)
        return csr_array((ones, indices, indptr), shape=(count, self.column_count))

    def term_ids(self, documents: csr_array, row: int) -> set[int]:
        """The ids of the terms that occur in document ``row`` of a ``matrix``."""
        columns = documents.indices[documents.indptr[row] : documents.indptr[row + 1]]
        found = set(self._term_of[columns].tolist())
        found.discard(-1)
        for column in self._shared.keys() & set(columns.tolist()):
            found.update(self._shared[column])
        return found


def _scan(field_scan: _FieldScan, texts: Sequence[bytes]) -> tuple[_Int64, _Int32]:
    """How many columns of the field each text hits, and those columns, text by text."""
    found = [_distinct(field_scan, text) for text in texts]
    sizes = np.fromiter(map(len, found), np.int64, len(found))
    columns = np.fromiter(_chain(found), np.int32, int(sizes.sum())) + np.int32(field_scan.offset)
    return sizes, columns


def _distinct(field_scan: _FieldScan, text: bytes) -> set[int]:
    """The indexes of the needles that occur in ``text``.

    A long text is scanned in overlapping windows: the automaton lists every place, and
    a hostile text that repeats a short term would otherwise make one list of millions.
    """
    find = field_scan.automaton.find_matches_as_indexes
    size = _WINDOW + field_scan.overlap
    if len(text) <= size:
        return set(map(_first, find(text, overlapping=True)))
    found: set[int] = set()
    for start in range(0, len(text), _WINDOW):
        found.update(map(_first, find(text[start : start + size], overlapping=True)))
    return found


def _places(starts: _Int64, sizes: _Int64) -> _Int64:
    """Positions ``starts[i]``, ``starts[i] + 1``, … (``sizes[i]`` of them) for each i, in turn."""
    ends = np.cumsum(sizes)
    total = int(ends[-1]) if len(ends) else 0
    return np.repeat(starts - (ends - sizes), sizes) + np.arange(total)
