"""One compiled index of all subscriptions: one scan for the terms, then truth tables."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, Literal, NamedTuple, TypeGuard

from feedsvc.errors import QueryError
from feedsvc.match.prefilter import required_literals
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
from feedsvc.match.scan import Document, Pattern, Scanner, mark_boundaries, plain_chunks
from feedsvc.match.tables import MAX_TABLE_TERMS, Tables, truth_table
from feedsvc.model import EntryData

#: Term ids hit in one document, and a lazy probe for regex term ids.
Hits = set[int]
RegexProbe = Callable[[int], bool]
#: Evaluates one (sub)query: the ordinals of the terms that made it true (see
#: ``_Subscription.displays``), in any order, or None when it is false.
Evaluator = Callable[[Hits, RegexProbe], tuple[int, ...] | None]

#: Entries matched with one matrix product: enough to spread its fixed cost (~0.1 ms),
#: few enough to keep its arrays small.
_BATCH_SIZE = 256


@dataclass(frozen=True)
class Hit:
    """A subscription matched an entry."""

    subscription: str
    #: The query's terms that hit, as written in the query (phrases without quotes,
    #: regexes with their slashes), de-duplicated, in the order they first appear in the
    #: query. Only terms of the branches that made the query true count; empty when
    #: negations alone did (``-广告``).
    terms: tuple[str, ...]


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

    def result_for(self, hits: Hits) -> Hit | None:
        """The Hit when exactly the literal terms ``hits`` occur, or None (no regexes)."""
        ordinals = self.evaluate(hits, _no_regexes)
        return None if ordinals is None else self.hit(ordinals)


def _no_regexes(term_id: int) -> bool:
    raise AssertionError(f"a tabled query has no regex, but term {term_id} was probed")


class MatchIndex:
    """Every subscription's query compiled into one index.

    Entries are matched in batches. Each field's automaton scans every entry once (see
    ``Scanner``), which gives the documents × terms matrix. A query of few literal terms
    was evaluated for every combination of its terms when the index was built: one
    sparse matrix product and a look-up in those truth tables answer all of them for the
    whole batch (see ``Tables``). The product also wakes the other queries (regexes,
    many terms) where one of their trigger terms hit, or on every entry when they can
    match without one; those run their compiled query, regexes only when the rest of
    the query needs them.
    """

    def __init__(
        self,
        subscriptions: Sequence[_Subscription],
        scanner: Scanner,
        regexes: Mapping[int, tuple[Field, Any]],
        tables: Tables,
        queries: Mapping[str, str] | None = None,
    ) -> None:
        self._subscriptions = subscriptions
        self._scanner = scanner
        self._regexes = regexes
        self._tables = tables
        self._queries = None if queries is None else dict(queries)
        self._numbers = {subscription.name: i for i, subscription in enumerate(subscriptions)}

    def __reduce__(self) -> tuple[Callable[[Mapping[str, str]], MatchIndex], tuple[Any, ...]]:
        """Pickled as its queries and rebuilt on loading (compiled closures do not
        pickle), so a parse worker process can match with the poller's index."""
        if self._queries is None:
            raise TypeError("only a MatchIndex made by MatchIndex.build can be pickled")
        return MatchIndex.build, (self._queries,)

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
        return builder.index(queries)

    def match(self, entry: EntryData, source: str) -> list[Hit]:
        """The subscriptions whose query matches ``entry`` (from ``source``), in build order."""
        return self.match_many([(entry, source)])[0]

    def match_many(self, entries: Iterable[tuple[EntryData, str]]) -> list[list[Hit]]:
        """``match`` for each (entry, source): one matrix product per batch of entries
        spares each entry the fixed costs, so a feed's entries go together."""
        found: list[list[Hit]] = []
        for batch in _batches(entries, _BATCH_SIZE):
            found += self._match_batch([Document(entry, source) for entry, source in batch])
        return found

    def _match_batch(self, documents: Sequence[Document]) -> list[list[Hit]]:
        matrix = self._scanner.matrix(documents)
        batch = self._tables.match(matrix)
        found = batch.found
        for row, numbers in batch.woken.items():
            hits = self._scanner.term_ids(matrix, row)
            evaluated = self._evaluate(numbers, hits, documents[row])
            if evaluated:
                found[row] = sorted(found[row] + evaluated, key=self._order_of)
        return found

    def _order_of(self, hit: Hit) -> int:
        return self._numbers[hit.subscription]

    def _evaluate(self, numbers: Sequence[int], hits: Hits, document: Document) -> list[Hit]:
        found = []
        subscriptions = self._subscriptions
        probe = self._regex_probe(document)
        for number in numbers:
            subscription = subscriptions[number]
            ordinals = subscription.evaluate(hits, probe)
            if ordinals is not None:
                found.append(subscription.hit(ordinals))
        return found

    def _regex_probe(self, document: Document) -> RegexProbe:
        results: dict[int, bool] = {}

        def probe(term_id: int) -> bool:
            if term_id not in results:
                field, regex = self._regexes[term_id]
                # Searching bytes spares RE2's wrapper mapping byte offsets to characters.
                results[term_id] = regex.search(document.utf8(field)) is not None
            return results[term_id]

        return probe


class _Scanned(NamedTuple):
    """What a term id stands for: a literal term, a regex, or a regex's prefilter literal."""

    field: Field
    text: str
    kind: Literal["term", "regex", "prefilter"]


class _Builder:
    """Collects terms and compiled queries, then freezes them into a MatchIndex."""

    def __init__(self) -> None:
        self._ids: dict[_Scanned, int] = {}
        self._terms: list[_Scanned] = []
        self._subscriptions: list[_Subscription] = []
        self._tables = Tables()

    def add(self, name: str, query: Query) -> None:
        number = len(self._subscriptions)
        displays = tuple(dict.fromkeys(term.text for term in iter_terms(query)))
        compiler = _Compiler(self._id, {text: i for i, text in enumerate(displays)})
        subscription = _Subscription(name, compiler.compile(query), displays, {})
        self._subscriptions.append(subscription)
        term_ids = sorted(set(map(self._id, iter_terms(query))))
        if _is_tabled(query, term_ids):
            table = truth_table(term_ids, subscription.result_for)
            self._tables.add(number, term_ids, table)
        else:
            self._tables.add_evaluated(number, self._triggers(query))

    def index(self, queries: Mapping[str, str]) -> MatchIndex:
        patterns = [
            Pattern(term_id, term.field, _needle(term))
            for term_id, term in enumerate(self._terms)
            if term.kind != "regex"
        ]
        regexes = {
            term_id: (term.field, compile_regex(term.text, 0))
            for term_id, term in enumerate(self._terms)
            if term.kind == "regex"
        }
        scanner = Scanner(patterns)
        self._tables.finish(
            scanner.column_of, scanner.column_count, scanner.always_column, len(self._subscriptions)
        )
        return MatchIndex(self._subscriptions, scanner, regexes, self._tables, queries)

    def _id(self, term: Term) -> int:
        return self._intern(
            _Scanned(term.field, term.normalized, "regex" if term.is_regex else "term")
        )

    def _intern(self, scanned: _Scanned) -> int:
        term_id = self._ids.get(scanned)
        if term_id is None:
            term_id = self._ids[scanned] = len(self._terms)
            self._terms.append(scanned)
        return term_id

    def _triggers(self, query: Query) -> frozenset[int] | None:
        """Term ids of which at least one must hit for ``query`` to be true; None if no such set.

        An AND needs only its most selective operand's triggers (see ``_selectivity``), so
        common words and source names do not wake many queries. A regex is woken by the
        literal that all its matches contain (see ``prefilter``), if it has one.
        """
        if isinstance(query, Term):
            if not query.is_regex:
                return frozenset({self._id(query)})
            needle = _prefilter_needle(query.normalized)
            if needle is None:
                return None
            return frozenset({self._intern(_Scanned(query.field, needle, "prefilter"))})
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
            -min(_weight(term.text) for term in terms),
        )


def _needle(term: _Scanned) -> str:
    return term.text if term.kind == "prefilter" else mark_boundaries(term.text)


def _prefilter_needle(pattern: str) -> str | None:
    """A plain substring that the normalised field has wherever RE2 ``pattern`` matches.

    Case-folded, as the (case-insensitive) regex reads case-folded text; cut into
    chunks that the boundary marks cannot split (see ``plain_chunks``).
    """
    chunks = [chunk for run in required_literals(pattern) for chunk in plain_chunks(run.casefold())]
    return max(chunks, key=_weight, default=None)


def _batches(
    items: Iterable[tuple[EntryData, str]], size: int
) -> Iterator[list[tuple[EntryData, str]]]:
    """``items`` in lists of ``size`` (``itertools.batched`` is Python 3.12)."""
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def _is_tabled(query: Query, term_ids: Sequence[int]) -> bool:
    return len(term_ids) <= MAX_TABLE_TERMS and not any(t.is_regex for t in iter_terms(query))


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
