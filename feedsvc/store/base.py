"""The ``Storage`` Protocol: the one contract every database backend fulfils.

Contract, stated once for every method:

- every datetime passed in or returned is timezone-aware UTC;
- driver failures raise :class:`feedsvc.errors.StorageError` chained to the driver's error;
  programming errors (wrong types, unknown names) pass through unchanged;
- each method is one transaction: it either happens whole or not at all;
- ``owner`` identifies a node (process) claiming work; a claim lasts until ``lease_until``
  and is then free for any node again, so a crashed node never holds work for ever;
- every list returned is in the order its method states, ties included (names sort in
  the database's collation); where an argument names a thing twice, the method says
  which one wins.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from feedsvc.model import (
    EntryData,
    FeedInfo,
    Match,
    MatchedEntry,
    OutboxMessage,
    SourceForUpdate,
    SourceStatus,
    StoredEntry,
)


@dataclass(frozen=True)
class SourceSpec:
    """What the config says about a source."""

    name: str
    url: str
    enabled: bool = True


@dataclass(frozen=True)
class SubscriberSpec:
    """What the config says about a subscriber (e-mail and subscriptions)."""

    email: str
    subscriptions: tuple[str, ...]


@dataclass(frozen=True)
class FetchOutcome:
    """The result of one poll of a source, to record on it.

    ``error_kind``/``error`` are set on failure; ``etag``/``last_modified``/``body_hash``
    on success (``None`` keeps the stored value only for a not-modified outcome).
    """

    at: datetime
    next_poll: datetime
    ok: bool
    not_modified: bool = False
    etag: str | None = None
    last_modified: str | None = None
    body_hash: str | None = None
    #: A permanent redirect's target: becomes the source's URL.
    moved_to: str | None = None
    error_kind: str | None = None
    error: str | None = None
    #: Disables the source (410 Gone), keeping ``error`` as the reason.
    disable: bool = False
    #: Adaptive polling state (see SourceForUpdate); ``None`` keeps the stored value,
    #: except ``feed_min_interval``, which a parsed success (ok, not not-modified)
    #: always replaces: a feed that drops its ``<ttl>`` drops the hint.
    last_new_at: datetime | None = None
    publish_gap: timedelta | None = None
    feed_min_interval: timedelta | None = None


@dataclass(frozen=True)
class DeliveryProblem:
    """An unsent outbox message whose last attempt failed, for the operator."""

    outbox_id: int
    subscriber: str
    message_id: str
    #: The last error, e.g. the mail server's reply ``550 5.1.1 mailbox unavailable``.
    error: str
    at: datetime
    #: Never retried (a permanent refusal); otherwise retried at ``next_attempt``.
    permanent: bool
    next_attempt: datetime


class Storage(Protocol):
    """Everything feedsvc keeps, behind one interface (SQLite and PostgreSQL)."""

    # -- lifecycle -------------------------------------------------------------

    async def migrate(self) -> None:
        """Create or upgrade the schema (idempotent, safe to run on every start)."""

    async def close(self) -> None:
        """Release connections."""

    # -- sources -------------------------------------------------------------

    async def sync_sources(self, specs: Sequence[SourceSpec], now: datetime) -> None:
        """Make the stored sources match the config.

        New sources are due at once; a changed config URL replaces the stored one
        (dropping validators); sources no longer in the config are disabled, keeping
        their entries. A source disabled by 410 stays disabled until its URL changes.
        """

    async def claim_due_sources(
        self, now: datetime, owner: str, lease_until: datetime, limit: int
    ) -> list[SourceForUpdate]:
        """Claim up to ``limit`` enabled sources whose next poll is due and that no
        other owner holds; a claimed source is not claimable again until
        ``lease_until`` passes or :meth:`record_fetch` releases it.

        When more are due than ``limit``, those due longest are claimed (among equally
        due ones, the source added first). Returned by next poll time, then name.
        """

    async def claim_sources(
        self, names: Sequence[str], now: datetime, owner: str, lease_until: datetime
    ) -> list[SourceForUpdate]:
        """Claim the named sources now, due or not (``feedsvc poll --source``).

        Unknown names, disabled sources and sources another owner holds are left out.
        Returned by next poll time, then name.
        """

    async def record_fetch(self, name: str, outcome: FetchOutcome) -> None:
        """Record a poll's outcome on the source and release its lease.

        Success resets consecutive failures and sets last success; failure increments
        them and stores the error kind and message.
        """

    async def record_fetches(self, outcomes: Mapping[str, FetchOutcome]) -> None:
        """:meth:`record_fetch` for several sources (by name) in one transaction: a
        polling cycle records its sources in batches, not one transaction each."""

    async def source_statuses(self) -> list[SourceStatus]:
        """Every source's health, failing sources first, then by name."""

    # -- entries -------------------------------------------------------------

    async def save_entries(
        self, source: str, feed: FeedInfo, entries: Sequence[EntryData], now: datetime
    ) -> list[StoredEntry]:
        """Store a poll's entries and return only those that are new or changed, in
        feed order (the order of ``entries``).

        An entry is the same as a stored one of that source when its ``key`` is equal,
        or when its link and (normalised) title equal a stored entry's (feeds that
        regenerate ids). Same ``content_hash``: unchanged, not returned. Different:
        updated in place (same ``entry_id``), ``changed_at = now``, returned.
        The source's ``FeedInfo`` is stored too.

        First wins, in feed order: a key repeated within ``entries`` counts once, as its
        first occurrence (later ones are ignored); a stored entry is matched by link
        and title to the first entry of the poll that has them, and never to one
        already matched by key; of several stored entries with that link and title,
        the one stored first is matched.
        """

    async def get_entries(self, entry_ids: Sequence[int]) -> list[StoredEntry]:
        """The stored entries with these ids, in the order of ``entry_ids`` (unknown ids
        are skipped; an id given twice is returned twice)."""

    # -- matches -------------------------------------------------------------

    async def save_matches(self, matches: Sequence[Match], now: datetime) -> int:
        """Record matches; a (subscription, entry) pair already stored gets its terms
        updated and ``matched_at`` kept. Returns the number of new pairs.

        A pair given more than once counts once, with the terms of its last occurrence.
        """

    async def delete_matches(self, subscription: str, entry_ids: Sequence[int]) -> None:
        """Forget matches that no longer hold (an updated entry stopped matching)."""

    async def recent_matches(self, subscription: str, limit: int) -> list[MatchedEntry]:
        """The newest ``limit`` matches of a subscription, newest entry first.

        An entry's time is its ``published``, else its ``updated``, else its
        ``first_seen``; entries of the same time come by ``first_seen``, newest first,
        then by ``entry_id``, highest (stored last) first.
        """

    async def latest_match_change(self, subscription: str) -> datetime | None:
        """When a subscription's feed last changed (newest match or entry change)."""

    # -- subscribers and digests ---------------------------------------------

    async def sync_subscribers(self, specs: Sequence[SubscriberSpec], now: datetime) -> None:
        """Record subscribers; a new (subscriber, subscription) pair starts at ``now``:
        matches made before it are never sent to that subscriber."""

    async def pending_matches(self, email: str, until: datetime) -> list[MatchedEntry]:
        """Matches of the subscriber's subscriptions, made after the pair started and at
        or before ``until``, not yet in any outbox message for this subscriber and not
        unsubscribed.

        Oldest match first: by ``matched_at``, then ``entry_id``, then subscription name.
        """

    async def enqueue_digest(
        self,
        email: str,
        message_id: str,
        raw: bytes,
        matches: Sequence[MatchedEntry],
        now: datetime,
    ) -> int | None:
        """Store a rendered digest in the outbox together with the (subscription, entry)
        pairs it delivers (a pair given twice is stored once), in one transaction.
        Returns the outbox id, or ``None`` when an outbox row with this ``message_id``
        exists already (the digest is not stored twice)."""

    async def delivered_entries(self, email: str, since: datetime) -> list[StoredEntry]:
        """Entries in digests enqueued for this subscriber at or after ``since`` (each
        once), so a story arriving again through another source is recognised; in the
        order they were stored (``entry_id``)."""

    async def claim_outbox(
        self, now: datetime, owner: str, lease_until: datetime, limit: int
    ) -> list[OutboxMessage]:
        """Claim unsent, not permanently failed messages whose next attempt is due.

        Oldest first: when more are due than ``limit``, the first enqueued are claimed;
        returned in the order they were enqueued (``OutboxMessage.id``).
        """

    async def mark_sent(self, outbox_id: int, now: datetime) -> None:
        """The message was accepted by the mail server or written to the mailbox."""

    async def mark_failed(
        self, outbox_id: int, now: datetime, error: str, *, permanent: bool, retry_at: datetime
    ) -> None:
        """A delivery attempt failed: permanent failures are never retried; others are
        retried at ``retry_at``."""

    async def outbox_counts(self) -> dict[str, int]:
        """Messages by state: ``pending``, ``sent``, ``failed``."""

    async def delivery_problems(self, limit: int) -> list[DeliveryProblem]:
        """Unsent messages whose last attempt failed, newest failure first (then the
        message enqueued last first)."""

    async def last_digest_at(self, email: str) -> datetime | None:
        """When the last digest for this subscriber was enqueued."""

    # -- unsubscribes ----------------------------------------------------------

    async def unsubscribe(self, email: str, subscription: str, now: datetime) -> bool:
        """Record an unsubscribe; returns False when it was already recorded."""

    async def unsubscribed(self) -> set[tuple[str, str]]:
        """All (email, subscription) pairs that unsubscribed."""

    async def resubscribe(self, email: str, subscription: str, now: datetime) -> None:
        """Remove an unsubscribe (the operator's decision). The pair starts again at
        ``now``: matches made while the subscriber was away are never sent."""
