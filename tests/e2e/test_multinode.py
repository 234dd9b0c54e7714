"""Two nodes on one PostgreSQL database: every source polled once, every digest sent once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from feedsvc import pipeline
from feedsvc.cli import open_services
from feedsvc.config import load_config
from tests.e2e.servers import CORPUS, FeedServer, SmtpServer, write_config
from tests.postgres import postgres_url

FEEDS = ["all.xml", "by_source/hk.xml", "by_source/finance.xml", "rss2/all.gb18030.xml"]


@pytest.fixture
async def database() -> AsyncIterator[str]:
    """A fresh database on the test cluster, dropped afterwards."""
    admin = postgres_url()
    name = f"feedsvc_nodes_{uuid.uuid4().hex[:10]}"
    connection = await asyncpg.connect(admin)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
        yield admin.rsplit("/", 1)[0] + "/" + name
        await connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await connection.close()


def two_node_config(tmp_path: Path, url: str, feeds: FeedServer, smtp: SmtpServer) -> Path:
    sources = "\n".join(
        f'  - {{name: s{i}, url: "{feeds.url("/" + name)}"}}' for i, name in enumerate(FEEDS)
    )
    subscribers = "\n".join(
        f"  - {{email: r{i}@example.com, subscriptions: [hk, energy], digest: 'daily 08:00'}}"
        for i in range(5)
    )
    return write_config(
        tmp_path / "nodes.yaml",
        f"""\
database: {url}
secret: shared-secret
mail:
  delivery: smtp
  smtp: {{host: 127.0.0.1, port: {smtp.port}, starttls: false}}
fetch:
  allow_private: ["127.0.0.1:{feeds.port}"]
sources:
{sources}
subscriptions:
  - {{name: hk, keywords: [港股]}}
  - {{name: energy, query: 新能源 OR 光伏}}
subscribers:
{subscribers}
""",
    )


async def test_two_nodes_share_the_work_without_doing_any_twice(
    tmp_path: Path, database: str, feed_server: FeedServer, smtp_server: SmtpServer
) -> None:
    for name in FEEDS:
        feed_server.files["/" + name] = (CORPUS / name).read_bytes()
    loaded = load_config(two_node_config(tmp_path, database, feed_server, smtp_server))
    async with (
        open_services(loaded, parse_in_processes=False) as one,
        open_services(loaded, parse_in_processes=False) as two,
    ):
        assert one.owner != two.owner, "each node claims work under its own name"
        now = datetime.now(UTC)
        first, second = await asyncio.gather(
            pipeline.update_due_sources(one, now, limit=2),
            pipeline.update_due_sources(two, now, limit=2),
        )
        rest = await pipeline.update_due_sources(one, now)
        polled = [r.source for r in [*first, *second, *rest]]
        assert sorted(polled) == sorted(f"s{i}" for i in range(len(FEEDS)))
        assert all(r.status == "ok" for r in [*first, *second, *rest])

        due = now + timedelta(days=1)
        reports = await asyncio.gather(
            pipeline.send_due_digests(one, due), pipeline.send_due_digests(two, due)
        )
        assert sum(r.enqueued for r in reports) == 5
        assert sum(r.sent for r in reports) == 5
        again = await pipeline.send_due_digests(two, due + timedelta(minutes=1))
        assert (again.enqueued, again.sent) == (0, 0)
    recipients = sorted(message.rcpt_tos for message in smtp_server.handler.messages)
    assert recipients == sorted([f"r{i}@example.com"] for i in range(5))
