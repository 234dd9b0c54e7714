"""Digest throughput: render + build + deliver over pooled SMTP vs one connection per message.

Run from the repository root: ``.venv/bin/python bench/digest.py [--subscribers N]``.
Both runs use the same digests (about 20 matches each, built from the finews corpus)
and the same local aiosmtpd sink, which runs in its own process as a real server would.
The baseline renders and then opens one SMTP connection per message (``aiosmtplib.send``);
the pooled run uses ``feedsvc.mail.SmtpMailer`` (sessions reused, ``--concurrency`` of them)
and renders the next digests while earlier ones are on the wire. Each run gets a renderer
of its own, so neither starts with stories the other has rendered and cached.

Why 16 sessions by default: every message takes four request/reply round trips (MAIL,
RCPT, DATA, the data), and replies wait while the event loop renders; with few sessions
the single-process sink idles between them (4 sessions: ~550/s here, 16: ~750/s, where
both processes are busy). SmtpConfig allows up to 64.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import aiosmtplib

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "mail"))  # the corpus → DigestJob helpers of the tests

from mail_support import JobSpec, load_corpus, make_job  # noqa: E402

from feedsvc.config import SmtpConfig  # noqa: E402
from feedsvc.mail import SmtpMailer, build_message  # noqa: E402
from feedsvc.model import DigestJob, StoredEntry  # noqa: E402
from feedsvc.render import DigestRenderer  # noqa: E402

SENDER = "news@feeds.example.com"
#: Subscriptions whose terms give each digest about 20 stories from the corpus.
SUBSCRIPTIONS: list[dict[str, tuple[str, tuple[str, ...], int]]] = [
    {"companies": ("公司", ("公司", "股份"), 12), "energy": ("新能源", ("新能源", "光伏"), 8)},
    {"markets": ("市场", ("市场", "A股", "港股"), 12), "fx": ("美元", ("美元", "银行"), 8)},
]


def digest_jobs(count: int, entries: list[StoredEntry]) -> Iterator[DigestJob]:
    """``count`` digests, alternating locales and subscription sets, rotating the stories."""
    for i in range(count):
        rotated = entries[i % len(entries) :] + entries[: i % len(entries)]
        spec = JobSpec(
            SUBSCRIPTIONS[i % len(SUBSCRIPTIONS)],
            locale=("zh-CN", "en")[i % 2],
            timezone=("Asia/Shanghai", "Europe/London")[i % 2],
            subscriber=f"reader{i}@example.com",
        )
        yield make_job(spec, rotated)


def new_renderer() -> DigestRenderer:
    return DigestRenderer(REPO / "templates")


def message_for(renderer: DigestRenderer, job: DigestJob) -> bytes:
    return build_message(
        renderer.render(job),
        sender=f"feedsvc <{SENDER}>",
        to=job.subscriber,
        message_id=job.message_id,
        list_id="feedsvc digests <digests.feeds.example.com>",
        unsubscribe_url=job.unsubscribe_url,
        date=job.window_end,
    )


async def pooled_run(
    jobs: list[DigestJob], renderer: DigestRenderer, port: int, concurrency: int
) -> float:
    """Digests/s rendering in this task while ``concurrency`` workers send over pooled sessions."""
    config = SmtpConfig(
        host="127.0.0.1", port=port, starttls=False, concurrency=concurrency,
        rate_per_second=1e9, timeout=timedelta(seconds=30),
    )  # fmt: skip
    mailer = SmtpMailer(config)
    queue: asyncio.Queue[tuple[bytes, str] | None] = asyncio.Queue(maxsize=concurrency * 2)

    async def worker() -> None:
        while (item := await queue.get()) is not None:
            await mailer.send(item[0], sender=SENDER, recipient=item[1])

    started = time.perf_counter()
    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    for job in jobs:
        await queue.put((message_for(renderer, job), job.subscriber))
        # Rendering is CPU work on the event loop: yield after each digest so the workers
        # can answer the server's replies in between instead of in bursts.
        await asyncio.sleep(0)
    for _ in workers:
        await queue.put(None)
    await asyncio.gather(*workers)
    elapsed = time.perf_counter() - started
    await mailer.close()
    print(f"  pooled: {len(jobs)} digests in {elapsed:.1f}s, "
          f"{mailer.connections_opened} connections")  # fmt: skip
    return len(jobs) / elapsed


async def baseline_run(jobs: list[DigestJob], renderer: DigestRenderer, port: int) -> float:
    """Digests/s rendering each digest, then sending it over a connection of its own."""
    started = time.perf_counter()
    for job in jobs:
        raw = message_for(renderer, job)
        await aiosmtplib.send(raw, sender=SENDER, recipients=[job.subscriber],
                              hostname="127.0.0.1", port=port, start_tls=False)  # fmt: skip
    elapsed = time.perf_counter() - started
    print(f"  baseline: {len(jobs)} digests in {elapsed:.1f}s, {len(jobs)} connections")
    return len(jobs) / elapsed


def start_sink() -> tuple[subprocess.Popen[bytes], int]:
    """aiosmtpd's Sink handler (accepts and discards) in its own process."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    process = subprocess.Popen(
        [sys.executable, "-m", "aiosmtpd", "-n", "-c", "aiosmtpd.handlers.Sink",
         "-l", f"127.0.0.1:{port}"],
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("the aiosmtpd sink did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--baseline", type=int, default=2_000,
                        help="digests in the baseline run (it is the slow one)")  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    entries = load_corpus()
    renderer = new_renderer()
    jobs = list(digest_jobs(args.subscribers, entries))
    stories = sum(len(j.items) for j in jobs) / len(jobs)
    sample = renderer.render(jobs[0])
    started = time.perf_counter()
    for job in jobs[:500]:
        message_for(renderer, job)
    render_ms = (time.perf_counter() - started) / min(500, len(jobs)) * 1000
    print(f"{len(jobs)} subscribers, {stories:.1f} stories per digest, "
          f"HTML {len(sample.html) / 1024:.0f} KiB, "
          f"render+build {render_ms:.2f} ms per digest")  # fmt: skip

    sink, port = start_sink()
    try:
        baseline = asyncio.run(baseline_run(jobs[: args.baseline], new_renderer(), port))
        pooled = asyncio.run(pooled_run(jobs, new_renderer(), port, args.concurrency))
    finally:
        sink.terminate()
        sink.wait()
    print(f"baseline (one connection per message): {baseline:7.1f} digests/s")
    print(f"pooled SMTP (concurrency {args.concurrency}):          {pooled:7.1f} digests/s")
    print(f"ratio: {pooled / baseline:.2f}x (target >= 2.5x)")


if __name__ == "__main__":
    main()
