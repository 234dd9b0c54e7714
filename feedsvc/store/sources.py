"""Sources: kept in step with the config, claimed to be polled, each poll recorded."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, case, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from feedsvc.model import FeedInfo, SourceForUpdate, SourceStatus
from feedsvc.store.base import FetchOutcome, SourceSpec
from feedsvc.store.engine import Database, exclude_other_config_syncs, execute_many
from feedsvc.store.leases import claim, lease_free
from feedsvc.store.records import SECONDS, Record
from feedsvc.store.schema import entries, sources

#: What the poller needs of a source; a claim returns it.
SOURCE_FOR_UPDATE = Record(
    SourceForUpdate,
    sources,
    columns={
        "publish_gap": sources.c.publish_gap_s,
        "feed_min_interval": sources.c.feed_min_interval_s,
    },
    codecs={"publish_gap": SECONDS, "feed_min_interval": SECONDS},
)

_ENTRY_COUNTS = (
    select(entries.c.source_id, func.count().label("n")).group_by(entries.c.source_id).subquery()
)

#: A source's health; it is disabled when the config or a 410 Gone disabled it.
SOURCE_STATUS = Record(
    SourceStatus,
    sources,
    columns={
        "enabled": and_(sources.c.enabled, ~sources.c.gone),
        "entry_count": func.coalesce(_ENTRY_COUNTS.c.n, 0),
        "moved_from": case((sources.c.config_url != sources.c.url, sources.c.config_url)),
    },
)

#: The feed's own data from the source's last parse, kept on the source.
FEED_INFO = Record(FeedInfo, sources, prefix="feed_")

#: A new config URL is a different resource: what was learnt polling the old one goes.
_STATE_OF_THE_URL = (
    "etag",
    "last_modified",
    "body_hash",
    "last_new_at",
    "publish_gap_s",
    "feed_min_interval_s",
)

#: Statements of the polling hot path, built once: building one costs more than the
#: cached compilation saves (SQLAlchemy generates a cache key from the construct).
_UPDATE_SOURCE_BY_NAME = update(sources).where(sources.c.name == bindparam("b_name"))
_RECORD_FAILURE = _UPDATE_SOURCE_BY_NAME.values(
    consecutive_failures=sources.c.consecutive_failures + 1
)
_STORE_FEED_INFO = _UPDATE_SOURCE_BY_NAME.returning(sources.c.id)
_SOURCE_NAMES_IN = select(sources.c.name).where(
    sources.c.name.in_(bindparam("b_names", expanding=True))
)


class SourceStorage(Database):
    """The sources part of ``SqlStorage``."""

    async def sync_sources(self, specs: Sequence[SourceSpec], now: datetime) -> None:
        """Make the stored sources match the config (see the Protocol)."""
        async with self._transaction(writes=True) as conn:
            await exclude_other_config_syncs(conn)
            rows = await conn.execute(select(sources.c.name, sources.c.config_url))
            stored_urls = {row.name: row.config_url for row in rows}
            new = [spec for spec in specs if spec.name not in stored_urls]
            moved = [s for s in specs if stored_urls.get(s.name, s.url) != s.url]
            kept = [s for s in specs if stored_urls.get(s.name) == s.url]
            await execute_many(conn, insert(sources), [_new_source(s, now) for s in new])
            await execute_many(conn, _UPDATE_SOURCE_BY_NAME, [_moved_source(s, now) for s in moved])
            await execute_many(
                conn,
                _UPDATE_SOURCE_BY_NAME,
                [{"b_name": s.name, "enabled": s.enabled} for s in kept],
            )
            await conn.execute(
                update(sources)
                .where(sources.c.name.not_in([spec.name for spec in specs]))
                .values(enabled=False)
            )

    async def claim_due_sources(
        self, now: datetime, owner: str, lease_until: datetime, limit: int
    ) -> list[SourceForUpdate]:
        """Claim up to ``limit`` due sources that no other owner holds."""
        due = sources.c.next_poll <= now
        return await self._claim_sources(due, now, owner, lease_until, limit)

    async def claim_sources(
        self, names: Sequence[str], now: datetime, owner: str, lease_until: datetime
    ) -> list[SourceForUpdate]:
        """Claim the named sources now, due or not; sources disabled (by the config or a
        410) or held by another owner's live lease are left out."""
        named = sources.c.name.in_(names)
        return await self._claim_sources(named, now, owner, lease_until, None)

    async def _claim_sources(
        self,
        condition: ColumnElement[bool],
        now: datetime,
        owner: str,
        lease_until: datetime,
        limit: int | None,
    ) -> list[SourceForUpdate]:
        claimable = and_(condition, sources.c.enabled, ~sources.c.gone, lease_free(sources, now))
        statement = claim(
            sources,
            claimable,
            order_by=(sources.c.next_poll, sources.c.id),
            limit=limit,
            values={"lease_owner": owner, "lease_until": lease_until},
        ).returning(*SOURCE_FOR_UPDATE.columns, sources.c.next_poll)
        async with self._transaction(writes=True) as conn:
            claimed = (await conn.execute(statement)).all()
        rows = sorted(claimed, key=lambda row: (row.next_poll, row.name))
        return [SOURCE_FOR_UPDATE.from_row(row) for row in rows]

    async def record_fetch(self, name: str, outcome: FetchOutcome) -> None:
        """Record a poll's outcome on the source and release its lease.

        Raises:
            KeyError: no source has this name.
        """
        await self.record_fetches({name: outcome})

    async def record_fetches(self, outcomes: Mapping[str, FetchOutcome]) -> None:
        """Record several sources' outcomes in one transaction.

        Raises:
            KeyError: a source is unknown (nothing is recorded).
        """
        # Outcomes setting the same columns share one executemany: a cycle's batch
        # takes a few statements, not one per source.
        groups: dict[tuple[bool, tuple[str, ...]], list[dict[str, Any]]] = {}
        for name, outcome in outcomes.items():
            values = _outcome_values(outcome)
            key = (outcome.ok, tuple(sorted(values)))
            groups.setdefault(key, []).append({"b_name": name, **values})
        async with self._transaction(writes=True) as conn:
            await _require_sources(conn, list(outcomes))
            for (ok, _), rows in groups.items():
                statement = _UPDATE_SOURCE_BY_NAME if ok else _RECORD_FAILURE
                await conn.execute(statement, rows)

    async def source_statuses(self) -> list[SourceStatus]:
        """Every source's health, failing sources first, then by name."""
        statement = (
            select(*SOURCE_STATUS.columns)
            .select_from(
                sources.outerjoin(_ENTRY_COUNTS, _ENTRY_COUNTS.c.source_id == sources.c.id)
            )
            .order_by((sources.c.consecutive_failures > 0).desc(), sources.c.name)
        )
        async with self._transaction() as conn:
            rows = (await conn.execute(statement)).all()
        return [SOURCE_STATUS.from_row(row) for row in rows]


async def store_feed_info(conn: AsyncConnection, source: str, feed: FeedInfo) -> int:
    """Store the source's FeedInfo; returns the source's id.

    Raises:
        KeyError: no source has this name.
    """
    result = await conn.execute(_STORE_FEED_INFO, {"b_name": source, **FEED_INFO.values(feed)})
    source_id: int | None = result.scalar_one_or_none()
    if source_id is None:
        raise KeyError(f"unknown source {source!r}")
    return source_id


def _config_values(spec: SourceSpec, now: datetime) -> dict[str, Any]:
    """What the config says about a source, which makes it due at once."""
    return {
        "config_url": spec.url,
        "url": spec.url,
        "enabled": spec.enabled,
        "gone": False,
        "next_poll": now,
    }


def _new_source(spec: SourceSpec, now: datetime) -> dict[str, Any]:
    return {"name": spec.name, **_config_values(spec, now), "created_at": now}


def _moved_source(spec: SourceSpec, now: datetime) -> dict[str, Any]:
    """A new config URL: old validators, polling state and a 410 no longer apply."""
    return {"b_name": spec.name, **_config_values(spec, now), **dict.fromkeys(_STATE_OF_THE_URL)}


async def _require_sources(conn: AsyncConnection, names: Sequence[str]) -> None:
    """Raises KeyError for the first of ``names`` that no source has."""
    known = set((await conn.scalars(_SOURCE_NAMES_IN, {"b_names": names})).all())
    for name in names:
        if name not in known:
            raise KeyError(f"unknown source {name!r}")


def _outcome_values(outcome: FetchOutcome) -> dict[str, Any]:
    values: dict[str, Any] = {
        "next_poll": outcome.next_poll,
        "lease_owner": None,
        "lease_until": None,
    }
    if outcome.moved_to:
        values["url"] = outcome.moved_to
    if outcome.disable:
        values["gone"] = True
    if outcome.last_new_at is not None:
        values["last_new_at"] = outcome.last_new_at
    if outcome.publish_gap is not None:
        values["publish_gap_s"] = outcome.publish_gap.total_seconds()
    if outcome.ok and not outcome.not_modified:
        values["feed_min_interval_s"] = SECONDS.to_column(outcome.feed_min_interval)
    if not outcome.ok:
        # consecutive_failures + 1: see _RECORD_FAILURE.
        return values | {
            "last_error_at": outcome.at,
            "last_error_kind": outcome.error_kind,
            "last_error": outcome.error,
        }
    validators = {
        "etag": outcome.etag,
        "last_modified": outcome.last_modified,
        "body_hash": outcome.body_hash,
    }
    if outcome.not_modified:
        validators = {name: value for name, value in validators.items() if value is not None}
    return values | validators | {"last_success": outcome.at, "consecutive_failures": 0}
