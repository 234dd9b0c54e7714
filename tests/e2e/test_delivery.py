"""Nothing lost, nothing twice: SMTP outages, refused recipients and SIGKILL mid-delivery."""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from feedsvc import pipeline
from feedsvc.cli import main, open_services
from feedsvc.config import load_config
from tests.e2e.servers import CORPUS, write_config
from tests.servers import free_port
from tests.servers.smtp import RecordingHandler, smtp_in_thread

FEEDSVC = Path(sys.executable).with_name("feedsvc")


class GatedHandler(RecordingHandler):
    """The recording SMTP handler that can also stop at a chosen point (before the
    message, or after receiving it) until released."""

    def __init__(self) -> None:
        super().__init__()
        # The reply the status command is expected to show for a refused recipient.
        self.refuse_reply = "550 5.1.1 mailbox unavailable"
        self.hold_before_data = False
        self.hold_after_data = False
        self.reached = threading.Event()
        self.released = threading.Event()
        self.on_data: list[Callable[[], object]] = []

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.hold_before_data and address not in self.refuse:
            self.reached.set()
            await self._wait_for_release()
        return await super().handle_RCPT(server, session, envelope, address, options)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        if self.hold_after_data:
            for action in self.on_data:
                action()
            self.reached.set()
        return reply

    def raw_messages(self) -> list[bytes]:
        return [envelope.original_content for envelope in self.messages]

    async def _wait_for_release(self) -> None:
        while not self.released.is_set():
            await asyncio.sleep(0.02)


@pytest.fixture
def gated_smtp() -> Iterator[tuple[GatedHandler, int]]:
    handler = GatedHandler()
    with smtp_in_thread(handler) as server:
        yield handler, server.port
        handler.released.set()


def config_for(tmp_path: Path, smtp_port: int, emails: list[str]) -> Path:
    subscribers = "\n".join(
        f"  - {{email: {e}, subscriptions: [hk], digest: 'daily 08:00'}}" for e in emails
    )
    return write_config(
        tmp_path / "feedsvc.yaml",
        f"""\
database: sqlite:///{tmp_path / "feedsvc.db"}
secret: test-secret
mail:
  from: "摘要 <digest@news.example.com>"
  delivery: smtp
  smtp: {{host: 127.0.0.1, port: {smtp_port}, starttls: false, timeout: 5s}}
fetch: {{file_root: "{CORPUS}"}}
sources:
  - {{name: finews, url: "file:all.xml"}}
subscriptions:
  - {{name: hk, title: 港股, keywords: [港股]}}
subscribers:
{subscribers}
""",
    )


def message_ids(raws: list[bytes]) -> list[str]:
    return [email.message_from_bytes(r, policy=email.policy.default)["Message-ID"] for r in raws]


async def test_digests_wait_out_an_smtp_outage_and_arrive_after_it(tmp_path: Path) -> None:
    port = free_port()  # nothing listens here yet: connection refused
    loaded = load_config(config_for(tmp_path, port, ["reader@example.com"]))
    async with open_services(loaded, parse_in_processes=False) as svc:
        now = datetime.now(UTC)
        await pipeline.update_due_sources(svc, now)
        down = await pipeline.send_due_digests(svc, now + timedelta(days=1))
        assert (down.enqueued, down.sent, down.failed) == (1, 0, 1)
        assert await svc.storage.outbox_counts() == {"pending": 1, "sent": 0, "failed": 0}

        handler = GatedHandler()
        with smtp_in_thread(handler, port):
            too_early = await pipeline.deliver_outbox(svc, now + timedelta(days=1, seconds=1))
            assert too_early == (0, 0), "a failed message waits for its retry time"
            up = await pipeline.send_due_digests(svc, now + timedelta(days=1, hours=1))
            assert (up.enqueued, up.sent, up.failed) == (0, 1, 0)
    assert len(handler.messages) == 1


async def test_a_refused_recipient_does_not_hold_back_the_others(
    tmp_path: Path, gated_smtp: tuple[GatedHandler, int]
) -> None:
    handler, port = gated_smtp
    handler.refuse = {"gone@example.com"}
    emails = ["gone@example.com", "reader@example.com", "analyst@example.com"]
    loaded = load_config(config_for(tmp_path, port, emails))
    async with open_services(loaded, parse_in_processes=False) as svc:
        now = datetime.now(UTC)
        await pipeline.update_due_sources(svc, now)
        report = await pipeline.send_due_digests(svc, now + timedelta(days=1))
        assert (report.enqueued, report.sent, report.failed) == (3, 2, 1)
        later = await pipeline.send_due_digests(svc, now + timedelta(days=2))
        assert (later.sent, later.failed) == (0, 0), "a permanent failure is not retried"
        assert await svc.storage.outbox_counts() == {"pending": 0, "sent": 2, "failed": 1}
    recipients = {email.message_from_bytes(r)["To"] for r in handler.raw_messages()}
    assert recipients == {"reader@example.com", "analyst@example.com"}
    status = await asyncio.create_subprocess_exec(
        FEEDSVC, "status", "-c", str(loaded.path), stdout=asyncio.subprocess.PIPE
    )
    out = (await status.communicate())[0].decode()
    assert "gone@example.com" in out and "550 5.1.1 mailbox unavailable" in out


def send_due(config: Path, now: datetime) -> None:
    """A run of ``feedsvc digest --send-due`` that is not to be killed: in this process."""
    assert main(["digest", "-c", str(config), "--send-due", "--now", now.isoformat()]) == 0


def start_digest(config: Path, now: datetime, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [FEEDSVC, "digest", "-c", str(config), "--send-due", "--now", now.isoformat()],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill_when(reached: threading.Event, process: subprocess.Popen[str]) -> None:
    assert reached.wait(60), "the digest run never reached the SMTP server"
    os.kill(process.pid, signal.SIGKILL)
    process.wait(30)


@pytest.fixture
def polled(tmp_path: Path, gated_smtp: tuple[GatedHandler, int]) -> tuple[Path, datetime]:
    _, port = gated_smtp
    config = config_for(tmp_path, port, ["reader@example.com"])
    assert main(["poll", "-c", str(config)]) == 0
    return config, datetime.now(UTC) + timedelta(days=1)


def test_killed_after_rendering_before_sending_delivers_exactly_once(
    tmp_path: Path, gated_smtp: tuple[GatedHandler, int], polled: tuple[Path, datetime]
) -> None:
    handler, _ = gated_smtp
    config, due = polled
    handler.hold_before_data = True
    kill_when(handler.reached, start_digest(config, due, tmp_path))
    assert handler.messages == []

    handler.hold_before_data = False
    handler.released.set()
    # The killed run's lease on the message expires; then the restarted run may take it.
    after_lease = due + pipeline.LEASE + timedelta(seconds=1)
    send_due(config, after_lease)
    assert len(handler.messages) == 1
    send_due(config, after_lease)
    assert len(handler.messages) == 1


def test_killed_after_sending_before_marking_sent_resends_the_same_message(
    tmp_path: Path, gated_smtp: tuple[GatedHandler, int], polled: tuple[Path, datetime]
) -> None:
    """The server accepted the digest but the process died before recording it: the
    digest is delivered again with the same Message-ID, so it is recognisable."""
    handler, _ = gated_smtp
    config, due = polled
    lock = sqlite3.connect(tmp_path / "feedsvc.db", timeout=30, check_same_thread=False)
    # Once the server has the message, lock the database so marking it sent must wait.
    handler.on_data.append(lambda: lock.execute("BEGIN EXCLUSIVE"))
    handler.hold_after_data = True
    process = start_digest(config, due, tmp_path)
    assert handler.reached.wait(60)
    time.sleep(0.5)  # the client gets 250 and blocks on the locked database
    os.kill(process.pid, signal.SIGKILL)
    process.wait(30)
    lock.rollback()
    lock.close()
    assert len(handler.messages) == 1

    handler.hold_after_data = False
    # The killed run's lease on the message expires; then the restarted run may take it.
    after_lease = due + pipeline.LEASE + timedelta(seconds=1)
    send_due(config, after_lease)
    assert len(handler.messages) == 2
    assert len(set(message_ids(handler.raw_messages()))) == 1
    send_due(config, after_lease)
    assert len(handler.messages) == 2
