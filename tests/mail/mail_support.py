"""Test support for render and mail: digest jobs from the finews corpus, real aiosmtpd servers."""

from __future__ import annotations

import asyncio
import calendar
import hashlib
import re
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import feedparser
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from feedsvc.model import (
    DigestItem,
    DigestJob,
    EntryData,
    FeedInfo,
    Highlighted,
    MatchedEntry,
    StoredEntry,
    SubscriptionInfo,
)

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests" / "data" / "corpus"
MAIL_DATA = REPO / "tests" / "data" / "mail"
NOW = datetime(2026, 11, 26, 0, 0, tzinfo=UTC)  # 08:00 in Asia/Shanghai


# --- digest jobs -----------------------------------------------------------------------


def _plain(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromtimestamp(calendar.timegm(value), UTC)


def load_corpus(path: Path = CORPUS / "all.xml") -> list[StoredEntry]:
    """The corpus feed as stored entries (plain feedparser: the real parser is not ours)."""
    parsed = feedparser.parse(path.read_bytes())
    feed = FeedInfo(id=parsed.feed.get("id", "finews"), title=parsed.feed.get("title", ""))
    entries = []
    for i, e in enumerate(parsed.entries):
        content = e.get("content", [{}])[0].get("value", "") or e.get("summary", "")
        data = EntryData(
            id=e.id,
            key=e.id,
            title=e.title,
            link=e.get("link"),
            published=_parse_time(e.get("published_parsed")),
            updated=_parse_time(e.get("updated_parsed")),
            content=content,
            summary=e.get("summary", ""),
        )
        entries.append(StoredEntry(i + 1, "finews", feed, data, NOW, NOW))
    return entries


def highlight(text: str, terms: Sequence[str]) -> Highlighted:
    spans = []
    for term in terms:
        spans += [(m.start(), m.end()) for m in re.finditer(re.escape(term), text)]
    return Highlighted(text, tuple(sorted(spans)))


def snippet(text: str, terms: Sequence[str], width: int = 60) -> Highlighted:
    hits = [text.find(t) for t in terms if t in text]
    start = max(0, min(hits) - width // 3) if hits else 0
    return highlight(text[start : start + width], terms)


def item(entry: StoredEntry, subscription: str, terms: Sequence[str], **kw: Any) -> DigestItem:
    found = tuple(t for t in terms if t in entry.data.title + entry.data.content) or tuple(terms)
    match = MatchedEntry(entry, subscription, found, NOW)
    return DigestItem(
        match=match,
        title=highlight(entry.data.title, terms),
        snippet=snippet(_plain(entry.data.content), terms),
        **kw,
    )


@dataclass
class JobSpec:
    """A readable description of a digest: subscription → (title, terms, how many)."""

    subscriptions: Mapping[str, tuple[str, tuple[str, ...], int]]
    locale: str = "zh-CN"
    timezone: str = "Asia/Shanghai"
    omitted: dict[str, int] = field(default_factory=dict)
    subscriber: str = "reader@example.com"


def make_job(spec: JobSpec, entries: list[StoredEntry]) -> DigestJob:
    items: list[DigestItem] = []
    infos = []
    for name, (title, terms, count) in spec.subscriptions.items():
        hits = [e for e in entries if any(t in e.data.title + e.data.content for t in terms)]
        items += [item(e, name, terms) for e in hits[:count]]
        infos.append(
            SubscriptionInfo(
                name=name,
                title=title,
                feed_url=f"https://feeds.example.com/feeds/{name}.atom",
                unsubscribe_url=f"https://feeds.example.com/unsubscribe?token={name}-tok",
            )
        )
    digest = hashlib.sha256(spec.subscriber.encode()).hexdigest()[:12]
    return DigestJob(
        subscriber=spec.subscriber,
        locale=spec.locale,
        timezone=spec.timezone,
        window_start=NOW.replace(day=25),
        window_end=NOW,
        items=tuple(items),
        subscriptions=tuple(infos),
        message_id=f"<digest.{digest}.20261126@feeds.example.com>",
        unsubscribe_url="https://feeds.example.com/unsubscribe?token=all-tok",
        omitted=spec.omitted,
    )


# --- SMTP servers ----------------------------------------------------------------------


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
    """A real aiosmtpd server on 127.0.0.1 in the test's event loop."""

    handler: RecordingHandler
    port: int
    server: asyncio.Server
    sessions: list[SMTP]
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
    handler: RecordingHandler, port: int = 0, *, tls: ssl.SSLContext | None = None, **kw: Any
) -> SmtpServer:
    sessions: list[SMTP] = []
    box: list[SmtpServer] = []

    def factory() -> SMTP:
        protocol = _CountingSMTP(box, handler, hostname="mx.test", **kw)
        sessions.append(protocol)
        return protocol

    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", port, ssl=tls)
    bound = server.sockets[0].getsockname()[1]
    box.append(SmtpServer(handler, bound, server, sessions))
    return box[0]


class _CountingSMTP(SMTP):
    """aiosmtpd's SMTP protocol, counting concurrently open sessions."""

    def __init__(self, box: list[SmtpServer], *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._box = box

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        server = self._box[0]
        server.open_sessions += 1
        server.max_open_sessions = max(server.max_open_sessions, server.open_sessions)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self._box[0].open_sessions -= 1
        super().connection_lost(error)


def server_tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(MAIL_DATA / "localhost.pem", MAIL_DATA / "localhost.key")
    return context


def client_tls_context() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(MAIL_DATA / "localhost.pem"))


def authenticator(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data == LoginPassword(b"news", b"s3cret")
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd sends the 535
