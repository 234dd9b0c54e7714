"""Claims with leases: how nodes share sources to poll and messages to send.

The same statement serves both databases: a claim is one ``UPDATE … WHERE id IN
(SELECT … FOR UPDATE SKIP LOCKED)``; SQLite ignores the locking clause and relies on
``BEGIN IMMEDIATE`` instead (see ``feedsvc.store.engine``). A claim lasts until its
``lease_until``; then the row is free for any node again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, or_, select, update


def lease_free(table: Table, now: datetime) -> ColumnElement[bool]:
    """No node holds the row: never claimed, released, or its lease has run out."""
    return or_(table.c.lease_until.is_(None), table.c.lease_until <= now)


def claim(
    table: Table,
    claimable: ColumnElement[bool],
    *,
    order_by: Iterable[ColumnElement[Any]],
    limit: int | None,
    values: Mapping[str, Any],
) -> Any:
    """``UPDATE table SET values WHERE id IN (claimable rows FOR UPDATE SKIP LOCKED)``.

    The candidates are a materialised CTE so that PostgreSQL evaluates the locking
    SELECT exactly once (an inlined ``IN (SELECT … LIMIT)`` may be re-run and claim
    more than ``limit`` rows).
    """
    candidates = (
        select(table.c.id)
        .where(claimable)
        .order_by(*order_by)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("claimable")
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )
    return update(table).where(table.c.id.in_(select(candidates.c.id))).values(values)
