"""Polling benchmark: 1,000 sources through the real pipeline, beside a sequential loop.

Run from the repository root: ``.venv/bin/python bench/poll.py [--sources N]``.

A local server (its own process, like a remote host) serves the corpus snapshot
(~50 entries) under N paths with an ETag. ``pipeline.update_due_sources`` then runs
with the services ``feedsvc run`` builds (SQLite store, matching, parse pool in
processes): a first cycle where every entry is new and a steady cycle where every
source answers 304. A sequential fetch + ``feedparser.parse`` loop (feedparser
defaults, fresh process) is measured in the same run. Peak RSS is sampled over the
poller and its parse workers together.
Targets: first cycle >= 3x the sequential loop; steady >= 1,000 sources/s; RSS < 300 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import multiprocessing
import os
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import feedparser
from aiohttp import web
from loopback_app import start_on_loopback

ROOT = Path(__file__).resolve().parents[1]
FEED = (ROOT / "tests" / "data" / "corpus" / "snapshots" / "emnews-t0.xml").read_bytes()
SEQUENTIAL_SAMPLE = 100
SUBSCRIPTIONS = ["新能源 OR 光伏", "港股", "央行 OR 美联储 -基金", "title:汽车", "AI OR 人工智能"]


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
        _runner, port = await start_on_loopback(app)
        port_queue.put(port)
        await asyncio.Event().wait()

    asyncio.run(main())


def sequential(port: int) -> float:
    """Entries per second of a plain fetch + feedparser.parse loop (feedparser defaults).

    Runs in a fresh process so that nothing feedsvc imports changes feedparser.
    """
    started, entries = time.perf_counter(), 0
    for n in range(SEQUENTIAL_SAMPLE):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/f/{n}") as response:
            body = response.read()
        entries += len(feedparser.parse(io.BytesIO(body)).entries)
    return entries / (time.perf_counter() - started)


def _burn(loops: int) -> float:
    started, total = time.perf_counter(), 0
    for i in range(loops):
        total += i * i
    return time.perf_counter() - started


def parallel_capacity(loops: int = 10_000_000) -> float:
    """How many cores' worth of pure-Python work two processes get here together (2.0
    on two idle cores): the ceiling of any speed-up from a process pool."""
    alone = _burn(loops)
    with ProcessPoolExecutor(2) as pool:
        started = time.perf_counter()
        list(pool.map(_burn, [loops, loops]))
        together = time.perf_counter() - started
    return 2 * alone / together


def write_config(tmp: Path, port: int, sources: int) -> Path:
    lines = [
        f"database: sqlite:///{tmp / 'bench.db'}",
        "secret: bench",
        f"mail: {{delivery: 'file:{tmp / 'out'}'}}",
        f'fetch: {{allow_private: ["127.0.0.1:{port}"], concurrency: 50, per_host: 50}}',
        "sources:",
        *(f'  - {{name: s{n}, url: "http://127.0.0.1:{port}/f/{n}"}}' for n in range(sources)),
        "subscriptions:",
        *(f"  - {{name: q{i}, query: '{q}'}}" for i, q in enumerate(SUBSCRIPTIONS)),
    ]
    path = tmp / "bench.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RssSampler:
    """Samples the summed RSS of this process and the given pool's workers."""

    def __init__(self, pool: ProcessPoolExecutor) -> None:
        self.pool = pool
        self.peak = 0.0
        self._stop = threading.Event()

    def pids(self) -> Sequence[int]:
        return [os.getpid(), *self.worker_pids()]

    def worker_pids(self) -> Sequence[int]:
        return list(getattr(self.pool, "_processes", None) or {})

    def worker_cpu(self) -> float:
        """CPU seconds the parse workers have used so far, together."""
        return sum(_cpu_s(pid) for pid in self.worker_pids())

    def run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, sum(_rss_mb(pid) for pid in self.pids()))

    @contextmanager
    def sampling(self) -> Iterator[None]:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        try:
            yield
        finally:
            self._stop.set()
            thread.join()


async def measure(port: int, sources: int) -> tuple[str, float, float, float]:
    """Both cycles through the pipeline; returns a report and the three figures."""
    from feedsvc import pipeline
    from feedsvc.cli import open_services
    from feedsvc.config import load_config
    from feedsvc.parse import parse_feed

    with tempfile.TemporaryDirectory() as tmp:
        loaded = load_config(write_config(Path(tmp), port, sources))
        async with open_services(loaded, parse_in_processes=True) as svc:
            assert isinstance(svc.parse_pool, ProcessPoolExecutor)
            loop = asyncio.get_running_loop()
            warm = partial(
                parse_feed, FEED, source="warm", url="http://x/", headers={}, now=datetime.now(UTC)
            )
            await asyncio.gather(*(loop.run_in_executor(svc.parse_pool, warm) for _ in range(8)))
            sampler = RssSampler(svc.parse_pool)
            t0 = datetime.now(UTC)
            with sampler.sampling():
                started, cpu = time.perf_counter(), time.process_time()
                workers_cpu = sampler.worker_cpu()
                first = await pipeline.update_due_sources(svc, t0, limit=sources)
                first_s, poller_cpu = time.perf_counter() - started, time.process_time() - cpu
                workers_cpu = sampler.worker_cpu() - workers_cpu
                started = time.perf_counter()
                steady = await pipeline.update_due_sources(
                    svc, t0 + timedelta(days=2), limit=sources
                )
                steady_s = time.perf_counter() - started
    ok = sum(1 for r in first if r.status == "ok")
    entries = sum(r.new for r in first)
    not_modified = sum(1 for r in steady if r.status == "not_modified")
    errors = [r.error for r in [*first, *steady] if r.status == "error"][:3]
    if errors or ok < sources or not_modified < sources:
        raise SystemExit(f"bench failed: {ok} ok, {not_modified} not modified, {errors}")
    report = (
        f"first cycle : {len(first) / first_s:8.0f} sources/s {entries / first_s:8.0f} entries/s"
        f" ({ok} ok of {len(first)}, {entries} entries stored, {first_s:.2f} s,"
        f" CPU: poller process {poller_cpu:.1f} s, parse workers {workers_cpu:.1f} s)\n"
        f"steady cycle: {len(steady) / steady_s:8.0f} sources/s"
        f" ({not_modified} not modified of {len(steady)}, {steady_s:.2f} s; target >= 1000)\n"
        f"peak RSS    : {sampler.peak:8.0f} MB poller + parse workers (target < 300)"
    )
    return report, entries / first_s, len(steady) / steady_s, sampler.peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=1000)
    args = parser.parse_args()
    ports: multiprocessing.Queue[int] = multiprocessing.Queue()
    server = multiprocessing.Process(target=serve, args=(ports,), daemon=True)
    server.start()
    try:
        port = ports.get(timeout=10)
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as fresh:
            baseline = fresh.submit(sequential, port).result()
        report, entries_per_s, steady_per_s, peak = asyncio.run(measure(port, args.sources))
    finally:
        server.terminate()
        server.join()
    per_source = len(feedparser.parse(io.BytesIO(FEED)).entries)
    print(report)
    print(
        f"sequential  : {baseline / per_source:8.0f} sources/s {baseline:8.0f} entries/s"
        f" (fetch + feedparser.parse defaults, {SEQUENTIAL_SAMPLE} sources)"
    )
    speedup = entries_per_s / baseline
    print(f"speed-up    : {speedup:8.1f}x (target >= 3x)")
    print(f"parallelism : {parallel_capacity():8.2f} cores' worth for two CPU-bound processes")
    missed = [
        name
        for name, met in [
            ("speed-up", speedup >= 3),
            ("steady", steady_per_s >= 1000),
            ("RSS", peak < 300),
        ]
        if not met
    ]
    print("targets     : " + (f"MISSED {', '.join(missed)}" if missed else "all met"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
