"""The normalisation shared by documents and terms, its position-mapping twin, the boundary rule."""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache, lru_cache

import opencc

# Block-level tags separate words, inline tags (<b>, <a>, <span>) do not: `新<b>能源</b>`
# must still read as 新能源.
_BLOCK_TAG = re.compile(
    r"</?(?:address|article|aside|blockquote|br|dd|div|dl|dt|figcaption|figure|footer"
    r"|h[1-6]|header|hr|li|main|nav|ol|p|pre|section|table|tbody|td|tfoot|th|thead|tr|ul)"
    r"\b[^<>]*>",
    re.IGNORECASE,
)
# Linear on hostile input: a tag ends at the first '>' and never spans another '<'.
_ANY_TAG = re.compile(r"<[A-Za-z/!?][^<>]*>")
# Only ';'-terminated references: HTML's legacy `&copy` without ';' would turn the URL
# `?a=1&copy=2` into `?a=1©=2`. Sanitised HTML always terminates its references.
_ENTITY = re.compile(r"&(?:#[0-9]{1,8}|#[xX][0-9a-fA-F]{1,7}|[A-Za-z][A-Za-z0-9]{1,31});")
_ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff\u00ad"
# A regex, not str.translate: translate looks every character up in a dict, ten times
# slower on Chinese text, where these characters are rare.
_ZERO_WIDTH_CHAR = re.compile(f"[{_ZERO_WIDTH}]")
# Units that never convert to the next piece of output on their own are given up on after
# this many, so hostile text cannot make highlighting quadratic.
_MAX_GROUP = 64


# The matching contract (docs/architecture.md) is OpenCC `t2s`: character conversion, the same for
# Hong Kong and Taiwan text. `tw2sp` would also map Taiwan vocabulary (晶片 → 芯片) but
# breaks mainland words written in Traditional characters (資訊 → 信息, missing 资讯);
# Taiwan-only vocabulary is for subscribers to add as an OR (芯片 OR 晶片).
OPENCC_CONFIG = "t2s"


@cache
def _to_simplified_converter() -> opencc.OpenCC:
    return opencc.OpenCC(OPENCC_CONFIG)


def _decode_entity(m: re.Match[str]) -> str:
    return html.unescape(m.group())


def _html_to_text(text: str) -> str:
    if "<" in text:
        text = _ANY_TAG.sub("", _BLOCK_TAG.sub(" ", text))
    if "&" in text:
        text = _ENTITY.sub(_decode_entity, text)
    return text


def _fold(text: str) -> str:
    """NFKC then case folding: full-width ``ＡＩ`` becomes ``ai``."""
    return unicodedata.normalize("NFKC", text).casefold()


def _to_simplified(text: str) -> str:
    return str(_to_simplified_converter().convert(text))


def normalize(text: str) -> str:
    """The one normalisation applied to every field and every query term.

    HTML tags removed (block tags become a space) and entities decoded, zero-width
    characters removed, Unicode NFKC, case folded, Traditional Chinese converted to
    Simplified (OpenCC, see ``OPENCC_CONFIG``), runs of white space collapsed to one space
    and ends stripped.
    Plain text passes through the HTML step unchanged unless it contains tags or entities.
    """
    text = _ZERO_WIDTH_CHAR.sub("", _html_to_text(text))
    return " ".join(_to_simplified(_fold(text)).split())


#: ``normalize`` memoised, for the short values that repeat across entries
#: (source names, categories, authors).
normalize_short = lru_cache(maxsize=8192)(normalize)


def plain_text(html_text: str) -> str:
    """The readable text of HTML: tags out, entities decoded, white space collapsed.

    No folding: this is what a reader sees (snippets), not what the matcher compares.
    """
    return " ".join(_html_to_text(html_text).split())


# --- the position-mapping twin -------------------------------------------------------

#: One output character and the span ``[start, end)`` of original text it came from.
_Unit = tuple[str, int, int]


@dataclass(frozen=True)
class Normalized:
    """``normalize(original)`` with, for each of its characters, where it came from."""

    text: str
    #: ``starts[i]``/``ends[i]``: the original span that produced ``text[i]``.
    starts: tuple[int, ...]
    ends: tuple[int, ...]

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        """The span of the original text that produced ``text[start:end]`` (``end > start``)."""
        return self.starts[start], self.ends[end - 1]


def normalize_mapped(original: str) -> Normalized:
    """``normalize`` that also maps each output character back to the original text.

    Slower than ``normalize`` (it works character by character); meant for highlighting
    titles and snippets at render time. ``normalize_mapped(x).text == normalize(x)``.
    """
    units = [(ch, i, i + 1) for i, ch in enumerate(original)]
    if "<" in original:
        units = _replace_units(units, _BLOCK_TAG, lambda _: " ")
        units = _replace_units(units, _ANY_TAG, lambda _: "")
    if "&" in original:
        units = _replace_units(units, _ENTITY, lambda m: html.unescape(m.group()))
    units = [u for u in units if u[0] not in _ZERO_WIDTH]
    units = _align(units, _fold, piecewise=True)
    units = _align(units, _to_simplified, piecewise=False)
    units = _collapse_white_space(units)
    return Normalized(
        "".join(u[0] for u in units),
        tuple(u[1] for u in units),
        tuple(u[2] for u in units),
    )


def _replace_units(
    units: list[_Unit], pattern: re.Pattern[str], replacement: Callable[[re.Match[str]], str]
) -> list[_Unit]:
    """Apply ``pattern.sub(replacement, ...)`` to the units' text, keeping the mapping."""
    text = "".join(u[0] for u in units)
    result: list[_Unit] = []
    done = 0
    for m in pattern.finditer(text):
        result.extend(units[done : m.start()])
        start, end = units[m.start()][1], units[m.end() - 1][2]
        result.extend((ch, start, end) for ch in replacement(m))
        done = m.end()
    result.extend(units[done:])
    return result


def _align(units: list[_Unit], convert: Callable[[str], str], *, piecewise: bool) -> list[_Unit]:
    """Apply ``convert`` to the whole text and attribute each output character to its units.

    The output text is always ``convert(whole text)``. When the conversion keeps the
    length and ``piecewise`` is false (OpenCC phrases of equal length, 頭髮 → 头发),
    characters map one to one. Otherwise units are grouped greedily until
    their converted text is the next piece of the whole output: this keeps combining
    marks, expansions (``ß`` → ``ss``) and contractions attributed to their source.
    """
    text = "".join(u[0] for u in units)
    whole = convert(text)
    if whole == text or (not piecewise and len(whole) == len(text)):
        return [(ch, u[1], u[2]) for ch, u in zip(whole, units, strict=True)]
    result: list[_Unit] = []
    pos = 0
    group_start = 0
    for i, unit in enumerate(units):
        if i - group_start >= _MAX_GROUP:
            break
        piece = convert("".join(u[0] for u in units[group_start : i + 1]))
        if whole.startswith(piece, pos):
            start, end = units[group_start][1], unit[2]
            result.extend((ch, start, end) for ch in piece)
            pos += len(piece)
            group_start = i + 1
    if pos < len(whole):
        # The tail did not split into pieces: attribute it to the remaining units as one.
        start = units[group_start][1] if group_start < len(units) else units[-1][2]
        result.extend((ch, start, units[-1][2]) for ch in whole[pos:])
    return result


def _collapse_white_space(units: list[_Unit]) -> list[_Unit]:
    """What ``" ".join(text.split())`` does, on units."""
    result: list[_Unit] = []
    pending_space: _Unit | None = None
    for unit in units:
        if unit[0].isspace():
            if result and pending_space is None:
                pending_space = (" ", unit[1], unit[2])
            continue
        if pending_space is not None:
            result.append(pending_space)
            pending_space = None
        result.append(unit)
    return result


# --- the boundary rule ------------------------------------------------------------------


def _is_ascii_alnum(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def occurrences(text: str, term: str) -> Iterator[int]:
    """Start offsets where normalised ``term`` occurs in normalised ``text``.

    Boundary rule (docs/architecture.md): a term that starts with an ASCII letter or digit does not
    match right after one, and likewise at its end; so ``ai`` is found in ``ai芯片`` and
    ``发展ai`` but not in ``said``. Chinese needs no boundary: ``深圳`` is in ``深圳市``.
    """
    check_left, check_right = _is_ascii_alnum(term[0]), _is_ascii_alnum(term[-1])
    start = text.find(term)
    while start >= 0:
        end = start + len(term)
        glued_left = check_left and start > 0 and _is_ascii_alnum(text[start - 1])
        glued_right = check_right and end < len(text) and _is_ascii_alnum(text[end])
        if not (glued_left or glued_right):
            yield start
        start = text.find(term, start + 1)
