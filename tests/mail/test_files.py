"""Maildir and file: delivery: atomic writes, standard names, idempotent .eml files."""

from __future__ import annotations

import asyncio
import email
import email.policy
import mailbox
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from feedsvc.config import MailConfig
from feedsvc.errors import NotifyError
from feedsvc.mail import FileMailer, MaildirMailer, build_message, eml_name, open_mailer
from feedsvc.render import RenderedDigest

MAILDIR_NAME = re.compile(r"^\d+\.M\d+P\d+Q\d+\.[^/:]+$")


def message(n: int, subject: str = "【新能源】3 条新消息 · 11月26日") -> bytes:
    return build_message(
        RenderedDigest(subject, f"正文第 {n} 封\n港股、深圳\n", f"<p>正文 {n}</p>"),
        sender="新闻 <news@example.com>",
        to="reader@example.com",
        message_id=f"<digest.{n}.20261126@feeds.example.com>",
        list_id="digests <digests.feeds.example.com>",
        unsubscribe_url="https://feeds.example.com/unsubscribe?token=t",
        date=datetime(2026, 11, 26, tzinfo=UTC),
    )


async def test_maildir_delivers_complete_messages_into_new(tmp_path: Path) -> None:
    mailer = open_mailer(MailConfig(delivery="maildir:var/mail"), base_dir=tmp_path)
    await asyncio.gather(
        *(mailer.send(message(n), sender="news@example.com", recipient="r@example.com")
          for n in range(5))
    )  # fmt: skip
    await mailer.close()
    root = tmp_path / "var" / "mail"
    names = sorted(p.name for p in (root / "new").iterdir())
    assert len(set(names)) == 5 and all(MAILDIR_NAME.match(n) for n in names)
    assert list((root / "tmp").iterdir()) == [] and (root / "cur").is_dir()
    box = mailbox.Maildir(root, factory=None, create=False)
    subjects = sorted(str(m["Subject"]) for m in box)  # the stdlib reader agrees on the format
    assert len(subjects) == 5
    raw = (root / "new" / names[0]).read_bytes()
    assert b"\r\n" not in raw  # Maildir files use LF
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["Subject"] == "【新能源】3 条新消息 · 11月26日"
    assert parsed["Return-Path"] == "<news@example.com>"
    assert parsed["Delivered-To"] == "r@example.com"
    assert "港股、深圳" in parsed.get_body(("plain",)).get_content()


async def test_maildir_envelope_cannot_inject_headers(tmp_path: Path) -> None:
    mailer = MaildirMailer(tmp_path / "md")
    await mailer.send(message(1), sender="a@b.example\r\nBcc: x@y", recipient="r@x\nX-Evil: 1")
    (path,) = (tmp_path / "md" / "new").iterdir()
    parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert parsed["Bcc"] is None and parsed["X-Evil"] is None


async def test_file_delivery_writes_one_eml_per_message(tmp_path: Path) -> None:
    mailer = open_mailer(MailConfig(delivery=f"file:{tmp_path / 'out'}"), base_dir=Path("/nowhere"))
    for n in range(3):
        await mailer.send(message(n), sender="news@example.com", recipient="r@example.com")
    files = sorted((tmp_path / "out").iterdir())
    assert [f.suffix for f in files] == [".eml"] * 3
    assert files[0].name.startswith("digest.0.20261126@feeds.example.com-")
    assert files[0].read_bytes() == message(0)


async def test_file_delivery_of_the_same_message_again_replaces_it(tmp_path: Path) -> None:
    mailer = FileMailer(tmp_path)
    await mailer.send(message(1), sender="news@example.com", recipient="r@example.com")
    await mailer.send(message(1), sender="news@example.com", recipient="r@example.com")
    await mailer.send(message(1), sender="news@example.com", recipient="other@example.com")
    assert len(list(tmp_path.glob("*.eml"))) == 2
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_eml_names_are_safe_and_distinct() -> None:
    evil = message(1).replace(b"<digest.1.20261126@", b"<../../etc/passwd/\xe4\xb8\xad@")
    name = eml_name(evil, "r@example.com")
    assert "/" not in name and name.endswith(".eml") and name.isascii()
    no_id = b"Subject: x\r\n\r\nbody\r\n"
    assert eml_name(no_id, "a@example.com") != eml_name(no_id, "b@example.com")
    assert re.fullmatch(r"[0-9a-f]{16}\.eml", eml_name(no_id, "a@example.com"))


async def test_unwritable_directory_is_a_transient_failure(tmp_path: Path) -> None:
    mailer = FileMailer(tmp_path / "out")
    (tmp_path / "out").rmdir()
    (tmp_path / "out").write_text("a file where the directory was")
    with pytest.raises(NotifyError) as caught:
        await mailer.send(message(1), sender="news@example.com", recipient="r@example.com")
    assert not caught.value.permanent
