"""The composition root: the only place that builds the parts from the config and
wires them together for the commands."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import secrets
import socket
from collections.abc import AsyncIterator
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


@contextlib.asynccontextmanager
async def open_services(
    loaded: LoadedConfig, *, parse_in_processes: bool, index: MatchIndex | None = None
) -> AsyncIterator[Services]:
    """Build every part from the config, yield them, and close them in reverse order."""
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
                    parse_pool=pool,
                )
                await pipeline.sync_config(svc, now())
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


@contextlib.asynccontextmanager
async def opened_storage(config: Config) -> AsyncIterator[Storage]:
    """The configured database, migrated, closed on exit."""
    storage = open_storage(config.database)
    try:
        await storage.migrate()
        yield storage
    finally:
        await storage.close()


def now() -> datetime:
    """The commands' clock."""
    return datetime.now(UTC)
