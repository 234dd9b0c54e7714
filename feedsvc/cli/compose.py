"""The composition root: the only place that builds the parts from the config and
wires them together for the commands."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from feedsvc import pipeline
from feedsvc.config import Config, LoadedConfig, load_config
from feedsvc.errors import ConfigError, QueryError
from feedsvc.fetch import Fetcher
from feedsvc.mail import open_mailer
from feedsvc.match import MatchIndex
from feedsvc.pipeline import Services
from feedsvc.render import DigestRenderer
from feedsvc.store import Storage, open_storage
from feedsvc.workers import install_match_index

log = logging.getLogger("feedsvc")


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
    beside_package = Path(__file__).resolve().parents[2] / "templates"
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


#: Told the names of subscriptions whose feeds a poll changed (the web app's cache).
FeedsChanged = Callable[[set[str]], None]


def _nobody_listens(names: set[str]) -> None:
    """No web app runs beside the one-shot commands."""


@contextlib.asynccontextmanager
async def open_services(
    loaded: LoadedConfig,
    *,
    parse_in_processes: bool,
    index: MatchIndex | None = None,
    on_feeds_changed: FeedsChanged = _nobody_listens,
    read_only: bool = False,
) -> AsyncIterator[Services]:
    """Build every part from the config, yield them, and close them in reverse order.

    ``read_only``: neither migrate the database nor sync the config into it (the
    commands that only look: ``status``, ``digest --preview``).
    """
    index = index or build_index(loaded)
    async with (
        opened_storage(loaded.config, read_only=read_only) as storage,
        open_services_on(
            storage,
            loaded,
            parse_in_processes=parse_in_processes,
            index=index,
            on_feeds_changed=on_feeds_changed,
            read_only=read_only,
        ) as svc,
    ):
        yield svc


@contextlib.asynccontextmanager
async def open_services_on(
    storage: Storage,
    loaded: LoadedConfig,
    *,
    parse_in_processes: bool,
    index: MatchIndex,
    on_feeds_changed: FeedsChanged = _nobody_listens,
    read_only: bool = False,
) -> AsyncIterator[Services]:
    """:func:`open_services` over a storage the caller opened (and closes), for a web
    app that shares it and must exist before the services that tell it of changes."""
    config = loaded.config
    pool = _parse_pool(index) if parse_in_processes else None
    try:
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
                    parse_pool=pool,
                    on_feeds_changed=on_feeds_changed,
                )
                if not read_only:
                    await pipeline.sync_config(svc, now())
                yield svc
        finally:
            await mailer.close()
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


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


@contextlib.asynccontextmanager
async def opened_storage(config: Config, *, read_only: bool = False) -> AsyncIterator[Storage]:
    """The configured database, migrated unless ``read_only``, closed on exit."""
    storage = open_storage(config.database)
    try:
        if not read_only:
            await storage.migrate()
        yield storage
    finally:
        await storage.close()


def now() -> datetime:
    """The commands' clock."""
    return datetime.now(UTC)
