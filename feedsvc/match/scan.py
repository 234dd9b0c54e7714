"""Which literal terms occur in a document: boundary-marked text scanned by Aho–Corasick."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from itertools import chain
from operator import attrgetter, invert, itemgetter
from typing import Any, NamedTuple

import ahocorasick

from feedsvc.match.normalize import normalize, normalize_short
from feedsvc.match.query import Field
from feedsvc.model import EntryData

_chain = chain.from_iterable
_second = itemgetter(1)

#: Put around every run of ASCII letters and digits of the text and of the terms before
#: scanning. ``normalize`` deletes it and produces it from no other character (checked
#: over every code point), so it never occurs in normalised text on its own.
_MARK = "\u200b"
_ALNUM_RUN = re.compile("([A-Za-z0-9]+)")
#: The fields scanned as one body: title and content separately, text as their union plus
#: the occurrences across the space that joins them.
_BODY: frozenset[Field] = frozenset({"title", "content", "text"})


def mark_boundaries(text: str) -> str:
    """``text`` with ``_MARK`` before and after each maximal run of ASCII letters and digits.

    This turns the boundary rule (DESIGN.md) into plain substring search: a term starting
    with a letter or digit occurs with no letter or digit before it exactly where its
    marked form, which starts with the mark, occurs in the marked text; the same at its
    end. Chinese text gains no marks, so ``深圳`` still occurs in ``深圳市``.
    """
    parts = _ALNUM_RUN.split(text)
    return text if len(parts) == 1 else _MARK.join(parts)


def _units(text: str) -> str:
    """``text`` as its UTF-8 bytes, one character per byte, for the automaton.

    pyahocorasick finds a node's child by a linear search; thousands of distinct Chinese
    first characters make every step from the root slow. Over bytes no node has more
    than 256 children (the root about ten), which makes scanning several times faster.
    UTF-8 is self-synchronising, so a term's bytes only ever match at character starts.
    """
    return text.encode("utf-8").decode("latin-1")


class Document:
    """One entry's fields, each normalised the first time a term or regex needs it."""

    __slots__ = ("_encoded", "_entry", "_source", "_texts", "_units")

    def __init__(self, entry: EntryData, source: str) -> None:
        self._entry = entry
        self._source = source
        self._texts: dict[Field, str] = {}
        self._units: dict[Field, str] = {}
        self._encoded: dict[Field, bytes] = {}

    def field(self, name: Field) -> str:
        """The normalised field (what regexes read)."""
        text = self._texts.get(name)
        if text is None:
            text = self._texts[name] = self._normalize(name)
        return text

    def utf8(self, name: Field) -> bytes:
        """The normalised field as UTF-8 (what RE2 reads fastest)."""
        encoded = self._encoded.get(name)
        if encoded is None:
            encoded = self._encoded[name] = self.field(name).encode("utf-8")
        return encoded

    def units(self, name: Field) -> str:
        """The normalised, boundary-marked field as UTF-8 units (what automata read)."""
        units = self._units.get(name)
        if units is None:
            units = self._units[name] = _units(mark_boundaries(self.field(name)))
        return units

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


def _join_values(values: Sequence[str]) -> str:
    # "\n" never occurs in normalised text or terms, so no term matches across two values,
    # and it is a boundary for the boundary rule.
    return "\n".join(normalize_short(value) for value in values)


class LiteralTerm(NamedTuple):
    """A literal term to look for: its id, its field and its normalised text."""

    term_id: int
    field: Field
    normalized: str


class Scanner:
    """Finds the ids of the literal terms that occur in a document.

    Title, content and text terms share one automaton: the title and the content are
    each scanned once, and a needle found in one of them hits that field's term and the
    text's. Only a needle with a space can occur across the space that joins them in the
    text field, so a window around that seam is scanned for the text's terms. Every
    other field has its own automaton, scanned only when it has terms.

    A needle's value is its term's id when that is all it stands for (one term of the
    text, or of another field); a body needle that also stands for a title or content
    term has the value ``~i``, and ``_regions[i]`` says which terms it hits where.
    """

    def __init__(self, terms: Iterable[LiteralTerm]) -> None:
        body: dict[str, dict[Field, int]] = {}
        others: dict[Field, dict[str, int]] = {}
        for term in terms:
            needle = _units(mark_boundaries(term.normalized))
            if term.field in _BODY:
                body.setdefault(needle, {})[term.field] = term.term_id
            else:
                others.setdefault(term.field, {})[needle] = term.term_id
        self._regions: list[_Region] = []
        self._body = _automaton({needle: self._value(ids) for needle, ids in body.items()})
        self._special = frozenset(~i for i in range(len(self._regions)))
        self._seam = max((len(n) for n, f in body.items() if " " in n and "text" in f), default=0)
        self._others = [(field, _automaton(needles)) for field, needles in others.items()]

    def _value(self, ids: dict[Field, int]) -> int:
        """A body needle's value, given its term id in each field that has it."""
        if list(ids) == ["text"]:
            return ids["text"]
        parts: tuple[tuple[Field, ...], ...] = (("title", "text"), ("content", "text"), ("text",))
        self._regions.append(_Region(*(_ids(ids, fields) for fields in parts)))
        return ~(len(self._regions) - 1)

    def scan(self, document: Document) -> set[int]:
        """The ids of the terms that occur in their field of ``document``."""
        hits: set[int] = set()
        if self._body is not None:
            self._scan_body(document, hits)
        for field, automaton in self._others:
            hits.update(map(_second, automaton.iter(document.units(field))))
        return hits

    def _scan_body(self, document: Document, hits: set[int]) -> None:
        title, content = document.units("title"), document.units("content")
        self._collect(title, _in_title, hits)
        self._collect(content, _in_content, hits)
        if self._seam and title and content:
            seam = f"{title[-self._seam :]} {content[: self._seam]}"
            self._collect(seam, _across, hits)

    def _collect(
        self, units: str, part: Callable[[_Region], tuple[int, ...]], hits: set[int]
    ) -> None:
        """Add the ids of the terms that ``units``, one part of the body, hits."""
        found = set(map(_second, self._body.iter(units))) if units else set()
        special = found & self._special
        found -= special
        hits |= found
        hits.update(_chain(map(part, map(self._regions.__getitem__, map(invert, special)))))


class _Region(NamedTuple):
    """The term ids a body needle hits when found in the title, in the content, or across."""

    title: tuple[int, ...]
    content: tuple[int, ...]
    across: tuple[int, ...]


_in_title = attrgetter("title")
_in_content = attrgetter("content")
_across = attrgetter("across")


def _ids(terms: dict[Field, int], fields: Sequence[Field]) -> tuple[int, ...]:
    return tuple(terms[f] for f in fields if f in terms)


def _automaton(needles: dict[str, int]) -> Any:
    """An automaton of ``needles`` and their values; None when there are none."""
    if not needles:
        return None
    automaton = ahocorasick.Automaton()
    for needle, value in needles.items():
        automaton.add_word(needle, value)
    automaton.make_automaton()
    return automaton
