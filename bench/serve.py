"""Benchmark: requests/s of a served 50-entry Atom feed, cached (full and 304) beside a
baseline that regenerates it with feedgen per request and a bare fixed-bytes endpoint.

Run from the repository root: ``.venv/bin/python bench/serve.py [--seconds S]``.
One uvicorn process serves all four endpoints from one Starlette app over a real SQLite
database; one aiohttp client (keep-alive, N concurrent requests) measures each in turn,
in the same run. Targets: cached >= 5x baseline, and within 1.5x of the bare endpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from feedsvc.config import Config
from feedsvc.feeds import build_feed, feed_meta
from feedsvc.model import Match
from feedsvc.parse import parse_feed
from feedsvc.store import open_storage
from feedsvc.store.base import SourceSpec
from feedsvc.web import WebContext, create_app

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "corpus" / "all.xml"
NOW = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
#: Measurement slices per case (plus one warm-up round).
ROUNDS = 8
CONFIG = Config.model_validate(
    {
        "sources": [{"name": "finews", "url": "https://finews.withounder.com/feed.xml"}],
        "subscriptions": [{"name": "news", "title": "财经快讯", "query": "股", "max_entries": 50}],
    }
)


async def seed(database: str) -> None:
    """Store the corpus and match its newest 50 entries to ``news``."""
    storage = open_storage(database)
    await storage.migrate()
    await storage.sync_sources([SourceSpec("finews", CONFIG.sources[0].url)], NOW)
    parsed = parse_feed(
        CORPUS.read_bytes(), source="finews", url=CONFIG.sources[0].url, headers={}, now=NOW
    )
    stored = await storage.save_entries("finews", parsed.feed, parsed.entries[:50], NOW)
    await storage.save_matches([Match("news", s.entry_id, ("股",)) for s in stored], NOW)
    await storage.close()


def bench_app(database: str) -> Starlette:
    """The real app, plus ``/baseline/news.atom`` (feedgen per request, from the database
    like a naive server) and ``/bare`` (the cached body as fixed bytes)."""
    storage = open_storage(database)
    app = create_app(WebContext(CONFIG, storage, "bench-secret", ROOT / "templates"))
    meta = feed_meta(CONFIG, "news")
    bare: list[bytes] = []

    async def baseline(request: Request) -> Response:
        matches = await storage.recent_matches("news", 50)
        body = build_feed(meta, matches, kind="atom", now=datetime.now(UTC))
        return Response(body, media_type="application/atom+xml; charset=utf-8")

    async def fixed(request: Request) -> Response:
        if not bare:
            bare.append((await app.state.feed_cache.get("news", "atom")).body)
        return Response(bare[0], media_type="application/atom+xml; charset=utf-8")

    app.router.routes.append(Route("/baseline/news.atom", baseline))
    app.router.routes.append(Route("/bare", fixed))
    return app


def serve(database: str, port: int) -> None:
    uvicorn.run(bench_app(database), host="127.0.0.1", port=port, log_level="warning",
                access_log=False)  # fmt: skip


async def measure(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str], seconds: float, workers: int
) -> tuple[int, float, int, int]:
    """Requests completed in ``seconds`` by ``workers`` concurrent keep-alive clients, the
    time taken, and the last status and body size."""
    last = (0, 0)

    async def worker(until: float) -> int:
        nonlocal last
        done = 0
        while time.perf_counter() < until:
            async with http.get(url, headers=headers) as response:
                last = (response.status, len(await response.read()))
            done += 1
        return done

    start = time.perf_counter()
    counts = await asyncio.gather(*(worker(start + seconds) for _ in range(workers)))
    return sum(counts), time.perf_counter() - start, *last


async def run_client(base: str, seconds: float, workers: int) -> dict[str, float]:
    identity = {"Accept-Encoding": "identity"}
    connector = aiohttp.TCPConnector(limit=workers)
    feed = f"{base}/feeds/news.atom"
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as http:
        async with http.get(feed, headers=identity) as response:
            etag = response.headers["ETag"]
        cases = {
            "cached full": (feed, identity),
            "cached If-None-Match": (feed, {**identity, "If-None-Match": etag}),
            "cached full gzip": (feed, {"Accept-Encoding": "gzip"}),
            "baseline feedgen/request": (f"{base}/baseline/news.atom", identity),
            "bare fixed bytes": (f"{base}/bare", identity),
        }
        # Round-robin in short slices, so load from elsewhere hits every case alike.
        totals = {name: [0, 0.0] for name in cases}
        shapes = {}
        slice_ = seconds / ROUNDS
        for round_ in range(ROUNDS + 1):
            for name, (url, headers) in cases.items():
                done, took, status, size = await measure(http, url, headers, slice_, workers)
                shapes[name] = (status, size)
                if round_:  # round 0 warms up
                    totals[name][0] += done
                    totals[name][1] += took
        rates = {name: done / took for name, (done, took) in totals.items()}
        for name, rate in rates.items():
            status, size = shapes[name]
            print(f"{name:26} {rate:9.0f} req/s   (status {status}, {size} bytes)")
    return rates


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("the benchmark server did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    parser.add_argument("--workers", type=int, default=16, help="concurrent requests")
    parser.add_argument("--serve", nargs=2, metavar=("DATABASE", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        database = f"sqlite:///{Path(tmp) / 'bench.db'}"
        asyncio.run(seed(database))
        port = free_port()
        # The server runs in its own process, so client and server each get a core.
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", database, str(port)],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        try:
            wait_for_port(port, server)
            print(f"feed: 50 entries from {CORPUS.name}; {args.workers} concurrent, "
                  f"{args.seconds:.0f} s each; uvicorn + Starlette, aiohttp client")  # fmt: skip
            rates = asyncio.run(run_client(f"http://127.0.0.1:{port}", args.seconds, args.workers))
        finally:
            server.terminate()
            server.wait(timeout=10)
    return report(rates)


def report(rates: dict[str, float]) -> int:
    cached, baseline = rates["cached full"], rates["baseline feedgen/request"]
    bare = rates["bare fixed bytes"]
    over_baseline, below_bare = cached / baseline, bare / cached
    print(f"cached / baseline = {over_baseline:.1f}x (target >= 5x)")
    print(f"bare / cached     = {below_bare:.2f}x (target <= 1.5x)")
    print(f"304 / bare        = {rates['cached If-None-Match'] / bare:.2f}x")
    return 0 if over_baseline >= 5 and below_bare <= 1.5 else 1


if __name__ == "__main__":
    sys.exit(main())
