"""Parsing benchmark: entries/s of parse_feed's fast path, its feedparser path and plain feedparser.

Run from the repository root: ``.venv/bin/python bench/parse.py [--seconds S]``.

On the corpus Atom feed (tests/data/corpus/all.xml) and its RSS 2.0 twin
(tests/data/corpus/rss2/all.xml), in one process and one run: ``parse_feed`` with its
lxml fast path (the default), ``parse_feed(..., fast_path=False)`` (feedparser with our
decoding, sanitising and keys), and ``feedparser.parse`` with its defaults (what a plain
sequential poller does). Plain feedparser runs in a fresh process, since importing
feedsvc.parse memoises one of feedparser's functions.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FEEDS = {
    "Atom (corpus/all.xml)": ROOT / "tests" / "data" / "corpus" / "all.xml",
    "RSS 2.0 (corpus/rss2/all.xml)": ROOT / "tests" / "data" / "corpus" / "rss2" / "all.xml",
}


def entries_per_second(parse_once: Callable[[], int], seconds: float) -> float:
    """Repeats ``parse_once`` (which returns its entry count) for about ``seconds``."""
    parse_once()  # warm caches and imports
    started, entries = time.perf_counter(), 0
    while (elapsed := time.perf_counter() - started) < seconds:
        entries += parse_once()
    return entries / elapsed


def feedsvc_rate(path: Path, fast_path: bool, seconds: float) -> float:
    from feedsvc.parse import parse_feed

    body = path.read_bytes()
    now = datetime.now(UTC)

    def once() -> int:
        parsed = parse_feed(
            body, source="bench", url="https://finews.withounder.com/feed.xml",
            headers={}, now=now, fast_path=fast_path,
        )  # fmt: skip
        return len(parsed.entries)

    return entries_per_second(once, seconds)


def plain_feedparser_rate(path: Path, seconds: float) -> float:
    import feedparser

    body = path.read_bytes()
    return entries_per_second(lambda: len(feedparser.parse(io.BytesIO(body)).entries), seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    args = parser.parse_args()
    spawn = multiprocessing.get_context("spawn")
    for label, path in FEEDS.items():
        with ProcessPoolExecutor(1, mp_context=spawn) as fresh:
            plain = fresh.submit(plain_feedparser_rate, path, args.seconds).result()
        fast = feedsvc_rate(path, True, args.seconds)
        slow = feedsvc_rate(path, False, args.seconds)
        print(f"{label}: (in parentheses: how many times faster the fast path is)")
        print(f"  parse_feed, lxml fast path : {fast:8.0f} entries/s")
        print(f"  parse_feed, feedparser path: {slow:8.0f} entries/s ({fast / slow:.1f}x)")
        print(f"  feedparser.parse defaults  : {plain:8.0f} entries/s ({fast / plain:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
