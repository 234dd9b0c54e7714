"""The query language: the AST and a parser whose errors name their position."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import re2

from feedsvc.errors import QueryError
from feedsvc.match.normalize import normalize

FIELDS = ("title", "content", "text", "category", "author", "source", "link")
Field = Literal["title", "content", "text", "category", "author", "source", "link"]
DEFAULT_FIELD: Field = "text"
MAX_DEPTH = 64

# Chinese input methods produce full-width punctuation; accept it as the ASCII operator.
_OPEN = "(（"
_CLOSE = ")）"
_BAR = "|｜"
_MINUS = "-－"
_COLON = ":："
_QUOTES = {'"': '"', "＂": "＂", "“": "”"}
_TERM_STOP = frozenset(_OPEN + _CLOSE + _BAR + "".join(_QUOTES))


@dataclass(frozen=True)
class Term:
    """A word, a quoted phrase or a ``/regex/``, searched in one field."""

    #: As written in the query, without quotes or field (regexes keep their slashes).
    text: str
    field: Field
    #: ``normalize(text)``, or the pattern itself for a regex.
    normalized: str
    is_regex: bool
    #: 0-based offset of the term in the query text.
    position: int

    @property
    def key(self) -> tuple[Field, str, bool]:
        """Terms with equal keys match the same documents."""
        return (self.field, self.normalized, self.is_regex)


@dataclass(frozen=True)
class Not:
    operand: Query


@dataclass(frozen=True)
class And:
    operands: tuple[Query, ...]


@dataclass(frozen=True)
class Or:
    operands: tuple[Query, ...]


Query = Term | Not | And | Or


def parse_query(text: str) -> Query:
    """Parse a query (grammar in docs/architecture.md, "Query language").

    Beyond the grammar, a field may prefix a group (``title:(深圳 OR 上海)``), and
    full-width ``（）｜：－＂“”`` work as their ASCII twins.

    Raises:
        QueryError: with the 0-based position and what was expected there.
    """
    return _Parser(text).parse()


def compile_regex(pattern: str, position: int) -> re2._Regexp:
    """A linear-time (RE2), case-insensitive regex; errors name the query position."""
    options = re2.Options()
    options.case_sensitive = False
    options.log_errors = False
    try:
        return re2.compile(pattern, options)
    except re2.error as e:
        reason = e.args[0].decode() if e.args and isinstance(e.args[0], bytes) else str(e)
        raise QueryError(f"invalid regex: {reason}", position) from e


def iter_terms(query: Query) -> Iterator[Term]:
    """The query's terms in query order."""
    if isinstance(query, Term):
        yield query
    elif isinstance(query, Not):
        yield from iter_terms(query.operand)
    else:
        for operand in query.operands:
            yield from iter_terms(operand)


@dataclass(frozen=True)
class _Token:
    #: "(" ")" "OR" "AND" "NOT" "-" "term" "phrase" "regex" "end"
    kind: str
    position: int
    value: str = ""
    field: Field | None = None


class _Parser:
    """Recursive descent over a token list, one method per grammar rule."""

    def __init__(self, text: str) -> None:
        self._tokens = list(_tokenize(text))
        self._i = 0

    def parse(self) -> Query:
        query = self._or(DEFAULT_FIELD, 0)
        token = self._peek()
        # _and stops only at OR, ")" or the end, and _or takes every OR.
        if token.kind == ")":
            raise QueryError("unbalanced parenthesis", token.position)
        return query

    def _peek(self) -> _Token:
        return self._tokens[self._i]

    def _next(self) -> _Token:
        token = self._tokens[self._i]
        self._i += 1
        return token

    def _or(self, field: Field, depth: int) -> Query:
        operands = [self._and(field, depth)]
        while self._peek().kind == "OR":
            self._next()
            operands.append(self._and(field, depth))
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def _and(self, field: Field, depth: int) -> Query:
        operands = [self._unary(field, depth)]
        while self._peek().kind not in ("OR", ")", "end"):
            if self._peek().kind == "AND":
                self._next()
            operands.append(self._unary(field, depth))
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def _unary(self, field: Field, depth: int) -> Query:
        if depth > MAX_DEPTH:
            raise QueryError("query nested too deeply", self._peek().position)
        if self._peek().kind in ("-", "NOT"):
            self._next()
            return Not(self._unary(field, depth + 1))
        return self._atom(field, depth)

    def _atom(self, field: Field, depth: int) -> Query:
        token = self._next()
        if token.kind == "(":
            query = self._or(token.field or field, depth + 1)
            if self._next().kind != ")":
                raise QueryError("unbalanced parenthesis", token.position)
            return query
        if token.kind in ("term", "phrase", "regex"):
            return _make_term(token, token.field or field)
        raise QueryError("expected a term", token.position)


def _make_term(token: _Token, field: Field) -> Term:
    if token.kind == "regex":
        compile_regex(token.value, token.position)
        return Term(f"/{token.value}/", field, token.value, True, token.position)
    normalized = normalize(token.value)
    if not normalized:
        raise QueryError("term has nothing to search for", token.position)
    return Term(token.value, field, normalized, False, token.position)


def _tokenize(text: str) -> Iterator[_Token]:
    i = 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i == len(text):
            yield _Token("end", i)
            return
        token, i = _read_token(text, i)
        yield token


def _read_token(text: str, i: int) -> tuple[_Token, int]:
    ch = text[i]
    if ch in _OPEN:
        return _Token("(", i), i + 1
    if ch in _CLOSE:
        return _Token(")", i), i + 1
    if ch in _BAR:
        return _Token("OR", i), i + 1
    if ch in _MINUS:
        return _Token("-", i), i + 1
    field, start = _read_field(text, i)
    if field is None:
        return _read_operand(text, i)
    while start < len(text) and text[start].isspace():
        start += 1
    if start == len(text) or text[start] in _CLOSE + _BAR + _MINUS:
        raise QueryError(f"expected a term after {field}:", start)
    token, end = _read_operand(text, start)
    # After a field an operator word is the word itself: `title:NOT` searches "not".
    kind = "term" if token.kind in ("OR", "AND", "NOT") else token.kind
    return _Token(kind, token.position, token.value, field), end


def _read_field(text: str, i: int) -> tuple[Field | None, int]:
    """``title:`` (any case) etc. at ``i``: the field and where its operand starts."""
    for name in FIELDS:
        end = i + len(name)
        if text[i:end].lower() == name and end < len(text) and text[end] in _COLON:
            return name, end + 1  # type: ignore[return-value]  # name is one of FIELDS
    return None, i


def _read_operand(text: str, i: int) -> tuple[_Token, int]:
    """A phrase, a regex, ``(`` or a word (``OR``/``AND``/``NOT`` are operators) at ``i``."""
    ch = text[i]
    if ch in _QUOTES:
        return _read_phrase(text, i)
    if ch == "/":
        return _read_regex(text, i)
    if ch in _OPEN:
        return _Token("(", i), i + 1
    end = i
    while end < len(text) and not text[end].isspace() and text[end] not in _TERM_STOP:
        end += 1
    word = text[i:end]
    if word in ("OR", "AND", "NOT"):
        return _Token(word, i, word), end
    return _Token("term", i, word), end


def _read_phrase(text: str, i: int) -> tuple[_Token, int]:
    close = text.find(_QUOTES[text[i]], i + 1)
    if close < 0:
        raise QueryError("unterminated phrase", i)
    phrase = text[i + 1 : close].strip()
    if not phrase:
        raise QueryError("empty phrase", i)
    return _Token("phrase", i, phrase), close + 1


def _read_regex(text: str, i: int) -> tuple[_Token, int]:
    """``/pattern/``; ``\\/`` puts a slash inside the pattern (RE2 reads it as ``/``)."""
    j = i + 1
    while j < len(text) and text[j] != "/":
        j += 2 if text[j] == "\\" else 1
    if j >= len(text):
        raise QueryError("unterminated regex", i)
    if j == i + 1:
        raise QueryError("empty regex", i)
    if j + 1 < len(text) and not (text[j + 1].isspace() or text[j + 1] in _TERM_STOP):
        raise QueryError("expected a space or an operator after the regex", j + 1)
    return _Token("regex", i, text[i + 1 : j]), j + 1
