"""Hostile servers through the whole polling pipeline: each misbehaviour is recorded on its
source in the store, and one cycle with all of them still delivers a healthy source's entries
in bounded time.

The hostile server, the raw-bytes server and the network guard (an audit hook that fails
the test on any connect off this machine) are the fetch tests' own fixtures.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser
import pytest

from feedsvc import pipeline
from feedsvc.cli import open_services
from feedsvc.config import load_config
from feedsvc.model import SourceStatus
from feedsvc.pipeline import Services
from tests.e2e.servers import CORPUS, write_config
from tests.fetch.hostile import raw_server, server
from tests.fetch.network_guard import network_guard
from tests.servers.http import FeedServer

__all__ = ["network_guard", "raw_server", "server"]  # fixtures used by this module

EVERY = timedelta(minutes=1)
TOTAL_TIMEOUT_S = 1.0
#: The 304 case's server sends ``Cache-Control: max-age=600``: a floor for its interval.
MAX_AGE = timedelta(seconds=600)


@dataclass(frozen=True)
class Case:
    """A source on the hostile server and what must be recorded on it after one poll."""

    path: str
    #: The recorded error kind; ``None`` for a success.
    error_kind: str | None = None
    #: Exactly when the next poll is due, from the poll; ``None``: the back-off (errors)
    #: or ``EVERY`` (successes).
    next_in: timedelta | None = None
    disabled: bool = False
    #: The poll finds the feed unchanged (needs validators from an earlier poll).
    not_modified: bool = False
    #: Where the source's stored URL points afterwards (default: unchanged).
    url_path: str | None = None


CASES = {
    "trickle": Case("/trickle", "timeout"),
    "redirect-loop": Case("/loop/a", "redirect"),
    "moved-301": Case("/moved", url_path="/plain"),  # 301 then 308: both permanent
    "found-302": Case("/found"),
    "gone-410": Case("/gone", "http", disabled=True),
    "ratelimited-429": Case("/ratelimited", "http", next_in=timedelta(seconds=120)),
    # Retry-After 12:05:00 against the server's Date 12:00:00
    "unavailable-503": Case("/unavailable", "http", next_in=timedelta(seconds=300)),
    "not-modified-304": Case("/feed", next_in=MAX_AGE, not_modified=True),
    "wrong-content-type": Case("/wrong-type"),
    "lying-length": Case("RAW", "network"),
    "reset-mid-body": Case("/reset", "network"),
    "gzip-bomb": Case("/bomb", "too_large"),
    "body-50mb": Case("/huge", "too_large"),
    "html-page": Case("/page", "not_a_feed"),
    "metadata-redirect": Case("/metadata", "forbidden_address"),
    "entity-expansion": Case("/data/billion-laughs.xml", "entities"),
    "gb18030-no-charset": Case("/gb18030"),
}
LYING_REPLY = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\n"
    b"Content-Length: 100000\r\nConnection: close\r\n\r\n"
    + (CORPUS / "all.xml").read_bytes()[:1000]
)

OpenHostile = Callable[[dict[str, Case]], AbstractAsyncContextManager[Services]]


@pytest.fixture
async def hostile(
    tmp_path: Path,
    server: FeedServer,
    raw_server: Callable[[bytes], Awaitable[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> OpenHostile:
    """``async with hostile(cases) as svc``: real services polling these cases plus a
    healthy source, with test-sized limits (total timeout 1 s, body cap 512 KB)."""
    monkeypatch.chdir(tmp_path)
    raw = await raw_server(LYING_REPLY)

    def url(case: Case) -> str:
        return f"http://{raw}/feed.xml" if case.path == "RAW" else server.url(case.path)

    @asynccontextmanager
    async def run(cases: dict[str, Case]) -> AsyncIterator[Services]:
        lines = [
            f"database: sqlite:///{tmp_path / 'feedsvc.db'}",
            "secret: test-secret",
            f'mail: {{delivery: "maildir:{tmp_path / "mail"}"}}',
            f'fetch: {{allow_private: ["127.0.0.1:{server.port}", "{raw}"], connect_timeout: 1s,'
            f" read_timeout: 1s, total_timeout: {TOTAL_TIMEOUT_S}s, max_body_bytes: 524288}}",
            "subscriptions: [{name: electronics, keywords: [消费电子]}]",
            "sources:",
            f'  - {{name: healthy, url: "{server.url("/plain")}", every: 1m}}',
            *(f'  - {{name: {n}, url: "{url(c)}", every: 1m}}' for n, c in cases.items()),
        ]
        config = write_config(tmp_path / "feedsvc.yaml", "\n".join(lines) + "\n")
        async with open_services(load_config(config), parse_in_processes=False) as svc:
            yield svc

    return run


def assert_recorded(
    status: SourceStatus, case: Case, polled_at: datetime, server: FeedServer
) -> None:
    """The outcome of ``case`` as the store records it on its source."""
    assert status.last_error_kind == case.error_kind, status
    assert status.enabled is not case.disabled
    if case.error_kind is None:
        assert status.last_success == polled_at and status.consecutive_failures == 0
    else:
        assert status.last_error_at == polled_at and status.consecutive_failures == 1
        assert status.last_error
    assert status.next_poll is not None
    delay = status.next_poll - polled_at
    if case.next_in is not None:
        assert delay == case.next_in
    elif case.error_kind is None:
        assert delay == EVERY
    else:
        assert EVERY * 0.8 <= delay <= EVERY * 1.2  # first step of the back-off
    if case.url_path is not None:
        assert status.url == server.url(case.url_path) and status.moved_from is not None
    else:
        assert status.moved_from is None


async def statuses(svc: Services) -> dict[str, SourceStatus]:
    return {s.name: s for s in await svc.storage.source_statuses()}


async def poll_304_source_once(svc: Services, now: datetime) -> None:
    """The 304 case needs validators from a first poll before it can be not-modified."""
    [first] = await pipeline.update_due_sources(svc, now, names=["not-modified-304"])
    assert first.status == "ok"


@pytest.mark.parametrize("name", CASES)
async def test_each_hostile_source_records_its_outcome(
    hostile: OpenHostile, server: FeedServer, name: str
) -> None:
    case = CASES[name]
    async with hostile({name: case}) as svc:
        now = datetime.now(UTC)
        if case.not_modified:
            await poll_304_source_once(svc, now - timedelta(minutes=11))
        [report] = await pipeline.update_due_sources(svc, now, names=[name])
        recorded = (await statuses(svc))[name]
        if name == "gb18030-no-charset":
            matches = await svc.storage.recent_matches("electronics", 500)
    expected = "error" if case.error_kind else "not_modified" if case.not_modified else "ok"
    assert report.status == expected
    assert_recorded(recorded, case, now, server)
    if name == "gb18030-no-charset":
        titles = {m.entry.data.title for m in matches if m.entry.source == name}
        assert any(t.startswith("消费电子股大爆发") for t in titles), titles


async def test_one_cycle_with_every_hostile_source_keeps_the_healthy_one_healthy(
    hostile: OpenHostile, server: FeedServer
) -> None:
    healthy_entries = len(feedparser.parse((CORPUS / "all.xml").read_bytes()).entries)
    async with hostile(CASES) as svc:
        now = datetime.now(UTC) + timedelta(minutes=20)  # everything due, the 304 case too
        await poll_304_source_once(svc, now - timedelta(minutes=11))
        started = time.monotonic()
        reports = await pipeline.update_due_sources(svc, now)
        elapsed = time.monotonic() - started
        recorded = await statuses(svc)
    by_name = {r.source: r for r in reports}
    assert set(by_name) == {"healthy", *CASES}
    assert (by_name["healthy"].status, by_name["healthy"].new) == ("ok", healthy_entries)
    assert recorded["healthy"].entry_count == healthy_entries
    assert_recorded(recorded["healthy"], Case("/plain"), now, server)
    for name, case in CASES.items():
        assert_recorded(recorded[name], case, now, server)
    # The slowest source is cut off at the total timeout; nothing waits for another.
    assert elapsed < TOTAL_TIMEOUT_S + 3, f"cycle took {elapsed:.1f} s"
