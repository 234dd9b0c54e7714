"""Polling through the pipeline: adaptive intervals, back-off and recovery, Retry-After,
410, permanent and temporary redirects, and the bound on bodies waiting to be parsed."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from feedsvc import cli, pipeline
from feedsvc.model import SourceForUpdate, SourceStatus
from feedsvc.pipeline import Services
from feedsvc.pipeline.poll import interleave_hosts

from .conftest import (
    T0_RFC822,
    OpenPipeline,
    ScriptedServer,
    failing,
    feed,
    redirect,
    rss,
    slow,
)

EVERY = timedelta(minutes=10)


async def status_of(svc: Services, name: str = "news") -> SourceStatus:
    return next(s for s in await svc.storage.source_statuses() if s.name == name)


def one_source(site: ScriptedServer, path: str = "/feed", every: str = "10m") -> str:
    return f'- {{name: news, url: "{site.url(path)}", every: {every}}}\n'


# -- the order of a cycle ---------------------------------------------------------------


def test_sources_start_round_robin_over_hosts() -> None:
    sources = [
        SourceForUpdate(n, u)
        for n, u in [
            ("a1", "http://A/1"),
            ("a2", "http://a/2"),
            ("a3", "http://a/3"),
            ("b1", "http://b/1"),
            ("c1", "https://c/1"),
        ]
    ]
    assert [s.name for s in interleave_hosts(sources)] == ["a1", "b1", "c1", "a2", "a3"]


# -- adaptive intervals through the pipeline -------------------------------------------


async def test_a_frequent_publisher_is_polled_more_often(
    site: ScriptedServer, open_pipeline: OpenPipeline
) -> None:
    site.routes["/feed"] = feed(rss(range(20, 0, -1)))
    async with open_pipeline(one_source(site)) as svc:
        t0 = datetime.now(UTC)
        await pipeline.update_due_sources(svc, t0)
        assert (await status_of(svc)).next_poll == t0 + EVERY
        site.routes["/feed"] = feed(rss(range(25, 0, -1)))  # five new in ten minutes
        [report] = await pipeline.update_due_sources(svc, t0 + EVERY)
        assert report.new == 5
        assert (await status_of(svc)).next_poll == t0 + EVERY + timedelta(minutes=5)


async def test_a_quiet_source_is_polled_less_and_less_often_up_to_the_maximum(
    site: ScriptedServer, open_pipeline: OpenPipeline
) -> None:
    site.routes["/feed"] = feed(rss(range(20, 0, -1)), etag='"v1"')
    async with open_pipeline(one_source(site)) as svc:
        t0 = datetime.now(UTC)
        await pipeline.update_due_sources(svc, t0)
        [quiet] = await pipeline.update_due_sources(svc, t0 + timedelta(hours=2))
        assert quiet.status == "not_modified"
        assert (await status_of(svc)).next_poll == t0 + timedelta(hours=3)
        await pipeline.update_due_sources(svc, t0 + timedelta(hours=30))
        assert (await status_of(svc)).next_poll == t0 + timedelta(hours=42)


async def test_the_feeds_own_hints_are_a_lower_bound_also_on_304(
    site: ScriptedServer, open_pipeline: OpenPipeline
) -> None:
    site.routes["/feed"] = feed(rss([1], ttl_minutes=60), etag='"v1"')
    site.routes["/cached"] = feed(rss([1]), etag='"v1"', **{"Cache-Control": "max-age=7200"})
    sources = one_source(site) + f'- {{name: cached, url: "{site.url("/cached")}"}}\n'
    async with open_pipeline(sources) as svc:
        t0 = datetime.now(UTC)
        await pipeline.update_due_sources(svc, t0)
        assert (await status_of(svc)).next_poll == t0 + timedelta(hours=1)
        assert (await status_of(svc, "cached")).next_poll == t0 + timedelta(hours=2)
        later = t0 + timedelta(hours=2)
        reports = await pipeline.update_due_sources(svc, later)
        assert {r.status for r in reports} == {"not_modified"}
        # the ttl read at the last parse still holds when the 304 carries no feed
        assert (await status_of(svc)).next_poll == later + timedelta(hours=1)
        assert (await status_of(svc, "cached")).next_poll == later + timedelta(hours=2)


# -- errors: back-off, recovery, Retry-After, 410 ---------------------------------------


async def test_errors_back_off_exponentially_and_the_first_success_recovers(
    site: ScriptedServer, open_pipeline: OpenPipeline
) -> None:
    site.routes["/feed"] = failing(500)
    async with open_pipeline(one_source(site)) as svc:
        now, delays = datetime.now(UTC), []
        for _ in range(4):
            [report] = await pipeline.update_due_sources(svc, now)
            assert report.status == "error" and "500" in (report.error or "")
            status = await status_of(svc)
            assert status.next_poll is not None
            delays.append(status.next_poll - now)
            now = status.next_poll
        assert status.consecutive_failures == 4 and status.last_error_kind == "http"
        for n, delay in enumerate(delays):
            assert EVERY * 2**n * 0.8 <= delay <= EVERY * 2**n * 1.2
        site.routes["/feed"] = feed(rss([1, 2]))
        [recovered] = await pipeline.update_due_sources(svc, now)
        status = await status_of(svc)
    assert recovered.status == "ok" and status.consecutive_failures == 0
    assert status.next_poll == now + EVERY and status.last_success == now


@pytest.mark.parametrize(
    ("headers", "status", "wait"),
    [
        ({"Retry-After": "7200"}, 429, timedelta(hours=2)),
        # an HTTP date counts from the server's own Date: clocks differ
        (
            {"Retry-After": "Thu, 26 Nov 2026 11:00:00 GMT", "Date": T0_RFC822},
            503,
            timedelta(hours=3),
        ),
    ],
    ids=["429 seconds", "503 HTTP date"],
)
async def test_retry_after_is_honoured_and_recorded(
    site: ScriptedServer,
    open_pipeline: OpenPipeline,
    headers: dict[str, str],
    status: int,
    wait: timedelta,
) -> None:
    site.routes["/feed"] = failing(status, **headers)
    async with open_pipeline(one_source(site, every="1m")) as svc:
        now = datetime.now(UTC)
        await pipeline.update_due_sources(svc, now)
        recorded = await status_of(svc)
        assert await pipeline.update_due_sources(svc, now + wait - timedelta(seconds=1)) == []
    assert recorded.next_poll == now + wait
    assert recorded.last_error_kind == "http"
    assert f"HTTP {status}" in (recorded.last_error or "")
    assert "Retry-After" in (recorded.last_error or "")


async def test_410_disables_the_source_with_the_reason_shown(
    site: ScriptedServer, open_pipeline: OpenPipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    site.routes["/feed"] = failing(410)
    async with open_pipeline(one_source(site)) as svc:
        now = datetime.now(UTC)
        await pipeline.update_due_sources(svc, now)
        assert await pipeline.update_due_sources(svc, now + timedelta(days=30)) == []
    assert site.hits["/feed"] == 1
    shown = (await status_json(capsys))["news"]
    assert shown["state"] == "disabled" and "410" in shown["last_error"]


async def status_json(capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, Any]]:
    """``feedsvc status --json`` on the test's config, by source name (in a thread: the
    command runs its own event loop)."""
    capsys.readouterr()
    argv = ["status", "-c", str(Path("feedsvc.yaml").resolve()), "--json"]
    assert await asyncio.to_thread(cli.main, argv) == 0
    return {s["name"]: s for s in json.loads(capsys.readouterr().out)["sources"]}


# -- redirects --------------------------------------------------------------------------


async def test_301_and_308_move_the_source_logged_and_shown_in_status(
    site: ScriptedServer,
    open_pipeline: OpenPipeline,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    site.routes["/old"] = redirect(301, "/newer")
    site.routes["/newer"] = redirect(308, "/新")
    site.routes["/新"] = feed(rss([1, 2]), etag='"v1"')
    async with open_pipeline(one_source(site, "/old")) as svc:
        now = datetime.now(UTC)
        with caplog.at_level(logging.INFO, logger="feedsvc.pipeline"):
            [report] = await pipeline.update_due_sources(svc, now)
        [again] = await pipeline.update_due_sources(svc, now + timedelta(hours=1))
    assert (report.status, report.new, again.status) == ("ok", 2, "not_modified")
    assert site.hits == {"/old": 1, "/newer": 1, "/新": 2}
    assert "moved_to='http://127.0.0.1:" in caplog.text
    shown = (await status_json(capsys))["news"]
    assert shown["url"] == site.url("/%E6%96%B0") and shown["moved_from"] == site.url("/old")


@pytest.mark.parametrize("status", [302, 307])
async def test_302_and_307_keep_the_stored_url(
    site: ScriptedServer, open_pipeline: OpenPipeline, status: int
) -> None:
    site.routes["/feed"] = redirect(status, "/elsewhere")
    site.routes["/elsewhere"] = feed(rss([1]))
    async with open_pipeline(one_source(site)) as svc:
        now = datetime.now(UTC)
        await pipeline.update_due_sources(svc, now)
        await pipeline.update_due_sources(svc, now + timedelta(hours=1))
        stored = await status_of(svc)
    assert site.hits == {"/feed": 2, "/elsewhere": 2}
    assert stored.url == site.url("/feed") and stored.moved_from is None


async def test_a_permanent_redirect_to_a_not_modified_feed_still_moves_the_source(
    site: ScriptedServer, open_pipeline: OpenPipeline
) -> None:
    site.routes["/feed"] = feed(rss([1]), etag='"v1"')
    async with open_pipeline(one_source(site)) as svc:
        now = datetime.now(UTC)
        await pipeline.update_due_sources(svc, now)
        site.routes["/feed"] = redirect(301, "/moved")
        site.routes["/moved"] = feed(rss([1]), etag='"v1"')  # same feed: 304
        [report] = await pipeline.update_due_sources(svc, now + timedelta(hours=1))
        stored = await status_of(svc)
    assert report.status == "not_modified" and stored.url == site.url("/moved")


# -- bounded memory ---------------------------------------------------------------------


class CountingPool(ThreadPoolExecutor):
    """A real thread pool that records how many jobs (bodies) waited in it at once."""

    def __init__(self) -> None:
        super().__init__(1)
        self.outstanding = 0
        self.max_outstanding = 0
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self._lock:
            self.outstanding += 1
            self.max_outstanding = max(self.max_outstanding, self.outstanding)
        future = super().submit(fn, *args, **kwargs)
        future.add_done_callback(self._done)
        return future

    def _done(self, _future: Future[Any]) -> None:
        with self._lock:
            self.outstanding -= 1


async def test_bodies_waiting_for_the_parse_pool_are_bounded(
    site: ScriptedServer, open_pipeline: OpenPipeline
) -> None:
    body = rss(range(60, 0, -1))
    sources = ""
    for n in range(30):
        site.routes[f"/f{n}"] = slow(body, 0.01)
        sources += f'- {{name: s{n}, url: "{site.url(f"/f{n}")}"}}\n'
    pool = CountingPool()
    async with open_pipeline(sources, "concurrency: 30\nper_host: 30\nmax_pending: 3\n") as svc:
        counted = dataclasses.replace(svc, parse_pool=pool)
        reports = await pipeline.update_due_sources(counted, datetime.now(UTC))
    pool.shutdown()
    assert [r.status for r in reports] == ["ok"] * 30
    assert [r.source for r in reports] == sorted(f"s{n}" for n in range(30))  # claim order
    assert pool.max_outstanding in (1, 2, 3) and site.max_in_flight <= 3
