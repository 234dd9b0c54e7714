"""Pooled SMTP delivery against a real aiosmtpd on 127.0.0.1: reuse, limits, failures, TLS."""

from __future__ import annotations

import asyncio
import email
import email.policy
import ssl
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from mail_support import MAIL_DATA
from pydantic import SecretStr

from feedsvc.config import MailConfig, SmtpConfig
from feedsvc.errors import NotifyError
from feedsvc.mail import RateLimiter, SmtpMailer, build_message, open_mailer
from feedsvc.render import RenderedDigest
from tests.servers import free_port
from tests.servers.smtp import RecordingHandler, SmtpServer, start_smtp

SENDER = "news@example.com"
FAST = 1_000_000.0  # messages/s: the rate limit out of the way


def message(n: int, to: str = "reader@example.com") -> bytes:
    from datetime import UTC, datetime

    return build_message(
        RenderedDigest(f"【港股】第 {n} 封摘要", f"正文 {n}\n", f"<p>正文 {n}</p>"),
        sender="新闻 <news@example.com>",
        to=to,
        message_id=f"<digest.{n}@feeds.example.com>",
        list_id="digests <digests.feeds.example.com>",
        unsubscribe_url="https://feeds.example.com/unsubscribe?token=t",
        date=datetime(2026, 11, 26, tzinfo=UTC),
    )


def smtp_config(port: int, **kw: object) -> SmtpConfig:
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": port,
        "starttls": False,
        "timeout": timedelta(seconds=5),
        "concurrency": 2,
        "rate_per_second": FAST,
    }
    values.update(kw)
    return SmtpConfig.model_validate(values)


@pytest.fixture
async def mailer(smtp: SmtpServer) -> AsyncIterator[SmtpMailer]:
    mailer = SmtpMailer(smtp_config(smtp.port))
    yield mailer
    await mailer.close()


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


async def test_messages_share_connections_and_arrive_intact(
    smtp: SmtpServer, mailer: SmtpMailer
) -> None:
    await asyncio.gather(
        *(mailer.send(message(n, f"r{n}@example.com"), sender=SENDER, recipient=f"r{n}@example.com")
          for n in range(10))
    )  # fmt: skip
    assert len(smtp.handler.messages) == 10
    assert mailer.connections_opened <= 2 and len(smtp.sessions) <= 2
    by_rcpt = {m.rcpt_tos[0]: m for m in smtp.handler.messages}
    received = email.message_from_bytes(by_rcpt["r7@example.com"].original_content or b"",
                                        policy=email.policy.default)  # fmt: skip
    assert received["Subject"] == "【港股】第 7 封摘要"
    assert by_rcpt["r7@example.com"].mail_from == SENDER


async def test_sessions_are_bounded_by_concurrency(smtp: SmtpServer) -> None:
    mailer = SmtpMailer(smtp_config(smtp.port, concurrency=3))
    await asyncio.gather(
        *(mailer.send(message(n), sender=SENDER, recipient="r@example.com") for n in range(30))
    )
    await mailer.close()
    assert len(smtp.handler.messages) == 30
    assert smtp.max_open_sessions <= 3
    assert mailer.connections_opened == len(smtp.sessions) <= 3


async def test_550_for_one_recipient_is_permanent_and_others_still_go(
    smtp: SmtpServer, mailer: SmtpMailer
) -> None:
    smtp.handler.refuse.add("gone@example.com")
    recipients = ["a@example.com", "gone@example.com", "b@example.com"]
    results = await asyncio.gather(
        *(mailer.send(message(1, r), sender=SENDER, recipient=r) for r in recipients),
        return_exceptions=True,
    )
    assert results[0] is None and results[2] is None
    error = results[1]
    assert isinstance(error, NotifyError) and error.permanent
    assert "550" in str(error) and "mailbox unavailable" in str(error)
    assert "gone@example.com" in str(error)
    assert sorted(m.rcpt_tos[0] for m in smtp.handler.messages) == [
        "a@example.com",
        "b@example.com",
    ]
    # The refusal did not cost the session: it went back to the pool.
    await mailer.send(message(2), sender=SENDER, recipient="c@example.com")
    assert mailer.connections_opened <= 2


async def test_4xx_for_a_recipient_is_transient(smtp: SmtpServer, mailer: SmtpMailer) -> None:
    smtp.handler.refuse.add("full@example.com")
    smtp.handler.refuse_reply = "452 4.2.2 <{}>: mailbox full, try later"
    with pytest.raises(NotifyError) as caught:
        await mailer.send(message(1), sender=SENDER, recipient="full@example.com")
    assert not caught.value.permanent and "452" in str(caught.value)


async def test_421_on_a_fresh_session_is_transient_and_the_next_send_recovers(
    smtp: SmtpServer, mailer: SmtpMailer
) -> None:
    smtp.handler.mail_replies.append("421 4.3.2 service shutting down")
    with pytest.raises(NotifyError) as caught:
        await mailer.send(message(1), sender=SENDER, recipient="r@example.com")
    assert not caught.value.permanent and "421" in str(caught.value)
    await mailer.send(message(2), sender=SENDER, recipient="r@example.com")
    assert len(smtp.handler.messages) == 1


async def test_421_on_a_pooled_session_is_retried_once_on_a_new_one(
    smtp: SmtpServer, mailer: SmtpMailer
) -> None:
    await mailer.send(message(1), sender=SENDER, recipient="r@example.com")
    smtp.handler.mail_replies.append("421 4.4.2 idle too long, closing")
    await mailer.send(message(2), sender=SENDER, recipient="r@example.com")
    assert len(smtp.handler.messages) == 2
    assert mailer.connections_opened == 2


async def test_pool_recovers_when_the_server_drops_its_connections() -> None:
    server = await start_smtp(RecordingHandler())
    mailer = SmtpMailer(smtp_config(server.port))
    await asyncio.gather(
        *(mailer.send(message(n), sender=SENDER, recipient="r@example.com") for n in range(4))
    )
    await server.stop()  # a restart: every pooled session is gone
    restarted = await start_smtp(server.handler, server.port)
    try:
        await asyncio.gather(
            *(mailer.send(message(n), sender=SENDER, recipient="r@example.com") for n in range(4))
        )
    finally:
        await mailer.close()
        await restarted.stop()
    assert len(server.handler.messages) == 8


async def test_server_down_is_transient_then_delivery_resumes_when_it_is_up() -> None:
    port = free_port()
    mailer = SmtpMailer(smtp_config(port))
    with pytest.raises(NotifyError) as caught:
        await mailer.send(message(1), sender=SENDER, recipient="r@example.com")
    assert not caught.value.permanent
    server = await start_smtp(RecordingHandler(), port)
    try:
        await mailer.send(message(1), sender=SENDER, recipient="r@example.com")
    finally:
        await mailer.close()
        await server.stop()
    assert len(server.handler.messages) == 1


async def test_a_silent_server_times_out_as_transient() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never greets; waits for the client to give up
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    mailer = SmtpMailer(smtp_config(port, timeout=timedelta(seconds=0.2)))
    try:
        with pytest.raises(NotifyError) as caught:
            await mailer.send(message(1), sender=SENDER, recipient="r@example.com")
    finally:
        await mailer.close()
        server.close()
        await server.wait_closed()
    assert not caught.value.permanent and "Timeout" in str(caught.value)


async def test_starttls_with_auth() -> None:
    handler = RecordingHandler()
    server = await start_smtp(
        handler, tls_context=server_tls_context(), require_starttls=True,
        authenticator=authenticator, auth_required=True,
    )  # fmt: skip
    config = smtp_config(server.port, starttls=True, username="news", password=SecretStr("s3cret"))
    mailer = SmtpMailer(config, tls_context=client_tls_context())
    try:
        await mailer.send(message(1), sender=SENDER, recipient="r@example.com")
        await mailer.send(message(2), sender=SENDER, recipient="r@example.com")
    finally:
        await mailer.close()
        await server.stop()
    assert len(handler.messages) == 2 and mailer.connections_opened == 1
    assert server.sessions[0].session.ssl is not None
    assert server.sessions[0].session.authenticated


async def test_wrong_password_is_transient_with_the_servers_reply() -> None:
    server = await start_smtp(
        RecordingHandler(), tls_context=server_tls_context(), authenticator=authenticator,
        auth_required=True,
    )  # fmt: skip
    config = smtp_config(server.port, starttls=True, username="news", password=SecretStr("nope"))
    mailer = SmtpMailer(config, tls_context=client_tls_context())
    try:
        with pytest.raises(NotifyError) as caught:
            await mailer.send(message(1), sender=SENDER, recipient="r@example.com")
    finally:
        await mailer.close()
        await server.stop()
    assert not caught.value.permanent and "535" in str(caught.value)


async def test_implicit_tls() -> None:
    handler = RecordingHandler()
    server = await start_smtp(handler, tls=server_tls_context())
    config = smtp_config(server.port, tls=True)
    mailer = SmtpMailer(config, tls_context=client_tls_context())
    try:
        await mailer.send(message(1), sender=SENDER, recipient="r@example.com")
    finally:
        await mailer.close()
        await server.stop()
    assert len(handler.messages) == 1


async def test_untrusted_certificate_is_refused() -> None:
    server = await start_smtp(RecordingHandler(), tls=server_tls_context())
    mailer = SmtpMailer(smtp_config(server.port, tls=True))  # system CAs only
    try:
        with pytest.raises(NotifyError) as caught:
            await mailer.send(message(1), sender=SENDER, recipient="r@example.com")
    finally:
        await mailer.close()
        await server.stop()
    assert not caught.value.permanent
    assert server.handler.messages == []


async def test_open_mailer_smtp(smtp: SmtpServer, tmp_path: object) -> None:
    config = MailConfig.model_validate(
        {"from": "新闻 <news@example.com>", "delivery": "smtp",
         "smtp": {"host": "127.0.0.1", "port": smtp.port, "starttls": False}}
    )  # fmt: skip
    mailer = open_mailer(config, base_dir=tmp_path)  # type: ignore[arg-type]
    await mailer.send(message(1), sender="news@example.com", recipient="r@example.com")
    await mailer.close()
    assert [m.rcpt_tos for m in smtp.handler.messages] == [["r@example.com"]]


def test_rate_limiter_spaces_starts() -> None:
    limiter = RateLimiter(4.0)  # one start every 0.25 s
    assert [limiter.reserve(10.0) for _ in range(3)] == [0.0, 0.25, 0.5]
    assert limiter.reserve(10.6) == pytest.approx(0.15)  # slot 10.75
    assert limiter.reserve(20.0) == 0.0  # idle time is not saved up as a burst
    assert limiter.reserve(20.0) == 0.25


async def test_crlf_in_an_envelope_address_is_refused_not_sent(
    smtp: SmtpServer, mailer: SmtpMailer
) -> None:
    evil = "r@example.com>\r\nRCPT TO:<victim@example.com"
    with pytest.raises(NotifyError) as caught:
        await mailer.send(message(1), sender=SENDER, recipient=evil)
    assert caught.value.permanent
    await mailer.send(message(2), sender=SENDER, recipient="r@example.com")
    assert [m.rcpt_tos for m in smtp.handler.messages] == [["r@example.com"]]
