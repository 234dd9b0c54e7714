"""The ``feedsvc`` command: the composition root, the only module that wires everything."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import multiprocessing
import os
import secrets
import socket
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Never
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from starlette.applications import Starlette
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from feedsvc import __version__, pipeline, scheduler
from feedsvc.config import Config, FetchConfig, LoadedConfig, load_config
from feedsvc.errors import ConfigError, FeedsvcError, QueryError, SourceError
from feedsvc.fetch import Fetcher
from feedsvc.mail import open_mailer
from feedsvc.match import MatchIndex
from feedsvc.model import Fetched, ParsedFeed, SourceForUpdate, SourceStatus
from feedsvc.parse import parse_feed
from feedsvc.pipeline import Services
from feedsvc.render import DigestRenderer
from feedsvc.store import DeliveryProblem, Storage, open_storage
from feedsvc.web import WebContext, create_app, invalidate_feeds
from feedsvc.workers import install_match_index

log = logging.getLogger("feedsvc")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return int(args.handler(args))
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return EXIT_FAILURE
    except FeedsvcError as e:
        print(f"feedsvc: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="feedsvc", description=__doc__)
    parser.add_argument("--version", action="version", version=f"feedsvc {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, handler: object, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    def with_config(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument("-c", "--config", required=True, type=Path, help="the YAML config file")
        return sub

    with_config(command("check", cmd_check, "validate a config file"))
    with_config(command("run", cmd_run, "run the service: scheduler and HTTP server"))
    poll = with_config(command("poll", cmd_poll, "poll sources once now, then exit"))
    poll.add_argument("--source", action="append", help="only this source (repeatable)")
    digest = with_config(command("digest", cmd_digest, "send due digests, or preview one"))
    mode = digest.add_mutually_exclusive_group(required=True)
    mode.add_argument("--send-due", action="store_true", help="send the digests due now")
    mode.add_argument("--preview", metavar="EMAIL", help="write this subscriber's next digest")
    digest.add_argument(
        "--now",
        type=_parse_instant,
        help="act as if it were this ISO 8601 time (no offset: the config's time zone)",
    )
    digest.add_argument("--out", type=Path, help="with --preview: write the HTML here")
    match = command("match", cmd_match, "print the entries of feeds that a query matches")
    match.add_argument("query")
    match.add_argument("feeds", nargs="+", metavar="FEED", help="feed file or http(s) URL")
    publish = with_config(command("publish", cmd_publish, "write each subscription's feeds"))
    publish.add_argument("--out", required=True, type=Path)
    status = with_config(command("status", cmd_status, "show sources' health and the outbox"))
    status.add_argument("--json", action="store_true")
    resubscribe = with_config(
        command("resubscribe", cmd_resubscribe, "undo an unsubscribe (the operator's decision)")
    )
    resubscribe.add_argument("email")
    resubscribe.add_argument("subscription", nargs="*", help="default: all of the subscriber's")
    return parser


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    # APScheduler logs every tick at INFO; feedsvc logs what the ticks did instead.
    logging.getLogger("apscheduler").setLevel(logging.DEBUG if verbose else logging.WARNING)


def _parse_instant(text: str) -> datetime:
    """An ISO 8601 instant; without an offset it is read in the config's time zone."""
    try:
        return datetime.fromisoformat(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from e


def _instant(value: datetime | None, config: Config) -> datetime:
    if value is None:
        return _now()
    if value.tzinfo is None:
        value = value.replace(tzinfo=ZoneInfo(config.timezone))
    return value.astimezone(UTC)


# -- composition ----------------------------------------------------------------------


def load_checked_config(path: Path) -> tuple[LoadedConfig, MatchIndex]:
    """Load the config and compile every query, reporting a bad one at its YAML position."""
    loaded = load_config(path)
    return loaded, build_index(loaded)


def build_index(loaded: LoadedConfig) -> MatchIndex:
    """The one index of every subscription's query.

    Raises:
        ConfigError: naming every malformed query at its line and column.
    """
    config = loaded.config
    try:
        return MatchIndex.build({s.name: s.query_text for s in config.subscriptions})
    except QueryError:
        pass  # report every bad query, not only the first the combined build met
    problems = []
    for i, sub in enumerate(config.subscriptions):
        try:
            MatchIndex.build({sub.name: sub.query_text})
        except QueryError as e:
            field = "query" if sub.query is not None else "keywords"
            problems.append(f"{loaded.where(('subscriptions', i, field))}: {e}")
    raise ConfigError(problems)


def templates_dir() -> Path:
    """``$FEEDSVC_TEMPLATES``, else the ``templates/`` folder beside the package."""
    configured = os.environ.get("FEEDSVC_TEMPLATES")
    if configured:
        return Path(configured)
    beside_package = Path(__file__).resolve().parent.parent / "templates"
    return beside_package if beside_package.is_dir() else Path.cwd() / "templates"


def service_secret(config: Config) -> str:
    """The config's secret, else ``$FEEDSVC_SECRET``, else one generated once and kept
    in ``var/feedsvc.secret`` (fine for the demo; several nodes must share a configured one)."""
    if config.secret is not None:
        return config.secret.get_secret_value()
    if os.environ.get("FEEDSVC_SECRET"):
        return os.environ["FEEDSVC_SECRET"]
    path = Path("var/feedsvc.secret")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32), encoding="ascii")
        path.chmod(0o600)
        log.warning("no secret configured: generated one in %s", path)
    return path.read_text(encoding="ascii").strip()


@contextlib.asynccontextmanager
async def open_services(
    loaded: LoadedConfig,
    *,
    parse_in_processes: bool,
    index: MatchIndex | None = None,
    on_feeds_changed: Callable[[set[str]], None] = lambda names: None,
) -> AsyncIterator[Services]:
    """Build every part from the config, yield them, and close them in reverse order.

    ``on_feeds_changed`` is told the subscriptions whose feeds a poll changed.
    """
    config = loaded.config
    index = index or build_index(loaded)
    storage = open_storage(config.database)
    pool = _parse_pool(index) if parse_in_processes else None
    try:
        await storage.migrate()
        mailer = open_mailer(config.mail, base_dir=Path.cwd())
        try:
            async with Fetcher(config.fetch) as fetcher:
                svc = Services(
                    config=config,
                    storage=storage,
                    fetcher=fetcher,
                    index=index,
                    renderer=DigestRenderer(templates_dir()),
                    mailer=mailer,
                    secret=service_secret(config),
                    owner=f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}",
                    on_feeds_changed=on_feeds_changed,
                    parse_pool=pool,
                )
                await pipeline.sync_config(svc, _now())
                yield svc
        finally:
            await mailer.close()
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        await storage.close()


def _parse_pool(index: MatchIndex) -> ProcessPoolExecutor:
    """Parsing in worker processes uses both cores and never blocks the event loop; each
    worker also matches what it parses, with a copy of ``index``.

    ``spawn`` because forking a process that runs an event loop and threads is unsafe.
    """
    workers = max(1, min(4, os.cpu_count() or 1))
    return ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=install_match_index,
        initargs=(index,),
    )


def _now() -> datetime:
    return datetime.now(UTC)


# -- commands ---------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    loaded, _ = load_checked_config(args.config)
    config = loaded.config
    print(
        f"{args.config}: ok ({len(config.sources)} sources, {len(config.subscriptions)} "
        f"subscriptions, {len(config.subscribers)} subscribers)"
    )
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    asyncio.run(_run(*load_checked_config(args.config)))
    return EXIT_OK


async def _run(loaded: LoadedConfig, index: MatchIndex) -> None:
    # The app needs the storage that open_services opens, so it is built after the
    # services; no poll runs before serve(), when the app exists.
    app: Starlette | None = None

    def feeds_changed(names: set[str]) -> None:
        if app is not None:
            invalidate_feeds(app, names)

    async with open_services(
        loaded, parse_in_processes=True, index=index, on_feeds_changed=feeds_changed
    ) as svc:
        app = create_app(
            WebContext(
                config=svc.config,
                storage=svc.storage,
                secret=svc.secret,
                templates_dir=templates_dir(),
                websub_hub=svc.config.http.websub_hub,
            )
        )
        host, port = svc.config.http.host_port
        await scheduler.serve(svc, app, host, port)


def cmd_poll(args: argparse.Namespace) -> int:
    loaded, index = load_checked_config(args.config)
    reports = asyncio.run(_poll(loaded, index, args.source))
    print(
        _table(
            ["source", "status", "new", "changed", "matches", "seconds", "error"],
            [
                [r.source, r.status, r.new, r.changed, r.matches, f"{r.seconds:.2f}", r.error or ""]
                for r in reports
            ],
        )
    )
    failed = sum(1 for r in reports if r.status == "error")
    print(
        f"{len(reports)} sources polled, {sum(r.new for r in reports)} new entries, "
        f"{sum(r.matches for r in reports)} matches, {failed} failed"
    )
    return EXIT_FAILURE if failed and failed == len(reports) else EXIT_OK


async def _poll(
    loaded: LoadedConfig, index: MatchIndex, only: list[str] | None
) -> list[pipeline.SourceReport]:
    known = {s.name for s in loaded.config.sources}
    unknown = [name for name in only or [] if name not in known]
    if unknown:
        raise FeedsvcError(f"unknown source(s): {', '.join(unknown)}")
    names = only or [s.name for s in loaded.config.sources if s.enabled]
    async with open_services(loaded, parse_in_processes=len(names) > 4, index=index) as svc:
        with ProgressBar() as bar:
            return await pipeline.update_due_sources(svc, _now(), names=names, progress=bar)


class ProgressBar:
    """A progress bar over sources on a terminal (log lines print above it); elsewhere
    the per-source log lines already show progress, so it stays silent."""

    def __init__(self) -> None:
        self._bar: tqdm[Never] | None = None
        self._on_terminal = sys.stderr.isatty()
        self._logging = contextlib.ExitStack()

    def __enter__(self) -> ProgressBar:
        if self._on_terminal:
            self._logging.enter_context(logging_redirect_tqdm())
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._bar.close()
        self._logging.close()

    def __call__(self, report: pipeline.SourceReport, total: int) -> None:
        if self._bar is None:
            self._bar = tqdm(total=total, unit="source", disable=not self._on_terminal)
        self._bar.set_postfix_str(f"{report.source}: {report.status}", refresh=False)
        self._bar.update()


def cmd_digest(args: argparse.Namespace) -> int:
    loaded, index = load_checked_config(args.config)
    now = _instant(args.now, loaded.config)
    if args.preview:
        return asyncio.run(_preview(loaded, index, args.preview, now, args.out))
    report = asyncio.run(_send_due(loaded, index, now))
    print(f"digests enqueued={report.enqueued} sent={report.sent} failed={report.failed}")
    return EXIT_FAILURE if report.failed else EXIT_OK


async def _send_due(
    loaded: LoadedConfig, index: MatchIndex, now: datetime
) -> pipeline.DigestReport:
    async with open_services(loaded, parse_in_processes=False, index=index) as svc:
        return await pipeline.send_due_digests(svc, now)


async def _preview(
    loaded: LoadedConfig, index: MatchIndex, email: str, now: datetime, out: Path | None
) -> int:
    async with open_services(loaded, parse_in_processes=False, index=index) as svc:
        try:
            rendered = await pipeline.preview_digest(svc, email, now)
        except KeyError as e:
            raise FeedsvcError(str(e.args[0])) from e
    if rendered is None:
        print(f"nothing pending for {email}", file=sys.stderr)
        return EXIT_OK
    out = out or Path(f"var/preview-{email}.html")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(rendered.html, encoding="utf-8")
    out.with_suffix(".txt").write_text(
        f"Subject: {rendered.subject}\n\n{rendered.text}", encoding="utf-8"
    )
    print(f"{rendered.subject}\nHTML: {out}\ntext: {out.with_suffix('.txt')}")
    return EXIT_OK


def cmd_match(args: argparse.Namespace) -> int:
    try:
        index = MatchIndex.build({"query": args.query})
    except QueryError as e:
        print(f"feedsvc: malformed query: {e.message} at {e.position}", file=sys.stderr)
        return EXIT_USAGE
    return asyncio.run(_match(index, args.feeds))


async def _match(index: MatchIndex, feeds: Sequence[str]) -> int:
    status = EXIT_OK
    # The user names these feeds on their own machine, so the addresses they name (a
    # local test server, say) are allowed; redirects elsewhere are still guarded.
    config = FetchConfig(file_root="/", allow_private=_named_addresses(feeds))
    async with Fetcher(config) as fetcher:
        for feed in feeds:
            try:
                parsed = await _load_feed(fetcher, feed)
            except (SourceError, OSError) as e:
                print(f"feedsvc: {feed}: {e}", file=sys.stderr)
                status = EXIT_FAILURE
                continue
            source = parsed.feed.title
            found = index.match_many((entry, source) for entry in parsed.entries)
            for entry, hits in zip(parsed.entries, found, strict=True):
                if hits:
                    line = {
                        "id": entry.id,
                        "title": entry.title,
                        "link": entry.link,
                        "terms": list(hits[0].terms),
                    }
                    print(json.dumps(line, ensure_ascii=False), flush=True)
    return status


def _named_addresses(feeds: Sequence[str]) -> list[str]:
    """``address:port`` for every host named by an http(s) URL among ``feeds``."""
    allowed = []
    for feed in feeds:
        parts = urlsplit(feed)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            continue
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            infos = socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP)
        except OSError:
            continue  # the fetch reports the failure to resolve
        for *_, sockaddr in infos:
            address = str(sockaddr[0])
            allowed.append(f"[{address}]:{port}" if ":" in address else f"{address}:{port}")
    return allowed


async def _load_feed(fetcher: Fetcher, feed: str) -> ParsedFeed:
    """A feed given on the command line: an http(s) URL, a file: URL or a path."""
    if urlsplit(feed).scheme in ("http", "https", "file"):
        result = await fetcher.fetch(SourceForUpdate(name=feed, url=feed))
        assert isinstance(result, Fetched)  # no validators were sent
        body, url, headers = result.body, result.url, dict(result.headers)
    else:
        path = Path(feed)
        body, url, headers = path.read_bytes(), path.resolve().as_uri(), {}
    return parse_feed(body, source=feed, url=url, headers=headers, now=_now())


def cmd_publish(args: argparse.Namespace) -> int:
    loaded, _ = load_checked_config(args.config)
    written = asyncio.run(_publish(loaded.config, args.out))
    print(f"wrote {len(written)} files into {args.out}")
    return EXIT_OK


async def _publish(config: Config, out: Path) -> list[Path]:
    async with opened_storage(config) as storage:
        return await pipeline.publish_feeds(config, storage, out, _now())


def cmd_status(args: argparse.Namespace) -> int:
    loaded, _ = load_checked_config(args.config)
    state = asyncio.run(_status(loaded.config))
    if args.json:
        print(json.dumps(_status_report(state), ensure_ascii=False, indent=2))
        return EXIT_OK
    print(_table(STATUS_COLUMNS, [_status_row(s) for s in state.sources]))
    print("outbox: " + ", ".join(f"{k}={v}" for k, v in sorted(state.outbox.items())))
    if state.problems:
        print("\ndeliveries that failed (newest first):")
        print(_table(PROBLEM_COLUMNS, [_problem_row(p) for p in state.problems]))
    if state.unsubscribed:
        pairs = ", ".join(f"{e} ({s})" for e, s in sorted(state.unsubscribed))
        print(f"unsubscribed (feedsvc resubscribe undoes it): {pairs}")
    return EXIT_OK


@dataclass(frozen=True)
class ServiceState:
    """What ``feedsvc status`` shows."""

    sources: list[SourceStatus]
    outbox: dict[str, int]
    problems: list[DeliveryProblem]
    unsubscribed: set[tuple[str, str]]


async def _status(config: Config) -> ServiceState:
    async with opened_storage(config) as storage:
        return ServiceState(
            await storage.source_statuses(),
            await storage.outbox_counts(),
            await storage.delivery_problems(STATUS_PROBLEMS),
            await storage.unsubscribed(),
        )


def _status_report(state: ServiceState) -> dict[str, object]:
    return {
        "sources": [_status_json(s) for s in state.sources],
        "outbox": state.outbox,
        "delivery_problems": [_json_ready(asdict(p)) for p in state.problems],
        "unsubscribed": [{"email": e, "subscription": s} for e, s in sorted(state.unsubscribed)],
    }


#: Failed deliveries listed by ``feedsvc status``.
STATUS_PROBLEMS = 20
PROBLEM_COLUMNS = ["outbox", "to", "failed at", "state", "error"]


def _problem_row(problem: DeliveryProblem) -> list[object]:
    state = "failed" if problem.permanent else f"retry {_when(problem.next_attempt)}"
    return [problem.outbox_id, problem.subscriber, _when(problem.at), state, problem.error]


STATUS_COLUMNS = [
    "source",
    "state",
    "failures",
    "last success",
    "next poll",
    "entries",
    "url",
    "last error",
]


def _status_row(status: SourceStatus) -> list[object]:
    error = f"{status.last_error_kind}: {status.last_error}" if status.last_error else ""
    return [
        status.name,
        _state(status),
        status.consecutive_failures,
        _when(status.last_success),
        _when(status.next_poll),
        status.entry_count,
        status.url,
        error,
    ]


def cmd_resubscribe(args: argparse.Namespace) -> int:
    loaded, _ = load_checked_config(args.config)
    subscriber = next((s for s in loaded.config.subscribers if s.email == args.email), None)
    if subscriber is None:
        raise FeedsvcError(f"no subscriber {args.email!r} in {args.config}")
    names = args.subscription or subscriber.subscriptions
    unknown = sorted(set(names) - set(subscriber.subscriptions))
    if unknown:
        raise FeedsvcError(f"{args.email} is not subscribed to {', '.join(unknown)} in the config")
    asyncio.run(_resubscribe(loaded.config, args.email, names))
    print(f"{args.email}: subscribed again to {', '.join(names)} (from now on)")
    return EXIT_OK


async def _resubscribe(config: Config, email: str, names: Sequence[str]) -> None:
    async with opened_storage(config) as storage:
        for name in names:
            await storage.resubscribe(email, name, _now())


@contextlib.asynccontextmanager
async def opened_storage(config: Config) -> AsyncIterator[Storage]:
    """The configured database, migrated, closed on exit."""
    storage = open_storage(config.database)
    try:
        await storage.migrate()
        yield storage
    finally:
        await storage.close()


def _state(status: SourceStatus) -> str:
    if not status.enabled:
        return "disabled"
    return "failing" if status.consecutive_failures else "ok"


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if value else "-"


def _status_json(status: SourceStatus) -> dict[str, object]:
    return {**_json_ready(asdict(status)), "state": _state(status)}


def _json_ready(data: dict[str, object]) -> dict[str, object]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in data.items()}


def _table(header: list[str], rows: list[list[object]]) -> str:
    """A plain text table; widths count East Asian wide characters as two columns."""
    cells = [header, *[[str(c) for c in row] for row in rows]]
    widths = [max(_width(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  ".join(_pad(c, w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _width(text: str) -> int:
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


if __name__ == "__main__":
    sys.exit(main())
