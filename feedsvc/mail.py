"""Mail: digest MIME messages (RFC 8058 headers); delivery by pooled SMTP, Maildir or .eml files."""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import itertools
import math
import os
import re
import socket
import ssl
import threading
import time
import unicodedata
from collections.abc import Callable
from datetime import datetime
from email.header import Header
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import format_datetime, formataddr, parseaddr
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import aiosmtplib

from feedsvc.config import MailConfig, SmtpConfig
from feedsvc.errors import NotifyError

_CRLF = "\r\n"
_WHITESPACE = re.compile(r"\s+")
#: A bare address for MAIL FROM / RCPT TO: no spaces, brackets or control characters
#: (aiosmtplib would otherwise pick an address out of "a@b>\r\nRCPT TO:<c@d" silently).
_ENVELOPE_ADDRESS = re.compile(
    r"[^\s<>()\[\],;:\\\"@\x00-\x1f\x7f]+@[^\s<>()\[\],;:\\\"@\x00-\x1f\x7f]+"
)


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


class Mailer(Protocol):
    """Delivers finished messages; ``send`` is safe to call concurrently."""

    async def send(self, raw: bytes, *, sender: str, recipient: str) -> None:
        """Deliver ``raw`` to ``recipient`` with envelope sender ``sender``.

        Raises:
            NotifyError: ``permanent=True`` when retrying cannot help (the server refused
                this recipient or this message with a 5xx), ``permanent=False`` otherwise.
        """
        ...

    async def close(self) -> None:
        """Release connections; the mailer is not used afterwards."""
        ...


# --- building messages ---------------------------------------------------------------


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


# --- delivery ------------------------------------------------------------------------


def open_mailer(config: MailConfig, *, base_dir: Path) -> Mailer:
    """The mailer for ``config.delivery``: ``smtp``, ``maildir:PATH`` or ``file:PATH``.

    A relative PATH is taken relative to ``base_dir`` (the config file's directory).
    """
    kind, _, path = config.delivery.partition(":")
    if kind == "smtp":
        if config.smtp is None:
            raise ValueError("delivery: smtp needs an smtp: section")
        return SmtpMailer(config.smtp)
    if kind == "maildir":
        return MaildirMailer(base_dir / path)
    if kind == "file":
        return FileMailer(base_dir / path)
    raise ValueError(f"unknown delivery {config.delivery!r}")


class RateLimiter:
    """Spaces message starts at least ``1 / rate_per_second`` apart (no bursts)."""

    def __init__(self, rate_per_second: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = 1.0 / rate_per_second
        self._clock = clock
        self._next_start = -math.inf

    def reserve(self, now: float) -> float:
        """Book the next start slot; returns the seconds to wait for it (0 when free now)."""
        start = max(now, self._next_start)
        self._next_start = start + self._interval
        return start - now

    async def acquire(self) -> None:
        delay = self.reserve(self._clock())
        if delay > 0:
            await asyncio.sleep(delay)


class _StaleConnection(Exception):
    """A pooled connection turned out closed by the server before it took the message."""


class SmtpMailer:
    """SMTP delivery over a pool of reused sessions (several messages per connection).

    At most ``concurrency`` sessions are open at once, and message starts are spaced by
    ``rate_per_second``. A pooled session the server has dropped (idle timeout, restart,
    ``421``) is replaced once, transparently. Failures are classified for the outbox:
    a 5xx refusing the recipient or the message is permanent; everything else (refused
    connections, timeouts, 4xx, and 5xx on HELO/AUTH/MAIL FROM, which are set-up faults an
    operator can fix) is transient.
    """

    def __init__(self, config: SmtpConfig, *, tls_context: ssl.SSLContext | None = None) -> None:
        self._config = config
        self._tls_context = tls_context
        self._sessions = asyncio.Semaphore(config.concurrency)
        self._idle: list[aiosmtplib.SMTP] = []
        self._limiter = RateLimiter(config.rate_per_second)
        #: Sessions opened so far (for tests and metrics: reuse means few).
        self.connections_opened = 0

    async def send(self, raw: bytes, *, sender: str, recipient: str) -> None:
        for address in (sender, recipient):
            if not _ENVELOPE_ADDRESS.fullmatch(address):
                raise NotifyError(
                    f"{recipient}: unusable envelope address {address!r}", permanent=True
                )
        await self._limiter.acquire()
        async with self._sessions:
            try:
                await self._send_once(raw, sender, recipient, self._take_idle())
            except _StaleConnection:
                await self._send_once(raw, sender, recipient, None)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            try:
                await connection.quit()
            except (aiosmtplib.SMTPException, OSError):
                connection.close()

    def _take_idle(self) -> aiosmtplib.SMTP | None:
        while self._idle:
            connection = self._idle.pop()
            if connection.is_connected:
                return connection
            connection.close()
        return None

    async def _send_once(
        self, raw: bytes, sender: str, recipient: str, pooled: aiosmtplib.SMTP | None
    ) -> None:
        connection = pooled
        try:
            if connection is None:
                connection = await self._connect()
            await connection.sendmail(sender, [recipient], raw)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as e:
            self._keep_or_close(connection, e)
            if pooled is not None and _is_dropped(e):
                raise _StaleConnection from e
            raise _classify(e, recipient) from e
        except ValueError as e:  # aiosmtplib refuses addresses it cannot send safely
            self._keep_or_close(connection, e)
            raise NotifyError(f"{recipient}: unusable address: {e}", permanent=True) from e
        except asyncio.CancelledError:
            # Cancelled mid-transaction: the session is in an unknown state, never reuse it.
            if connection is not None:
                connection.close()
            raise
        self._idle.append(connection)

    async def _connect(self) -> aiosmtplib.SMTP:
        config = self._config
        password = config.password.get_secret_value() if config.password else None
        connection = aiosmtplib.SMTP(
            hostname=config.host,
            port=config.port,
            use_tls=config.tls,
            start_tls=config.starttls and not config.tls,
            username=config.username,
            password=password,
            timeout=config.timeout.total_seconds(),
            tls_context=self._tls_context,
        )
        self.connections_opened += 1
        await connection.connect()
        return connection

    def _keep_or_close(self, connection: aiosmtplib.SMTP | None, error: Exception) -> None:
        """After a failed transaction: a session that only refused this message stays pooled."""
        if connection is None:
            return
        if connection.is_connected and _refused_message_only(error):
            self._idle.append(connection)  # aiosmtplib has sent RSET already
        else:
            connection.close()


def _is_dropped(error: Exception) -> bool:
    """The server closed the session (or is closing it: 421) rather than refusing the message."""
    if isinstance(error, aiosmtplib.SMTPServerDisconnected):
        return True
    return isinstance(error, aiosmtplib.SMTPResponseException) and error.code == 421


def _refused_message_only(error: Exception) -> bool:
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused | ValueError):
        return True
    return isinstance(error, aiosmtplib.SMTPResponseException) and error.code != 421


def _classify(error: Exception, recipient: str) -> NotifyError:
    """The outbox's view of an SMTP failure, carrying the server's reply when there is one."""
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused) and error.recipients:
        refused = error.recipients[0]
        return NotifyError(
            f"{recipient}: recipient refused: {refused.code} {refused.message}",
            permanent=500 <= refused.code < 600,
        )
    if isinstance(error, aiosmtplib.SMTPResponseException):
        about_message = isinstance(
            error, aiosmtplib.SMTPRecipientRefused | aiosmtplib.SMTPDataError
        )
        return NotifyError(
            f"{recipient}: {type(error).__name__}: {error.code} {error.message}",
            permanent=about_message and 500 <= error.code < 600,
        )
    return NotifyError(f"{recipient}: {type(error).__name__}: {error}", permanent=False)


class MaildirMailer:
    """Delivery into a Maildir: written under ``tmp/``, fsynced, then renamed into ``new/``.

    Readers only ever see complete messages (the rename is atomic), and file names follow
    the Maildir convention ``time.MusecPpidQn.host`` so they never collide.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        for sub in ("tmp", "new", "cur"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        # Maildir escapes "/" and ":" in the host part (":" separates info flags).
        self._host = socket.gethostname().replace("/", r"\057").replace(":", r"\072")
        self._counter = itertools.count(1)

    async def send(self, raw: bytes, *, sender: str, recipient: str) -> None:
        # What a local delivery agent adds: the envelope, as the receiving side saw it.
        envelope = f"Return-Path: <{header_text(sender)}>\nDelivered-To: {header_text(recipient)}\n"
        # Maildir files use the local line ending, LF.
        data = envelope.encode("utf-8") + raw.replace(b"\r\n", b"\n")
        try:
            await asyncio.to_thread(self._deliver, data)
        except OSError as e:
            raise NotifyError(f"maildir {self.root}: {e}", permanent=False) from e

    async def close(self) -> None:
        return None

    def _deliver(self, data: bytes) -> None:
        name = self._unique_name()
        temporary = self.root / "tmp" / name
        _write_synced(temporary, data)
        os.replace(temporary, self.root / "new" / name)
        _fsync_directory(self.root / "new")

    def _unique_name(self) -> str:
        now = time.time()
        seconds, micros = int(now), int((now % 1) * 1_000_000)
        return f"{seconds}.M{micros}P{os.getpid()}Q{next(self._counter)}.{self._host}"


class FileMailer:
    """Delivery as one ``.eml`` file per message in a directory, written atomically.

    The file name derives from the Message-ID and the recipient, so delivering the same
    message again (a resend after a crash) replaces the file instead of adding a copy.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    async def send(self, raw: bytes, *, sender: str, recipient: str) -> None:
        path = self.directory / eml_name(raw, recipient)
        try:
            await asyncio.to_thread(_write_atomically, path, raw)
        except OSError as e:
            raise NotifyError(f"file {path}: {e}", permanent=False) from e

    async def close(self) -> None:
        return None


def eml_name(raw: bytes, recipient: str) -> str:
    """``<Message-ID>-<hash of Message-ID and recipient>.eml``; the whole message stands in for
    a missing Message-ID."""
    message_id = BytesHeaderParser(policy=compat32).parsebytes(raw).get("Message-ID")
    key = str(message_id).strip().strip("<>") if message_id else ""
    digest = hashlib.sha256(
        (key.encode("utf-8") if key else raw) + b"\0" + recipient.encode("utf-8")
    ).hexdigest()[:16]
    readable = re.sub(r"[^A-Za-z0-9._@+=-]", "_", key)[:80]
    return f"{readable}-{digest}.eml" if readable else f"{digest}.eml"


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    _write_synced(temporary, data)
    os.replace(temporary, path)
    _fsync_directory(path.parent)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_directory(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
