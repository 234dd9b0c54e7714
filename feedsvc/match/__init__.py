"""The matcher: query language, normalisation, one index of all subscriptions, highlights."""

from feedsvc.match.highlight import highlight, snippet
from feedsvc.match.index import Hit, MatchIndex
from feedsvc.match.normalize import normalize
from feedsvc.match.query import FIELDS, And, Not, Or, Query, Term, iter_terms, parse_query

__all__ = [
    "FIELDS",
    "And",
    "Hit",
    "MatchIndex",
    "Not",
    "Or",
    "Query",
    "Term",
    "highlight",
    "iter_terms",
    "normalize",
    "parse_query",
    "snippet",
]
