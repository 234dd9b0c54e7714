"""Queries of a few literal terms as truth tables, answered with set operations in C loops."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain, combinations, compress, repeat
from operator import invert, itemgetter
from typing import Any

_chain = chain.from_iterable
_first = itemgetter(0)
_intersection = frozenset.intersection

#: A subscription's number (its place in build order) and its result (a Hit).
Numbered = tuple[int, Any]
#: Which of a query's terms hit -> its result, for each combination that makes it true.
TruthTable = dict[frozenset[int], Numbered]


def truth_table(
    number: int, term_ids: frozenset[int], evaluate: Callable[[set[int]], Any | None]
) -> TruthTable:
    """``evaluate`` (a query's result given the ids of its terms that hit, or None when
    false) for each of the ``2 ** len(term_ids)`` combinations of its terms."""
    table: TruthTable = {}
    for combination in _combinations(term_ids):
        result = evaluate(set(combination))
        if result is not None:
            table[combination] = (number, result)
    return table


def _combinations(term_ids: frozenset[int]) -> Iterator[frozenset[int]]:
    ordered = sorted(term_ids)
    for size in range(len(ordered) + 1):
        yield from map(frozenset, combinations(ordered, size))


class Tables:
    """Every subscription but the regex-free few-term ones' evaluation, for a document.

    A tabled subscription has one of three shapes, recognised from its truth table (so
    whatever the query's syntax):

    - *any of*: true when one of its positive terms hit and none of its excluded terms
      (``深圳``, ``新能源 OR 光伏``, ``(新能源 OR 光伏) -广告``). Each positive term carries
      the prebuilt result for "this term alone hit": a hit costs one list extension.
      When two of its terms hit, or an excluded one, the table decides.
    - *all of*: true when its positive terms all hit and no excluded one
      (``深圳 新能源 -广告``): woken by its rarest term, then one subset test.
    - *other*: woken by a trigger term (or by every document, ``-广告``), then looked up.

    Subscriptions that are not tabled (regexes, many terms) are only woken here: ``match``
    returns their numbers for the caller to evaluate. All waking goes through one list
    per term id (``finish`` sizes them): ``n`` wakes subscription ``n``, ``~n`` says that
    an excluded term of subscription ``n`` hit.
    """

    def __init__(self) -> None:
        self._any_of: defaultdict[int, list[Numbered]] = defaultdict(list)
        self._wake: defaultdict[int, list[int]] = defaultdict(list)
        self._excluding = _Kind()
        self._all_of = _Kind()
        self._other = _Kind()
        self._evaluated = _Kind()
        self._positives: dict[int, frozenset[int]] = {}
        self._all_of_result: dict[int, Numbered] = {}
        self._term_sets: dict[int, frozenset[int]] = {}
        self._tables: dict[int, TruthTable] = {}
        self._lists: _Lists | None = None

    def add(
        self,
        number: int,
        table: TruthTable,
        term_ids: frozenset[int],
        triggers: frozenset[int] | None,
    ) -> None:
        """Add subscription ``number``; ``triggers`` (None: always) are the term ids of
        which one must hit for it to be true."""
        if not table:
            return  # never true
        self._term_sets[number], self._tables[number] = term_ids, table
        positives = frozenset(t for t in term_ids if frozenset({t}) in table)
        if positives and _is_any_of(table, term_ids, positives):
            for term_id in positives:
                self._any_of[term_id].append(table[frozenset({term_id})])
        elif len(table) == 1 and len(positives := next(iter(table))) > 1:
            self._positives[number], self._all_of_result[number] = positives, table[positives]
            self._register(self._all_of, number, triggers)
        else:
            self._register(self._other, number, triggers)
            return
        self._register(self._excluding, ~number, term_ids - positives)

    def add_evaluated(self, number: int, triggers: frozenset[int] | None) -> None:
        """Add a subscription that is not tabled: ``match`` says when to evaluate it."""
        self._register(self._evaluated, number, triggers)

    def _register(self, kind: _Kind, code: int, triggers: Iterable[int] | None) -> None:
        kind.codes.add(code)
        if triggers is None:
            kind.always.add(code)
        for term_id in triggers or ():
            self._wake[term_id].append(code)

    def finish(self, term_count: int) -> None:
        """Freeze the per-term indexes into lists of ``term_count`` (faster than dicts)."""
        self._lists = _Lists(
            any_of=[tuple(self._any_of.get(t, ())) for t in range(term_count)],
            wake=[tuple(self._wake.get(t, ())) for t in range(term_count)],
        )

    def match(self, hits: set[int]) -> tuple[list[Numbered], set[int]]:
        """The results of the tabled subscriptions true for the terms ``hits`` (in any
        order), and the numbers of the other subscriptions to evaluate."""
        lists = self._lists
        assert lists is not None, "finish() first"
        woken = set(_chain(map(lists.wake.__getitem__, hits)))
        excluded = set(map(invert, self._excluding.of(woken)))
        found = self._match_any_of(lists, hits, excluded)
        found += self._match_all_of(self._all_of.of(woken) - excluded, hits)
        found += self._look_up(self._other.of(woken), hits)
        return found, self._evaluated.of(woken)

    def _match_any_of(self, lists: _Lists, hits: set[int], excluded: set[int]) -> list[Numbered]:
        found = list(_chain(map(lists.any_of.__getitem__, hits)))
        numbers = set(map(_first, found))
        doubtful = numbers & excluded
        if len(numbers) < len(found):
            counts = Counter(map(_first, found))
            doubtful.update(number for number, count in counts.items() if count > 1)
        if doubtful:
            found = [result for result in found if result[0] not in doubtful]
            found += self._look_up(doubtful, hits)
        return found

    def _match_all_of(self, candidates: set[int], hits: set[int]) -> Iterator[Numbered]:
        numbers = list(candidates)
        complete = map(hits.issuperset, map(self._positives.__getitem__, numbers))
        return map(self._all_of_result.__getitem__, compress(numbers, complete))

    def _look_up(self, numbers: Iterable[int], hits: set[int]) -> Iterator[Numbered]:
        """One table look-up each: the combination of its terms that hit."""
        numbers = list(numbers)
        keys = map(_intersection, map(self._term_sets.__getitem__, numbers), repeat(hits))
        return filter(None, map(dict.get, map(self._tables.__getitem__, numbers), keys))


@dataclass
class _Kind:
    """The wake codes of one kind of subscription, and those woken by every document."""

    codes: set[int] = field(default_factory=set)
    always: set[int] = field(default_factory=set)

    def of(self, woken: set[int]) -> set[int]:
        """The codes of this kind to act on for a document that woke ``woken``."""
        return (woken & self.codes) | self.always


@dataclass(frozen=True)
class _Lists:
    any_of: list[tuple[Numbered, ...]]
    wake: list[tuple[int, ...]]


def _is_any_of(table: TruthTable, term_ids: frozenset[int], positives: frozenset[int]) -> bool:
    """Whether exactly the combinations with a positive term and no other term are true."""
    excluded = term_ids - positives
    return all(
        (combination in table) == bool(combination & positives and not combination & excluded)
        for combination in _combinations(term_ids)
    )
