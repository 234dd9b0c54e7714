"""The running service: an in-memory APScheduler with tick jobs beside the HTTP server.

Each node ticks on its own; the ticks claim work from the database with leases, so
several nodes never poll one source or send one digest twice. The scheduler keeps its
jobs in memory: APScheduler 3.x job stores must never be shared between processes, so
the database, not the scheduler, decides who does what (see docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime

import uvicorn
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from starlette.applications import Starlette

from feedsvc import pipeline
from feedsvc.pipeline import Services

log = logging.getLogger("feedsvc.scheduler")

#: How often each node looks for due sources and due digests. Per-source intervals and
#: per-subscriber schedules live in the database and the config, not in these ticks.
POLL_TICK_SECONDS = 10
DIGEST_TICK_SECONDS = 15

TICK_ANCHOR = datetime(2000, 1, 1, 0, 0, 2, tzinfo=UTC)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


async def poll_tick(svc: Services, clock: Clock = utc_now) -> None:
    reports = await pipeline.update_due_sources(svc, clock())
    if reports:
        errors = sum(1 for r in reports if r.status == "error")
        log.info("poll tick sources=%d errors=%d", len(reports), errors)


async def digest_tick(svc: Services, clock: Clock = utc_now) -> None:
    report = await pipeline.send_due_digests(svc, clock())
    if report.enqueued or report.sent or report.failed:
        log.info(
            "digest tick enqueued=%d sent=%d failed=%d", report.enqueued, report.sent, report.failed
        )


Tick = Callable[[Services], Awaitable[None]]


def _guarded(name: str, tick: Tick, svc: Services) -> Callable[[], Awaitable[None]]:
    """A tick that logs its failure (e.g. the database is down) and lets the next tick retry."""

    async def run() -> None:
        try:
            await tick(svc)
        except Exception:
            log.exception("%s tick failed; retrying at the next tick", name)

    return run


def build_scheduler(svc: Services) -> AsyncIOScheduler:
    scheduler = AsyncIOScheduler(timezone=UTC)
    now = utc_now()
    ticks: list[tuple[str, Tick, int]] = [
        ("poll", poll_tick, POLL_TICK_SECONDS),
        ("digest", digest_tick, DIGEST_TICK_SECONDS),
    ]
    for name, tick, seconds in ticks:
        scheduler.add_job(
            _guarded(name, tick, svc),
            "interval",
            seconds=seconds,
            # Ticks fall two seconds after each minute (and quarter): digest windows end
            # on the minute, so a due digest goes out moments after its window closes.
            start_date=TICK_ANCHOR,
            id=name,
            name=f"{name} tick",
            next_run_time=now,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=seconds,
        )
    return scheduler


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM after serving, which kills the process before the
    caller's cleanup (parse workers, database) runs; feedsvc handles signals itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(svc: Services, app: Starlette, host: str, port: int) -> None:
    """Run the tick jobs and the HTTP server until SIGINT or SIGTERM, then return."""
    scheduler = build_scheduler(svc)
    server = _Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off"))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    scheduler.start()
    log.info("serving on http://%s:%d", host, port)
    try:
        await server.serve()
    finally:
        scheduler.shutdown(wait=False)
        log.info("stopped")
