"""A literal that every match of a regex contains, so the regex runs only where it occurs.

Regexes cost a search of the whole field; a query of regexes alone would run them on
every entry. Like RE2's FilteredRE2 or a trigram index, the index looks for a literal
the regex cannot match without, with all the other terms in one scan, and runs the
regex only on the entries where it occurs.

The reading is deliberately narrow: literal characters in the top-level sequence of
the pattern. A top-level ``|``, or any syntax it does not know for sure (flags, named
classes, ``\\p``, ``\\Q``, ``\\x``, unusual braces), gives no literal: the regex then runs
on every entry, which is slower but never wrong.
"""

from __future__ import annotations

import re

# ASCII punctuation escaped to stand for itself (RE2 and Perl agree on these).
_PUNCTUATION = frozenset(r"""!"#$%&'()*+,-./:;<=>?@[\]^_`{|}~""")
# One-letter escapes without arguments: classes and assertions, never literal.
_CLASS_ESCAPES = frozenset("dDwWsSbBAz")
_SPECIAL = frozenset(".^$")
_REPEAT = re.compile(r"\{(\d+)(?:,\d*)?\}")


class _Unsure(Exception):
    """The pattern uses syntax this reading does not follow: no literal."""


def required_literals(pattern: str) -> list[str]:
    """Literals that every match of RE2 ``pattern`` contains; none where unsure."""
    if "\\Q" in pattern:
        return []  # quoted text can hide any syntax, even inside groups and classes
    try:
        return _literal_runs(pattern)
    except _Unsure:
        return []


def _literal_runs(pattern: str) -> list[str]:
    """The runs of literal characters of the top-level sequence that every match has."""
    runs: list[str] = []
    run: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "|":
            raise _Unsure  # an alternative need not contain anything
        if ch in "*?" or ch == "{":
            i = _optional(pattern, i, run, runs)
            continue
        if ch == "+":
            _close(run, runs)  # the character is there, the next may not follow it
            i += 1
            continue
        literal, i = _atom(pattern, i)
        if literal is None:
            _close(run, runs)
        else:
            run.append(literal)
    _close(run, runs)
    return runs


def _optional(pattern: str, i: int, run: list[str], runs: list[str]) -> int:
    """Handle a repetition at ``i`` of the atom before it; the index after it."""
    if pattern[i] == "{":
        repeat = _REPEAT.match(pattern, i)
        if repeat is None:
            raise _Unsure
        required = int(repeat.group(1)) > 0
        end = repeat.end()
    else:
        required, end = False, i + 1
    if not required and run:
        run.pop()  # the last character may be absent
    _close(run, runs)
    return end


def _atom(pattern: str, i: int) -> tuple[str | None, int]:
    """The literal character at ``i`` (None for anything else) and the index after it."""
    ch = pattern[i]
    if ch == "\\":
        if i + 1 >= len(pattern):
            raise _Unsure
        escaped = pattern[i + 1]
        if escaped in _PUNCTUATION:
            return escaped, i + 2
        if escaped in _CLASS_ESCAPES:
            return None, i + 2
        raise _Unsure
    if ch == "[":
        return None, _class_end(pattern, i)
    if ch == "(":
        return None, _group_end(pattern, i)
    if ch == ")":
        raise _Unsure
    if ch in _SPECIAL:
        return None, i + 1
    return ch, i + 1


def _class_end(pattern: str, i: int) -> int:
    """The index after the character class starting at ``i``."""
    j = i + 1
    if j < len(pattern) and pattern[j] == "^":
        j += 1
    if j < len(pattern) and pattern[j] == "]":
        j += 1
    while j < len(pattern):
        if pattern.startswith("[:", j):
            raise _Unsure
        if pattern[j] == "\\":
            j += 2
            continue
        if pattern[j] == "]":
            return j + 1
        j += 1
    raise _Unsure


def _group_end(pattern: str, i: int) -> int:
    """The index after the group starting at ``i`` (its content is not read for literals)."""
    if pattern.startswith("(?", i) and not pattern.startswith("(?:", i):
        raise _Unsure  # flags such as (?i) or (?s) change what follows
    depth = 0
    j = i
    while j < len(pattern):
        ch = pattern[j]
        if ch == "\\":
            j += 2
            continue
        if ch == "[":
            j = _class_end(pattern, j)
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    raise _Unsure


def _close(run: list[str], runs: list[str]) -> None:
    if run:
        runs.append("".join(run))
        run.clear()
