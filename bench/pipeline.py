"""Benchmark: poll + parse + store + match over the bundled corpus, beside a sequential
fetch + feedparser loop measured in the same run.

Run from the repository root: ``.venv/bin/python bench/pipeline.py [--copies N]``.
A local HTTP server on 127.0.0.1 serves the corpus feeds under N distinct paths, so
each source stores its own copy of every entry.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import feedparser
from aiohttp import web
from loopback_app import start_on_loopback

from feedsvc import pipeline
from feedsvc.cli import open_services
from feedsvc.config import load_config
from feedsvc.parse import parse_feed

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "data" / "corpus"
FEEDS = [
    "all.xml",
    "rss2/all.xml",
    "rss2/all.gb18030.xml",
    "traditional/all.xml",
    "by_source/finance.xml",
    "by_source/hk.xml",
]
SUBSCRIPTIONS = [
    "新能源 OR 光伏",
    "港股",
    "央行 OR 美联储 -基金",
    "title:汽车",
    "人民币",
    "芯片 OR 半导体",
    '"消费电子"',
    "黄金 OR 原油",
    "基金 -广告",
    "AI OR 人工智能",
]


async def serve_corpus(copies: int) -> tuple[web.AppRunner, int, list[str]]:
    bodies = {f"/{i}/{name}": (CORPUS / name).read_bytes() for i in range(copies) for name in FEEDS}

    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=bodies[request.path], content_type="application/xml")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner, port = await start_on_loopback(app)
    return runner, port, sorted(bodies)


def write_config(tmp: Path, port: int, paths: list[str]) -> Path:
    sources = "\n".join(
        f'  - {{name: s{i}, url: "http://127.0.0.1:{port}{p}"}}' for i, p in enumerate(paths)
    )
    subs = "\n".join(f"  - {{name: q{i}, query: '{q}'}}" for i, q in enumerate(SUBSCRIPTIONS))
    path = tmp / "bench.yaml"
    path.write_text(
        f"database: sqlite:///{tmp / 'bench.db'}\nsecret: bench\n"
        f"mail: {{delivery: 'file:{tmp / 'out'}'}}\n"
        f'fetch: {{allow_private: ["127.0.0.1:{port}"], concurrency: 50, per_host: 50}}\n'
        f"sources:\n{sources}\nsubscriptions:\n{subs}\n",
        encoding="utf-8",
    )
    return path


def sequential_baseline(port: int, paths: list[str]) -> tuple[int, float]:
    started = time.perf_counter()
    entries = 0
    for p in paths:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{p}") as response:
            body = response.read()
        entries += len(feedparser.parse(body).entries)
    return entries, time.perf_counter() - started


async def warm_up(svc: pipeline.Services) -> None:
    """Start the parse worker processes before timing: a service pays this once."""
    loop = asyncio.get_running_loop()
    body = (CORPUS / "by_source" / "mss.xml").read_bytes()
    job = functools.partial(
        parse_feed,
        body,
        source="warm-up",
        url="http://127.0.0.1/",
        headers={},
        now=datetime.now(UTC),
    )
    await asyncio.gather(*(loop.run_in_executor(svc.parse_pool, job) for _ in range(8)))


async def feedsvc_cycle(config: Path) -> tuple[int, float]:
    loaded = load_config(config)
    async with open_services(loaded, parse_in_processes=True) as svc:
        await warm_up(svc)
        started = time.perf_counter()
        reports = await pipeline.update_due_sources(svc, datetime.now(UTC))
        elapsed = time.perf_counter() - started
    errors = [r for r in reports if r.status != "ok"]
    if errors:
        raise SystemExit(f"bench failed: {errors[:3]}")
    return sum(r.new for r in reports), elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--copies", type=int, default=5, help="copies of the corpus feeds")
    args = parser.parse_args()
    runner, port, paths = await serve_corpus(args.copies)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = write_config(Path(tmp), port, paths)
            new, seconds = await feedsvc_cycle(config)
        base_entries, base_seconds = await asyncio.to_thread(sequential_baseline, port, paths)
    finally:
        await runner.cleanup()
    ours, baseline = new / seconds, base_entries / base_seconds
    print(f"sources: {len(paths)}  entries: {new}  subscriptions: {len(SUBSCRIPTIONS)}")
    print(f"feedsvc poll+parse+store+match: {ours:8.0f} entries/s ({seconds:.2f} s)")
    print(f"sequential fetch+feedparser   : {baseline:8.0f} entries/s ({base_seconds:.2f} s)")
    print(f"ratio: {ours / baseline:.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
