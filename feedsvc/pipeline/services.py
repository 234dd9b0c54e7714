"""What every flow is given (``Services``), what the flows report, and the first flow
of every run: the configuration into the database."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime, timedelta

from feedsvc.config import Config, SubscriptionConfig
from feedsvc.fetch import Fetcher
from feedsvc.mail import Mailer
from feedsvc.match import MatchIndex
from feedsvc.render import DigestRenderer
from feedsvc.store.base import SourceSpec, Storage, SubscriberSpec

#: How long a node may hold a claimed source or outbox message before others may take it.
LEASE = timedelta(minutes=5)


@dataclass(frozen=True)
class Services:
    """Everything the flows use, built once by the composition root (cli)."""

    config: Config
    storage: Storage
    fetcher: Fetcher
    index: MatchIndex
    renderer: DigestRenderer
    mailer: Mailer
    secret: str
    #: Identifies this node in leases.
    owner: str
    #: Called with the names of subscriptions whose feeds changed (the web cache).
    on_feeds_changed: Callable[[set[str]], None]
    #: Where CPU-bound parsing runs; ``None`` runs it in the default thread pool.
    parse_pool: Executor | None = None


@dataclass(frozen=True)
class SourceReport:
    """The outcome of one source update, as logged and summarised."""

    source: str
    status: str  # ok | not_modified | error
    new: int = 0
    changed: int = 0
    matches: int = 0
    error: str | None = None
    seconds: float = 0.0


#: Told of each finished source and how many the cycle claimed (a progress bar).
Progress = Callable[[SourceReport, int], None]


@dataclass(frozen=True)
class DigestReport:
    """What one run of the digest flow did."""

    enqueued: int
    sent: int
    failed: int


async def sync_config(svc: Services, now: datetime) -> None:
    """Make the database's sources and subscribers follow the config (an invariant in
    docs/architecture.md)."""
    await svc.storage.sync_sources(
        [SourceSpec(s.name, s.url, s.enabled) for s in svc.config.sources], now
    )
    await svc.storage.sync_subscribers(
        [SubscriberSpec(s.email, tuple(s.subscriptions)) for s in svc.config.subscribers], now
    )


def subscription_config(config: Config, name: str) -> SubscriptionConfig:
    """The named subscription.

    Raises:
        KeyError: the config has no such subscription. Loading a config checks that
            subscribers name only existing subscriptions, so this is a caller's mistake.
    """
    subscription = config.subscription(name)
    if subscription is None:
        raise KeyError(f"no subscription {name!r} in the config")
    return subscription
