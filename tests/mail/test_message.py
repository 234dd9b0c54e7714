"""MIME building: headers of RFC 5322/2047/8058, round-trips through Python's parser, injection."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage

import pytest
from mail_support import JobSpec

from feedsvc.mail import build_message, envelope_address
from feedsvc.model import DigestJob
from feedsvc.render import DigestRenderer, RenderedDigest

JobFor = Callable[[JobSpec], DigestJob]
SENDER = "新闻摘要 <news@example.com>"
DATE = datetime(2026, 11, 26, 8, 0, tzinfo=timezone(timedelta(hours=8)))


def build(rendered: RenderedDigest, **overrides: str) -> bytes:
    args = {
        "sender": SENDER,
        "to": "reader@example.com",
        "message_id": "<digest.abc123.20261126@feeds.example.com>",
        "list_id": "feedsvc digests <digests.feeds.example.com>",
        "unsubscribe_url": "https://feeds.example.com/unsubscribe?token=abc.def",
    }
    args.update(overrides)
    return build_message(rendered, date=DATE, **args)


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_chinese_digest_round_trips_through_the_email_parser(
    renderer: DigestRenderer, job_for: JobFor
) -> None:
    job = job_for(
        JobSpec({"new-energy": ("新能源", ("新能源", "光伏"), 8), "hk": ("港股", ("港股",), 3)})
    )
    rendered = renderer.render(job)
    message = parse(build(rendered))
    assert message["Subject"] == rendered.subject == "【新能源、港股】11 条新消息 · 11月26日"
    assert message.get_content_type() == "multipart/alternative"
    text, html = (part for part in message.iter_parts())
    assert (text.get_content_type(), html.get_content_type()) == ("text/plain", "text/html")
    assert text.get_content() == rendered.text
    assert html.get_content() == rendered.html
    assert text.get_content_charset() == "utf-8"


@pytest.mark.parametrize(
    "subject",
    [
        "【新能源】12 条新消息 · 11月26日",
        "【" + "、".join(["新能源光伏储能风电"] * 12) + "】999 条新消息 · 11月26日",  # folds
        "plain ascii subject",
        "looks encoded =?utf-8?b?5paw?= but is not",
        "繁體中文：港股午評 · 😀 emoji",
        "[new-energy] " + "x" * 200,
    ],
)
def test_subject_round_trips_unchanged(subject: str) -> None:
    raw = build(RenderedDigest(subject, "text", "<p>html</p>"))
    assert parse(raw)["Subject"] == subject
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert raw.isascii()


def test_digest_headers() -> None:
    message = parse(build(RenderedDigest("s", "t", "h")))
    assert message["From"].addresses[0].display_name == "新闻摘要"
    assert message["From"].addresses[0].addr_spec == "news@example.com"
    assert message["To"] == "reader@example.com"
    assert message["Message-ID"] == "<digest.abc123.20261126@feeds.example.com>"
    assert message["Date"].datetime == DATE
    assert message["List-Id"] == "feedsvc digests <digests.feeds.example.com>"
    assert message["List-Unsubscribe"] == "<https://feeds.example.com/unsubscribe?token=abc.def>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["MIME-Version"] == "1.0"


def test_message_is_deterministic_and_uses_crlf() -> None:
    rendered = RenderedDigest("主题", "正文\n第二行\n", "<p>正文</p>")
    raw = build(rendered)
    assert raw == build(rendered)
    assert b"\n" not in raw.replace(b"\r\n", b"")


INJECTIONS = [
    "标题\r\nBcc: victim@example.com",
    "标题\nBcc: victim@example.com",
    "标题\rBcc: victim@example.com",
    "title\r\n\r\n<html>body smuggled</html>",
    "title\u2028Bcc: victim@example.com",
    "title\x00\x1b[31m\x85Bcc: victim@example.com",
]


@pytest.mark.parametrize("evil", INJECTIONS)
def test_crlf_in_any_header_value_cannot_add_a_header(evil: str) -> None:
    raw = build(
        RenderedDigest(evil, "t", "h"),
        list_id=evil,
        message_id=f"<id{evil.encode('ascii', 'ignore').decode()}@x.example>",
        sender=f'"{evil}" <news@example.com>',
        to=f'"{evil}" <reader@example.com>',
    )
    message = parse(raw)
    assert message["Bcc"] is None
    assert not message.defects
    assert [name for name in message if name.lower() not in EXPECTED_HEADERS] == []
    assert "Bcc: victim@example.com" in message["Subject"] or "smuggled" in message["Subject"]
    assert message["From"].addresses[0].addr_spec == "news@example.com"


EXPECTED_HEADERS = {
    "from", "to", "subject", "date", "message-id", "list-id", "list-unsubscribe",
    "list-unsubscribe-post", "auto-submitted", "x-auto-response-suppress", "mime-version",
    "content-type",
}  # fmt: skip


def test_crafted_entry_title_cannot_add_a_header(renderer: DigestRenderer, job_for: JobFor) -> None:
    job = job_for(JobSpec({"hk": ("港股\r\nBcc: victim@example.com\r\nX-Evil: 1", ("港股",), 2)}))
    message = parse(build(renderer.render(job)))
    assert message["Bcc"] is None and message["X-Evil"] is None
    assert message["Subject"].startswith("【港股 Bcc: victim@example.com X-Evil: 1】")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("unsubscribe_url", "javascript:alert(1)"),
        ("unsubscribe_url", "mailto:leave@example.com"),
        ("sender", "no address here"),
        ("to", ""),
        ("message_id", "<no-at-sign>"),
        ("message_id", "<摘要@example.com>"),
    ],
)
def test_invalid_arguments_are_refused(field: str, value: str) -> None:
    with pytest.raises(ValueError):
        build(RenderedDigest("s", "t", "h"), **{field: value})


def test_naive_date_is_refused() -> None:
    with pytest.raises(ValueError):
        build_message(
            RenderedDigest("s", "t", "h"),
            sender=SENDER,
            to="r@example.com",
            message_id="<a@b>",
            list_id="l",
            unsubscribe_url="https://x.example/u",
            date=datetime(2026, 11, 26),
        )


def test_envelope_address_is_the_address_part_of_the_sender() -> None:
    assert envelope_address(SENDER) == "news@example.com"
    assert envelope_address("news@example.com") == "news@example.com"
    assert envelope_address("feedsvc <news@example.com>\r\nBcc: x@y") == "news@example.com"


def test_date_header_keeps_the_given_instant() -> None:
    message = parse(build(RenderedDigest("s", "t", "h")))
    assert message["Date"].datetime.astimezone(UTC) == datetime(2026, 11, 26, 0, 0, tzinfo=UTC)
