"""Local servers of ``bench/peer.py``: the generated feeds over HTTP and an SMTP sink,
each in its own process on 127.0.0.1 like a remote host.

Feed ``n`` (``/f/<n>.xml``) is Atom with 36 real entries of the finews corpus
(``tests/data/corpus/all.xml``, ~2 KB each), stories ``36n .. 36n+35`` modulo the 104 of
the corpus. Ids and links carry ``?f=<n>``, so every feed's entries are entries of their
own for both tools; titles and content are the corpus's, so a story recurs (same title,
same time) in about one feed in three, as wire copy does. Times are recent. Without
validators each body also differs by a build-time comment, as a generated feed's does,
so that no tool can skip parsing an unchanged body by its hash (feedsvc would).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import re
import signal
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from multiprocessing.sharedctypes import Synchronized, SynchronizedArray
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "data" / "corpus" / "all.xml"
ENTRIES_PER_FEED = 36
MARK = "@@F@@"
LAST_MODIFIED = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
#: Server counters: 200 answers, 304 answers, time of the first request since reset.
OK, NOT_MODIFIED, FIRST = 0, 1, 2


def _child_signals() -> None:
    """A server leaves Ctrl-C to the bench, which terminates it (SIGTERM ends it)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def feed_templates(base: datetime) -> tuple[str, list[str]]:
    """The feed's head and one template per corpus story (``MARK`` = feed number)."""
    text = CORPUS.read_text(encoding="utf-8")
    head, _, _ = text.partition("<entry>")
    head = re.sub(r"<id>[^<]*</id>", f"<id>http://127.0.0.1/f/{MARK}</id>", head, count=1)
    head = re.sub(
        r"<title([^>]*)>[^<]*</title>", rf"<title\1>金融消息 {MARK}</title>", head, count=1
    )
    head = re.sub(
        r"<updated>[^<]*</updated>", f"<updated>{base.isoformat()}</updated>", head, count=1
    )
    stories = []
    for k, entry in enumerate(re.findall(r"<entry>.*?</entry>", text, re.S)):
        when = (base - timedelta(minutes=7 * k)).isoformat()
        entry = re.sub(r"<id>([^<]*)</id>", rf"<id>\1?f={MARK}</id>", entry, count=1)
        entry = re.sub(r'<link href="([^"]*)"', rf'<link href="\1?f={MARK}"', entry, count=1)
        entry = re.sub(r"<(published|updated)>[^<]*</\1>", rf"<\1>{when}</\1>", entry)
        stories.append(entry)
    return head, stories


def feed_body(n: int, head: str, stories: list[str]) -> bytes:
    """Feed ``n``: the head and its 36 stories."""
    picked = (stories[(n * ENTRIES_PER_FEED + i) % len(stories)] for i in range(ENTRIES_PER_FEED))
    return (head + "".join(picked) + "</feed>").replace(MARK, str(n)).encode()


@dataclass
class FeedServer:
    """Handle on the feed server process: its port, counters and validator switch."""

    process: multiprocessing.Process
    port: int
    validators: Synchronized[int]
    counters: SynchronizedArray[float]

    def url(self, n: int) -> str:
        return f"http://127.0.0.1:{self.port}/f/{n}.xml"

    def reset(self, *, validators: bool) -> None:
        self.validators.value = int(validators)
        for i in (OK, NOT_MODIFIED, FIRST):
            self.counters[i] = 0


def _not_modified(headers: Any, etag: str) -> bool:
    if "If-None-Match" in headers:
        return bool(headers["If-None-Match"] == etag)
    since = headers.get("If-Modified-Since")
    try:
        return since is not None and parsedate_to_datetime(since) >= LAST_MODIFIED
    except (TypeError, ValueError):
        return False


def _serve_feeds(
    ports: multiprocessing.Queue[int],
    validators: Synchronized[int],
    counters: SynchronizedArray[float],
) -> None:
    import time

    from aiohttp import web
    from loopback_app import start_on_loopback

    _child_signals()

    head, stories = feed_templates(datetime.now(UTC).replace(second=0, microsecond=0))

    async def feed(request: web.Request) -> web.Response:
        if not counters[FIRST]:
            counters[FIRST] = time.time()
        n = int(request.match_info["n"])
        etag = f'"v1-{n}"'
        headers = {"ETag": etag, "Last-Modified": format_datetime(LAST_MODIFIED, usegmt=True)}
        body = feed_body(n, head, stories)
        if not validators.value:  # a generated feed: its build time differs on each request
            headers, body = {}, body + f"<!-- built {time.time()} -->".encode()
        elif _not_modified(request.headers, etag):
            counters[NOT_MODIFIED] += 1
            return web.Response(status=304, headers=headers)
        counters[OK] += 1
        return web.Response(body=body, content_type="application/atom+xml", headers=headers)

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/f/{n:\\d+}.xml", feed)
        _runner, port = await start_on_loopback(app)
        ports.put(port)
        await asyncio.Event().wait()

    asyncio.run(main())


def start_feed_server() -> FeedServer:
    """The feed server in its own process, validators on."""
    ports: multiprocessing.Queue[int] = multiprocessing.Queue()
    validators = multiprocessing.Value("i", 1)
    counters = multiprocessing.Array("d", 3)
    process = multiprocessing.Process(
        target=_serve_feeds, args=(ports, validators, counters), daemon=True
    )
    process.start()
    return FeedServer(process, ports.get(timeout=30), validators, counters)


def _serve_smtp(ports: multiprocessing.Queue[int], count: Synchronized[int]) -> None:
    from aiosmtpd.smtp import SMTP, Envelope, Session

    _child_signals()

    class Sink:
        async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
            with count.get_lock():
                count.value += 1
            return "250 OK"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(Sink(), enable_SMTPUTF8=True, hostname="sink"), "127.0.0.1", 0
        )
        ports.put(server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(main())


@dataclass
class SmtpSink:
    """Handle on the SMTP sink process: its port and the messages it accepted."""

    process: multiprocessing.Process
    port: int
    count: Synchronized[int]


def start_smtp_sink() -> SmtpSink:
    """An SMTP server in its own process that accepts and counts every message."""
    ports: multiprocessing.Queue[int] = multiprocessing.Queue()
    count = multiprocessing.Value("i", 0)
    process = multiprocessing.Process(target=_serve_smtp, args=(ports, count), daemon=True)
    process.start()
    return SmtpSink(process, ports.get(timeout=30), count)
