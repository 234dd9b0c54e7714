"""Bytes → text (BOMs, charsets, GB18030 and Big5 supersets) → the document XML parsers read."""

from __future__ import annotations

import codecs
import re

# gb2312 and gbk are subsets of GB18030: decoding them strictly fails on characters in
# daily use (镕 in 朱镕基, 喆); Big5-HKSCS likewise extends Big5.
_SUPERSETS = {"gb2312": "gb18030", "gbk": "gb18030", "big5": "big5hkscs"}
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_XML_DECL_ENCODING = re.compile(rb"^\s*<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9._:-]+)[\"']")
_TEXT_DECL = re.compile(r"^\s*<\?xml[^>]*\?>")
_CHARSET = re.compile(r"charset\s*=\s*[\"']?([A-Za-z0-9._:-]+)", re.IGNORECASE)
_ENTITY_DECL = re.compile(r"<!ENTITY", re.IGNORECASE)
# C0 controls but TAB, LF, CR (XML 1.0 forbids them), C1 controls (feedparser would turn
# them into windows-1252 glyphs) and whole ANSI CSI sequences ("\x1b[31m", not just ESC).
_CONTROL = re.compile("(?:\x1b\\[|\x9b)[0-?]*[ -/]*[@-~]|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Every match of _CONTROL contains one of these: a cheap test before the costly scan.
_CONTROL_CHAR = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# A real UTF-8 document with a stray byte or two is still UTF-8; a GB18030 or Big5
# document read as UTF-8 fails on almost every Chinese character.
_STRAY_BYTES_PER_MB = 64


def decode_document(
    body: bytes, content_type: str = "", forced: str | None = None
) -> tuple[str, list[str]]:
    """The document as text, and warnings about its encoding.

    Order: a forced encoding, then a BOM (always removed), then the declared encodings
    (HTTP charset, XML declaration; multi-byte ones before UTF-8, single-byte ones
    after it since they decode anything), then GB18030, then UTF-8 with a few stray
    bytes replaced, then windows-1252. A declared ``gb2312``/``gbk`` is read as
    GB18030 and ``big5`` as Big5-HKSCS, their supersets.
    """
    for bom, bom_encoding in _BOMS:
        if body.startswith(bom):
            body = body[len(bom) :]
            forced = forced or bom_encoding
            break
    if forced:
        try:
            return body.decode(_superset(forced), "replace"), []
        except LookupError:  # codecs.lookup accepts non-text codecs such as "base64"
            pass
    declared = [e for e in (_http_charset(content_type), _xml_encoding(body)) if e]
    for candidate in _candidates(declared):
        try:
            text = body.decode(candidate)
        except (UnicodeDecodeError, LookupError):
            continue
        return text, _encoding_warnings(declared, candidate)
    return _last_resort(body, declared)


def declares_entities(text: str) -> bool:
    """Whether the prolog declares entities (billion laughs, external entities).

    Declarations can only precede the root element, so everything before the first
    CDATA section is searched: a literal ``<!ENTITY`` in a CDATA article is fine.
    """
    cdata = text.find("<![CDATA[")
    return _ENTITY_DECL.search(text, 0, cdata if cdata >= 0 else len(text)) is not None


def prepared_document(text: str) -> bytes:
    """The decoded document as both XML readers read it: UTF-8, no declaration, no controls."""
    return without_controls(_TEXT_DECL.sub("", text, count=1)).encode("utf-8")


def without_controls(text: str) -> str:
    """``text`` without control characters and ANSI escape sequences."""
    return _CONTROL.sub("", text) if _CONTROL_CHAR.search(text) else text


def _candidates(declared: list[str]) -> list[str]:
    multi_byte = [e for e in declared if not _is_single_byte(e)]
    single_byte = [e for e in declared if _is_single_byte(e)]
    ordered = [*multi_byte, "utf-8", *single_byte, "gb18030"]
    return list(dict.fromkeys(ordered))


def _last_resort(body: bytes, declared: list[str]) -> tuple[str, list[str]]:
    text = body.decode("utf-8", "replace")
    if text.count("\ufffd") <= _STRAY_BYTES_PER_MB * (1 + len(body) // 1_000_000):
        return text, [f"invalid UTF-8 bytes replaced (declared: {_names(declared)})"]
    return body.decode("windows-1252", "replace"), [
        f"decoded as windows-1252 (declared: {_names(declared)})"
    ]


def _encoding_warnings(declared: list[str], used: str) -> list[str]:
    if not declared or used == declared[0]:
        return []
    return [f"declared encoding {_names(declared)} is wrong; decoded as {used}"]


def _names(declared: list[str]) -> str:
    return ", ".join(declared) or "none"


def _superset(name: str) -> str:
    try:
        canonical = codecs.lookup(name).name
    except LookupError:
        return name
    return _SUPERSETS.get(canonical, canonical)


def _is_single_byte(name: str) -> bool:
    try:
        return len("€é".encode(name, "replace")) <= 2
    except LookupError:
        return False


def _http_charset(content_type: str) -> str | None:
    match = _CHARSET.search(content_type)
    return _superset(match.group(1)) if match else None


def _xml_encoding(body: bytes) -> str | None:
    match = _XML_DECL_ENCODING.match(body[:200])
    return _superset(match.group(1).decode("ascii")) if match else None
