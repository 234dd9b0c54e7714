"""Pooled SMTP delivery: sessions reused for several messages, bounded and rate-limited,
failures classified as permanent or transient for the outbox."""

from __future__ import annotations

import asyncio
import math
import re
import ssl
import time
from collections.abc import Callable

import aiosmtplib

from feedsvc.config import SmtpConfig
from feedsvc.errors import NotifyError

#: A bare address for MAIL FROM / RCPT TO: no spaces, brackets or control characters
#: (aiosmtplib would otherwise pick an address out of "a@b>\r\nRCPT TO:<c@d" silently).
_ENVELOPE_ADDRESS = re.compile(
    r"[^\s<>()\[\],;:\\\"@\x00-\x1f\x7f]+@[^\s<>()\[\],;:\\\"@\x00-\x1f\x7f]+"
)


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
