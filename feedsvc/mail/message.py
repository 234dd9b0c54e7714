"""Digest MIME messages: ``multipart/alternative`` with RFC 8058 one-click unsubscribe,
every header safe from text a feed supplies."""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import unicodedata
from datetime import datetime
from email.header import Header
from email.utils import format_datetime, formataddr, parseaddr
from typing import Protocol
from urllib.parse import urlsplit

_CRLF = "\r\n"
_WHITESPACE = re.compile(r"\s+")


class MessageParts(Protocol):
    """What :func:`build_message` needs of a rendered digest (``feedsvc.render.RenderedDigest``).

    A Protocol rather than an import: render and mail sit in one layer and never import
    each other (the import-linter contract in pyproject.toml).
    """

    @property
    def subject(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def html(self) -> str: ...


def build_message(
    rendered: MessageParts,
    *,
    sender: str,
    to: str,
    message_id: str,
    list_id: str,
    unsubscribe_url: str,
    date: datetime,
) -> bytes:
    """An RFC 5322 ``multipart/alternative`` message (text, then HTML), UTF-8, CRLF line ends.

    Every header value is stripped of CR, LF and other control characters, so no text
    from a feed can start a header of its own; non-ASCII text is RFC 2047-encoded.
    The output is deterministic: the same arguments give the same bytes.

    Raises:
        ValueError: for a sender or recipient without an address, a naive ``date``, or
            an unsubscribe URL that is not http(s) (RFC 8058 wants HTTPS).
    """
    boundary = "=_feedsvc_" + hashlib.sha256(message_id.encode("utf-8")).hexdigest()[:24]
    headers = [
        ("From", _mailbox(sender)),
        ("To", _mailbox(to)),
        ("Subject", _unstructured(rendered.subject)),
        ("Date", _date(date)),
        ("Message-ID", _message_id(message_id)),
        ("List-Id", _unstructured(list_id)),
        ("List-Unsubscribe", f"<{_unsubscribe_url(unsubscribe_url)}>"),
        # RFC 8058: a POST to the List-Unsubscribe URL unsubscribes without a page.
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        # RFC 3834: tells autoresponders (vacation replies) not to answer.
        ("Auto-Submitted", "auto-generated"),
        # Exchange/Outlook ignore Auto-Submitted for out-of-office replies; this they honour.
        ("X-Auto-Response-Suppress", "All"),
        ("MIME-Version", "1.0"),
        ("Content-Type", f'multipart/alternative; boundary="{boundary}"'),
    ]
    head = "".join(f"{name}: {value}{_CRLF}" for name, value in headers)
    parts = [_text_part("plain", rendered.text), _text_part("html", rendered.html)]
    body = "".join(f"--{boundary}{_CRLF}{part}" for part in parts) + f"--{boundary}--{_CRLF}"
    return (head + _CRLF + body).encode("ascii")


def envelope_address(mailbox: str) -> str:
    """The bare address of ``"Name <addr>"`` (the SMTP envelope sender of the From header)."""
    return parseaddr(header_text(mailbox))[1]


def header_text(value: str) -> str:
    """``value`` as one header-safe line: control characters (CR/LF too) become single spaces."""
    # isprintable() is False for every character replaced below, so the
    # character-by-character pass runs only for text that may need it.
    cleaned = value if value.isprintable() else "".join(map(_header_safe, value))
    return _WHITESPACE.sub(" ", cleaned).strip()


def _header_safe(ch: str) -> str:
    # Cc holds CR/LF/NUL/DEL; Zl/Zp are line separators some parsers break on; Cf hides text.
    return " " if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch


def _mailbox(value: str) -> str:
    name, address = parseaddr(header_text(value))
    if "@" not in address:
        raise ValueError(f"not a mail address: {value!r}")
    return formataddr((name, address), charset="utf-8")


# Digests of one subscription on one day share their subject, and encoding one costs more
# than building the rest of the message: keep the recent ones.
@functools.lru_cache(maxsize=1024)
def _unstructured(value: str) -> str:
    text = header_text(value)
    # Plain ASCII goes as is, unless it looks like an encoded word a parser would decode.
    if text.isascii() and "=?" not in text:
        return text
    return Header(text, "utf-8").encode(linesep=_CRLF, maxlinelen=76)


def _date(date: datetime) -> str:
    if date.tzinfo is None:
        raise ValueError("the Date header needs an aware datetime")
    return format_datetime(date)


def _message_id(value: str) -> str:
    core = header_text(value).strip("<>").replace(" ", "")
    if "@" not in core or not core.isascii():
        raise ValueError(f"a Message-ID needs the ASCII form local@domain: {value!r}")
    return f"<{core}>"


def _unsubscribe_url(url: str) -> str:
    cleaned = header_text(url)
    parts = urlsplit(cleaned)
    if parts.scheme not in ("https", "http") or not parts.netloc or " " in cleaned:
        raise ValueError(f"List-Unsubscribe needs an http(s) URL: {url!r}")
    return cleaned


def _text_part(subtype: str, text: str) -> str:
    # Base64 rather than quoted-printable: Chinese text is a third the size and no line
    # of it can look like a MIME boundary (base64 lines never start with "-").
    encoded = base64.b64encode(text.encode("utf-8"))
    # Lines of 76 characters, RFC 2045's limit.
    lines = b"".join([encoded[i : i + 76] + b"\r\n" for i in range(0, len(encoded), 76)])
    return (
        f"Content-Type: text/{subtype}; charset=utf-8{_CRLF}"
        f"Content-Transfer-Encoding: base64{_CRLF}{_CRLF}{lines.decode('ascii')}"
    )
