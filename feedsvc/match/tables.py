"""Queries of a few literal terms as truth tables, evaluated for many documents at once.

A tabled query's result depends only on which of its (at most ``MAX_TABLE_TERMS``) terms
hit: term ``i`` of its sorted term ids stands for bit ``i`` of a *mask*, and its truth
table holds one bit per mask. For a batch of documents, one sparse matrix product
(documents × terms, times terms × subscriptions, weights the terms' bits) gives every
(document, subscription) pair that any term of the subscription hit, with its mask as
the value. A look-up in the truth tables keeps the true pairs. All of it runs in numpy
and scipy's C loops, so a document costs about the same whether it matches two
subscriptions or two hundred.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.sparse import csr_array

#: A query with at most this many distinct literal terms is tabled: its truth table has
#: ``2 ** MAX_TABLE_TERMS`` entries.
MAX_TABLE_TERMS = 5
_MASK_BITS = MAX_TABLE_TERMS
#: The weight added to a pair for a tabled query true when none of its terms hit
#: (``-广告``): every document hits the "always" column, so the pair is always there.
_PRESENT = 1 << _MASK_BITS
#: The weight a trigger term of a query that is not tabled adds: any pair with at least
#: this value wakes the query to be evaluated on its own.
_WAKE = 2 * _PRESENT
#: A sort key: the document's index above this bit, the result's index below.
_KEY_SHIFT = 32
_Int32 = npt.NDArray[np.int32]
_Int64 = npt.NDArray[np.int64]


def truth_table(
    term_ids: Sequence[int], evaluate: Callable[[set[int]], Any | None]
) -> dict[int, Any]:
    """``{mask: result}`` for each mask over ``term_ids`` (sorted) that makes the query true.

    ``evaluate`` gets the set of term ids that hit and returns the result, or None.
    """
    table = {}
    for mask in range(1 << len(term_ids)):
        result = evaluate({term_id for i, term_id in enumerate(term_ids) if mask >> i & 1})
        if result is not None:
            table[mask] = result
    return table


@dataclass(frozen=True)
class Batch:
    """The tabled results for a batch of documents, and what else to evaluate."""

    #: Per document, the results of the true tabled queries, in subscription order.
    found: list[list[Any]]
    #: Document index -> numbers of the queries that are not tabled and were woken.
    woken: Mapping[int, list[int]]


class Tables:
    """The tabled queries of an index, and the wake-up terms of the others."""

    def __init__(self) -> None:
        self._terms: list[int | None] = []
        self._subscriptions: list[int] = []
        self._weights: list[int] = []
        #: (query number << _MASK_BITS | mask) of each true combination, in that order.
        self._true: list[int] = []
        self._results: list[Any] = []
        self._matrix: csr_array | None = None
        self._result_index: _Int32 = np.zeros(0, np.int32)
        self._result_array: npt.NDArray[np.object_] = np.empty(0, object)

    def add(self, number: int, term_ids: Sequence[int], table: Mapping[int, Any]) -> None:
        """Add query ``number`` of the sorted ``term_ids`` with its ``truth_table``."""
        if not table:
            return  # never true
        for bit, term_id in enumerate(term_ids):
            self._link(term_id, number, 1 << bit)
        if 0 in table:
            self._link(None, number, _PRESENT)
        for mask in sorted(table):
            self._true.append(number << _MASK_BITS | mask)
            self._results.append(table[mask])

    def add_evaluated(self, number: int, triggers: frozenset[int] | None) -> None:
        """Add a query that is not tabled, woken when one of ``triggers`` (None: every
        document) hits."""
        if triggers is None:
            self._link(None, number, _WAKE)
        for term_id in triggers or ():
            self._link(term_id, number, _WAKE)

    def _link(self, term_id: int | None, number: int, weight: int) -> None:
        """Term ``term_id`` (None: "always") adds ``weight`` to query ``number``'s value."""
        self._terms.append(term_id)
        self._subscriptions.append(number)
        self._weights.append(weight)

    def finish(
        self, columns: Mapping[int, int], column_count: int, always: int, subscription_count: int
    ) -> None:
        """Freeze what was added into the columns × subscriptions matrix: ``columns`` gives
        each term id's column in the documents' matrix, ``always`` the column every
        document hits."""
        terms = [always if term_id is None else columns[term_id] for term_id in self._terms]
        self._matrix = csr_array(
            (
                np.array(self._weights, np.int32),
                (np.array(terms, np.int32), np.array(self._subscriptions, np.int32)),
            ),
            shape=(column_count, max(subscription_count, 1)),
        )
        # Where (number, mask) is true, the index of its result, else -1. Results are in
        # (number, mask) order, so sorting indexes sorts by subscription.
        self._result_index = np.full(max(subscription_count, 1) << _MASK_BITS, -1, np.int32)
        self._result_index[self._true] = np.arange(len(self._true), dtype=np.int32)
        self._result_array = np.empty(len(self._results), object)
        self._result_array[:] = self._results

    def match(self, documents: csr_array) -> Batch:
        """The results for the documents × columns matrix of the terms that occur."""
        assert self._matrix is not None, "finish() first"
        count = documents.shape[0]
        pairs = documents @ self._matrix
        rows = np.repeat(np.arange(count), np.diff(pairs.indptr))
        values, numbers = pairs.data, pairs.indices.astype(np.int64)
        # A query that is not tabled has no true combination: its index is -1.
        index = self._result_index[numbers << _MASK_BITS | values & (_PRESENT - 1)]
        true = index >= 0
        keys = rows[true] << _KEY_SHIFT | index[true]
        keys.sort()
        return Batch(self._split(keys, count), _woken(rows, numbers, values >= _WAKE))

    def _split(self, keys: _Int64, documents: int) -> list[list[Any]]:
        """The results of the sorted ``keys`` (document, result index), one list per document."""
        results = self._result_array[keys & ((1 << _KEY_SHIFT) - 1)].tolist()
        ends = np.cumsum(np.bincount(keys >> _KEY_SHIFT, minlength=documents)).tolist()
        return [results[start:end] for start, end in pairwise([0, *ends])]


def _woken(rows: _Int64, numbers: _Int64, woken: npt.NDArray[np.bool_]) -> dict[int, list[int]]:
    by_row: defaultdict[int, list[int]] = defaultdict(list)
    for row, number in zip(rows[woken].tolist(), numbers[woken].tolist(), strict=True):
        by_row[row].append(number)
    return by_row
