"""One compiled index of all subscriptions: Aho–Corasick per field, then the hit queries."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any, TypeGuard

import ahocorasick

from feedsvc.errors import QueryError
from feedsvc.match.normalize import needs_boundary, normalize, normalize_short, occurrences
from feedsvc.match.query import (
    And,
    Field,
    Not,
    Or,
    Query,
    Term,
    compile_regex,
    iter_terms,
    parse_query,
)
from feedsvc.model import EntryData

#: What an automaton key stands for: a term id, the term's field, and the normalised term
#: when an occurrence must still be confirmed there (boundary rule, or another field).
_Target = tuple[int, Field, str | None]
#: Title and content terms are looked for in the text field (title + " " + content), which
#: holds every occurrence of them, and confirmed in their own field: the body is scanned
#: once, not three times.
_SCANNED_AS: dict[Field, Field] = {"title": "text", "content": "text"}

#: Term ids hit in one document, and a lazy probe for regex term ids.
Hits = set[int]
RegexProbe = Callable[[int], bool]
#: Evaluates one (sub)query: the ordinals of the terms that made it true (see
#: ``_Subscription.displays``), in any order, or None when it is false.
Evaluator = Callable[[Hits, RegexProbe], tuple[int, ...] | None]

_chain = chain.from_iterable
_first = itemgetter(0)
_second = itemgetter(1)


@dataclass(frozen=True)
class Hit:
    """A subscription matched an entry."""

    subscription: str
    #: The query's terms that hit, as written in the query (phrases without quotes,
    #: regexes with their slashes), de-duplicated, in the order they first appear in the
    #: query. Only terms of the branches that made the query true count; empty when
    #: negations alone did (``-广告``).
    terms: tuple[str, ...]


class _Document:
    """One entry's fields, each normalised the first time a term or regex needs it."""

    __slots__ = ("_encoded", "_entry", "_source", "_texts")

    def __init__(self, entry: EntryData, source: str) -> None:
        self._entry = entry
        self._source = source
        self._texts: dict[str, str] = {}
        self._encoded: dict[str, bytes] = {}

    def field(self, name: Field) -> str:
        text = self._texts.get(name)
        if text is None:
            text = self._texts[name] = self._normalize(name)
        return text

    def utf8(self, name: Field) -> bytes:
        """The normalised field as UTF-8, what the automata and RE2 read."""
        encoded = self._encoded.get(name)
        if encoded is None:
            encoded = self._encoded[name] = self.field(name).encode("utf-8")
        return encoded

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


# Distinct Hit objects kept per subscription (one per combination of terms that hit).
_HIT_CACHE_SIZE = 32


@dataclass(frozen=True)
class _Subscription:
    name: str
    evaluate: Evaluator
    #: The query's terms as displayed, de-duplicated, in order of first appearance;
    #: evaluators return indexes into this tuple.
    displays: tuple[str, ...]
    hits: dict[tuple[int, ...], Hit]

    def hit(self, ordinals: tuple[int, ...]) -> Hit:
        """The Hit for these term ordinals; most entries hit the same few combinations."""
        hit = self.hits.get(ordinals)
        if hit is None:
            hit = Hit(self.name, tuple(self.displays[i] for i in sorted(set(ordinals))))
            if len(self.hits) < _HIT_CACHE_SIZE:
                self.hits[ordinals] = hit
        return hit


class MatchIndex:
    """Every subscription's query compiled into one index.

    Literal terms of all queries go into one Aho–Corasick automaton per field (title and
    content terms into the text field's); a document is scanned once per such field. Only
    subscriptions that one of their "trigger" terms hit are evaluated, plus those that can
    match without any term hit (pure negations, regex-only queries). Regexes run only when
    an evaluation needs them. A query that is one literal term needs no evaluation: its
    term hit, so it matched.
    """

    def __init__(
        self,
        subscriptions: Sequence[_Subscription],
        automata: Mapping[Field, Any],
        targets: Sequence[tuple[_Target, ...]],
        regexes: Mapping[int, tuple[Field, Any]],
        triggered: Sequence[tuple[int, ...]],
        certain: Sequence[tuple[tuple[int, Hit], ...]],
        always: Sequence[int],
    ) -> None:
        self._subscriptions = subscriptions
        self._automata = automata
        self._targets = targets
        self._to_confirm = frozenset(~i for i in range(len(targets)))
        self._regexes = regexes
        self._triggered = triggered
        self._certain = certain
        self._always = frozenset(always)

    @classmethod
    def build(cls, queries: Mapping[str, str]) -> MatchIndex:
        """Parse and compile ``{subscription name: query text}``.

        Raises:
            QueryError: for the first malformed query, with ``subscription`` set.
        """
        builder = _Builder()
        for name, text in queries.items():
            try:
                query = parse_query(text)
            except QueryError as e:
                e.subscription = name
                raise
            builder.add(name, query)
        return builder.index()

    def match(self, entry: EntryData, source: str) -> list[Hit]:
        """The subscriptions whose query matches ``entry`` (from ``source``), in build order."""
        document = _Document(entry, source)
        hits = self._scan(document)
        certain = list(_chain(map(self._certain.__getitem__, hits)))
        candidates = set(_chain(map(self._triggered.__getitem__, hits)))
        candidates |= self._always
        found = certain + self._evaluate(candidates, hits, self._regex_probe(document))
        found.sort(key=_first)
        return [hit for _, hit in found]

    def _evaluate(self, numbers: set[int], hits: Hits, probe: RegexProbe) -> list[tuple[int, Hit]]:
        found = []
        subscriptions = self._subscriptions
        for number in numbers:
            subscription = subscriptions[number]
            ordinals = subscription.evaluate(hits, probe)
            if ordinals is not None:
                found.append((number, subscription.hit(ordinals)))
        return found

    def _scan(self, document: _Document) -> Hits:
        hits: Hits = set()
        for scanned, automaton in self._automata.items():
            units = document.utf8(scanned).decode("latin-1")  # as _utf8_units does
            found = set(map(_second, automaton.iter(units)))
            for key in found & self._to_confirm:
                found.discard(key)
                for term_id, field, confirm in self._targets[~key]:
                    if confirm is None or _occurs(document.field(field), confirm):
                        hits.add(term_id)
            hits |= found
        return hits

    def _regex_probe(self, document: _Document) -> RegexProbe:
        results: dict[int, bool] = {}

        def probe(term_id: int) -> bool:
            if term_id not in results:
                field, regex = self._regexes[term_id]
                # Searching bytes spares RE2's wrapper mapping byte offsets to characters.
                results[term_id] = regex.search(document.utf8(field)) is not None
            return results[term_id]

        return probe


class _Builder:
    """Collects terms and compiled queries, then freezes them into a MatchIndex."""

    def __init__(self) -> None:
        self._ids: dict[tuple[Field, str, bool], int] = {}
        self._terms: list[Term] = []
        self._subscriptions: list[_Subscription] = []
        self._triggered: defaultdict[int, list[int]] = defaultdict(list)
        self._certain: defaultdict[int, list[tuple[int, Hit]]] = defaultdict(list)
        self._always: list[int] = []

    def add(self, name: str, query: Query) -> None:
        number = len(self._subscriptions)
        displays = tuple(dict.fromkeys(term.text for term in iter_terms(query)))
        compiler = _Compiler(self._id, {text: i for i, text in enumerate(displays)})
        self._subscriptions.append(_Subscription(name, compiler.compile(query), displays, {}))
        if _is_literal(query):
            self._certain[self._id(query)].append((number, Hit(name, displays)))
            return
        triggers = self._triggers(query)
        if triggers is None:
            self._always.append(number)
        for term_id in triggers or ():
            self._triggered[term_id].append(number)

    def index(self) -> MatchIndex:
        keys: defaultdict[Field, dict[str, list[_Target]]] = defaultdict(dict)
        regexes: dict[int, tuple[Field, Any]] = {}
        for term_id, term in enumerate(self._terms):
            if term.is_regex:
                regexes[term_id] = (term.field, compile_regex(term.normalized, term.position))
                continue
            scanned = _SCANNED_AS.get(term.field, term.field)
            confirm = scanned != term.field or needs_boundary(term.normalized)
            target = (term_id, term.field, term.normalized if confirm else None)
            keys[scanned].setdefault(term.normalized, []).append(target)
        targets: list[tuple[_Target, ...]] = []
        automata = {field: _automaton(needles, targets) for field, needles in keys.items()}
        return MatchIndex(
            self._subscriptions,
            automata,
            targets,
            regexes,
            # Lists indexed by term id: looked up for every term hit, so no dict lookups.
            [tuple(self._triggered[term_id]) for term_id in range(len(self._terms))],
            [tuple(self._certain[term_id]) for term_id in range(len(self._terms))],
            self._always,
        )

    def _id(self, term: Term) -> int:
        term_id = self._ids.get(term.key)
        if term_id is None:
            term_id = self._ids[term.key] = len(self._terms)
            self._terms.append(term)
        return term_id

    def _triggers(self, query: Query) -> frozenset[int] | None:
        """Term ids of which at least one must hit for ``query`` to be true; None if no such set.

        An AND needs only its most selective operand's triggers (see ``_selectivity``), so
        common words and source names do not wake many queries.
        """
        if isinstance(query, Term):
            return None if query.is_regex else frozenset({self._id(query)})
        if isinstance(query, Not):
            return None
        options = [self._triggers(operand) for operand in query.operands]
        known = [option for option in options if option is not None]
        if isinstance(query, Or):
            return frozenset().union(*known) if len(known) == len(options) else None
        return min(known, key=self._selectivity, default=None)

    def _selectivity(self, term_ids: frozenset[int]) -> tuple[int, int, int]:
        """Sort key, most selective first: fewer terms, then rarer fields, then longer terms."""
        terms = [self._terms[term_id] for term_id in term_ids]
        return (
            len(terms),
            max(_FIELD_COMMONNESS[term.field] for term in terms),
            -min(map(_weight, (term.normalized for term in terms))),
        )


class _Compiler:
    """Turns one query into nested closures over term ids; literal terms become set tests."""

    def __init__(self, term_id: Callable[[Term], int], ordinals: Mapping[str, int]) -> None:
        self._term_id = term_id
        self._ordinals = ordinals

    def compile(self, query: Query) -> Evaluator:
        if isinstance(query, Term):
            return self._term(query)
        if isinstance(query, Not):
            return _negation(self.compile(query.operand))
        if isinstance(query, And):
            return self._and(query)
        return self._or(query)

    def _term(self, term: Term) -> Evaluator:
        term_id, found = self._term_id(term), (self._ordinals[term.text],)
        if term.is_regex:
            return lambda hits, probe: found if probe(term_id) else None
        return lambda hits, probe: found if term_id in hits else None

    def _and(self, query: And) -> Evaluator:
        required, excluded, others = _partition(query.operands)
        required_ids = frozenset(map(self._term_id, required))
        excluded_ids = frozenset(map(self._term_id, excluded))
        found = tuple(self._ordinals[term.text] for term in required)
        rest = tuple(map(self.compile, others))

        def evaluate(hits: Hits, probe: RegexProbe) -> tuple[int, ...] | None:
            if not required_ids <= hits or not excluded_ids.isdisjoint(hits):
                return None
            ordinals = found
            for operand in rest:
                more = operand(hits, probe)
                if more is None:
                    return None
                ordinals += more
            return ordinals

        return evaluate

    def _or(self, query: Or) -> Evaluator:
        """Every true operand contributes its terms, so all hit keywords get highlighted."""
        literals = [
            (self._term_id(op), self._ordinals[op.text]) for op in query.operands if _is_literal(op)
        ]
        rest = tuple(self.compile(op) for op in query.operands if not _is_literal(op))

        def evaluate(hits: Hits, probe: RegexProbe) -> tuple[int, ...] | None:
            ordinals = tuple([ordinal for term_id, ordinal in literals if term_id in hits])
            matched = bool(ordinals)
            for operand in rest:
                more = operand(hits, probe)
                if more is not None:
                    matched = True
                    ordinals += more
            return ordinals if matched else None

        return evaluate


# How many entries a value of the field is typically shared by: a source name is on every
# entry of the source, a category on many; words in the title or content are the rarest.
_FIELD_COMMONNESS = {
    "title": 0,
    "content": 0,
    "text": 0,
    "link": 1,
    "author": 2,
    "category": 2,
    "source": 3,
}


def _weight(term: str) -> int:
    """A term's length with Chinese characters counted thrice, as a rarity estimate."""
    return len(term) + 2 * sum(1 for ch in term if ord(ch) >= 0x2E80)


def _automaton(needles: Mapping[str, list[_Target]], targets: list[tuple[_Target, ...]]) -> Any:
    """An automaton of ``needles``; a needle's value is its term id when that is all it
    stands for, else ``~i`` for its targets, appended to ``targets`` as ``targets[i]``.

    Most needles are one term of the scanned field without a boundary: their hits go
    straight into the hit set, and only the others are looked at one by one.
    """
    automaton = ahocorasick.Automaton()
    for needle, needle_targets in needles.items():
        [(term_id, _, confirm), *more] = needle_targets
        if confirm is None and not more:
            automaton.add_word(_utf8_units(needle), term_id)
        else:
            automaton.add_word(_utf8_units(needle), ~len(targets))
            targets.append(tuple(needle_targets))
    automaton.make_automaton()
    return automaton


def _occurs(text: str, term: str) -> bool:
    return next(occurrences(text, term), None) is not None


def _utf8_units(text: str) -> str:
    """``text`` as its UTF-8 bytes, one character per byte, for the automaton.

    pyahocorasick finds a node's child by a linear search; thousands of distinct Chinese
    first characters make every step from the root slow. Over bytes no node has more
    than 256 children (the root about ten), which makes scanning several times faster.
    UTF-8 is self-synchronising, so a term's bytes only ever match at character starts.
    """
    return text.encode("utf-8").decode("latin-1")


def _is_literal(query: Query) -> TypeGuard[Term]:
    return isinstance(query, Term) and not query.is_regex


def _partition(operands: Sequence[Query]) -> tuple[list[Term], list[Term], list[Query]]:
    """An AND's operands: literal terms, negated literal terms, and the others."""
    required: list[Term] = []
    excluded: list[Term] = []
    others: list[Query] = []
    for operand in operands:
        if _is_literal(operand):
            required.append(operand)
        elif isinstance(operand, Not) and _is_literal(operand.operand):
            excluded.append(operand.operand)
        else:
            others.append(operand)
    return required, excluded, others


def _negation(operand: Evaluator) -> Evaluator:
    return lambda hits, probe: () if operand(hits, probe) is None else None
