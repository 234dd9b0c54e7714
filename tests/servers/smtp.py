"""The one fake SMTP server of the tests: aiosmtpd on 127.0.0.1, recording every message it
accepts and answering the errors a test asks for.

``start_smtp`` runs it in the test's event loop (it can count sessions and drop them);
``smtp_in_thread`` runs the same server on an event loop of its own, for tests that
block while the client talks to it (a subprocess, a wait on an event).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session


class RecordingHandler:
    """Records every accepted message; refuses ``refuse`` recipients with ``refuse_reply``."""

    def __init__(self) -> None:
        self.messages: list[Envelope] = []
        self.refuse: set[str] = set()
        self.refuse_reply = "550 5.1.1 <{}>: mailbox unavailable"
        #: Replies to MAIL FROM, used once each (e.g. "421 ..." for a server going away).
        self.mail_replies: list[str] = []

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.refuse:
            return self.refuse_reply.format(address)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.mail_replies:
            return self.mail_replies.pop(0)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.messages.append(envelope)
        return "250 Message accepted"


@dataclass
class SmtpServer:
    """A running aiosmtpd server: its handler, port and sessions."""

    handler: RecordingHandler
    port: int
    server: asyncio.Server
    sessions: list[SMTP] = field(default_factory=list)
    open_sessions: int = 0
    max_open_sessions: int = 0

    async def drop_connections(self) -> None:
        """Close every client connection from the server side (a restart or idle timeout)."""
        for session in self.sessions:
            if session.transport is not None:
                session.transport.close()
        await asyncio.sleep(0)  # let the client's protocol see connection_lost

    async def stop(self) -> None:
        self.server.close()
        await self.drop_connections()
        await self.server.wait_closed()


async def start_smtp(
    handler: RecordingHandler | None = None,
    port: int = 0,
    *,
    tls: ssl.SSLContext | None = None,
    **smtp_options: Any,
) -> SmtpServer:
    """Start a server in this event loop; ``tls`` makes it implicit TLS, ``smtp_options``
    go to aiosmtpd's ``SMTP`` (``tls_context``, ``authenticator``, …). Stop it with
    :meth:`SmtpServer.stop`."""
    handler = handler or RecordingHandler()
    started: list[SmtpServer] = []

    def new_session() -> SMTP:
        protocol = _CountingSMTP(started[0], handler, hostname="mx.test", **smtp_options)
        started[0].sessions.append(protocol)
        return protocol

    loop = asyncio.get_running_loop()
    server = await loop.create_server(new_session, "127.0.0.1", port, ssl=tls)
    started.append(SmtpServer(handler, server.sockets[0].getsockname()[1], server))
    return started[0]


class _CountingSMTP(SMTP):
    """aiosmtpd's SMTP protocol, counting concurrently open sessions."""

    def __init__(self, server: SmtpServer, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._server.open_sessions += 1
        self._server.max_open_sessions = max(
            self._server.max_open_sessions, self._server.open_sessions
        )
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self._server.open_sessions -= 1
        super().connection_lost(error)


@contextlib.contextmanager
def smtp_in_thread(handler: RecordingHandler | None = None, port: int = 0) -> Iterator[SmtpServer]:
    """``start_smtp`` on an event loop in a thread of its own; stopped on exit."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="smtp-server", daemon=True)
    thread.start()

    def run(coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=30)

    try:
        server: SmtpServer = run(start_smtp(handler, port))
        try:
            yield server
        finally:
            run(server.stop())
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()
