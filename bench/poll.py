"""Polling benchmark: 1,000 sources from a local server, fetch + parse, against a sequential loop.

Run from the repository root: .venv/bin/python bench/poll.py
"""

from __future__ import annotations

import asyncio
import io
import multiprocessing
import resource
import sys
import time
import urllib.request
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import feedparser
from aiohttp import web

from feedsvc.config import FetchConfig
from feedsvc.errors import SourceError
from feedsvc.fetch import Fetcher
from feedsvc.model import Fetched, SourceForUpdate

ROOT = Path(__file__).resolve().parents[1]
FEED = (ROOT / "tests" / "data" / "corpus" / "snapshots" / "emnews-t0.xml").read_bytes()
SOURCES = 1000
SEQUENTIAL_SAMPLE = 100
NOW = datetime(2026, 11, 26, tzinfo=UTC)


def serve(port_queue: multiprocessing.Queue[int]) -> None:
    """The feed server, in its own process like a real remote host."""

    async def feed(request: web.Request) -> web.Response:
        if request.headers.get("If-None-Match") == '"v1"':
            return web.Response(status=304, headers={"ETag": '"v1"'})
        headers = {"ETag": '"v1"'}
        return web.Response(body=FEED, content_type="application/atom+xml", headers=headers)

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/f/{n}", feed)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port_queue.put(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        await asyncio.Event().wait()

    asyncio.run(main())


async def cycle(
    fetcher: Fetcher, pool: ProcessPoolExecutor, sources: list[SourceForUpdate]
) -> tuple[int, int, list[SourceForUpdate]]:
    """One polling cycle: fetch all, parse the 200s in the pool; returns counts and new state."""
    # Imported here: feedsvc.parse speeds feedparser up, and the baseline must not get that.
    from feedsvc.parse import parse_feed

    loop = asyncio.get_running_loop()

    async def poll(source: SourceForUpdate) -> tuple[int, SourceForUpdate]:
        try:
            result = await fetcher.fetch(source)
        except SourceError:
            return 0, source
        if not isinstance(result, Fetched):
            return 0, source
        parse = partial(parse_feed, result.body, source=source.name, url=result.url,
                        headers=result.headers, now=NOW)
        parsed = await loop.run_in_executor(pool, parse)
        new = SourceForUpdate(source.name, source.url, result.etag, result.last_modified,
                              result.body_hash)
        return len(parsed.entries), new

    results = await asyncio.gather(*(poll(s) for s in sources))
    return sum(1 for n, _ in results if n), sum(n for n, _ in results), [s for _, s in results]


def sequential(port: int) -> float:
    """Entries per second of a plain fetch + feedparser.parse loop (feedparser defaults).

    Runs in a fresh process (see main) so that nothing feedsvc imports changes feedparser.
    """
    started, entries = time.perf_counter(), 0
    for n in range(SEQUENTIAL_SAMPLE):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/f/{n}") as response:
            body = response.read()
        entries += len(feedparser.parse(io.BytesIO(body)).entries)
    return entries / (time.perf_counter() - started)


async def measure(port: int) -> None:
    config = FetchConfig(allow_private=[f"127.0.0.1:{port}"], concurrency=50, per_host=50,
                         total_timeout=timedelta(seconds=60))
    sources = [SourceForUpdate(f"s{n}", f"http://127.0.0.1:{port}/f/{n}") for n in range(SOURCES)]
    with ProcessPoolExecutor(2) as pool:
        pool.submit(int).result()  # start the workers outside the measurement
        async with Fetcher(config) as fetcher:
            started, cpu = time.perf_counter(), time.process_time()
            fetched, entries, sources = await cycle(fetcher, pool, sources)
            first, poller_cpu = time.perf_counter() - started, time.process_time() - cpu
            started = time.perf_counter()
            refetched, _, _ = await cycle(fetcher, pool, sources)
            steady = time.perf_counter() - started
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as fresh:
        baseline = fresh.submit(sequential, port).result()
    print(f"first cycle : {SOURCES / first:8.0f} sources/s {entries / first:8.0f} entries/s "
          f"({fetched} sources, {entries} entries, {first:.2f} s, poller CPU {poller_cpu:.1f} s)")
    print(f"sequential  : {baseline / (entries / fetched):8.0f} sources/s {baseline:8.0f} "
          f"entries/s (fetch + feedparser.parse defaults, {SEQUENTIAL_SAMPLE} sources)")
    print(f"speed-up    : {entries / first / baseline:8.1f}x (target >= 3x)")
    print(f"steady cycle: {SOURCES / steady:8.0f} sources/s (all 304, {refetched} parsed, "
          f"{steady:.2f} s; target >= 1000)")
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak RSS    : {own:8.0f} MB poller, {workers:.0f} MB largest worker (target < 300)")


def main() -> None:
    ports: multiprocessing.Queue[int] = multiprocessing.Queue()
    server = multiprocessing.Process(target=serve, args=(ports,), daemon=True)
    server.start()
    try:
        asyncio.run(measure(ports.get(timeout=10)))
    finally:
        server.terminate()
        server.join()


if __name__ == "__main__":
    sys.exit(main())
