"""Storage: the ``Storage`` Protocol and its SQL implementation (SQLite and PostgreSQL)."""

from feedsvc.store.base import (
    DeliveryProblem,
    FetchOutcome,
    SourceSpec,
    Storage,
    SubscriberSpec,
)
from feedsvc.store.sql import SqlStorage, open_storage

__all__ = [
    "DeliveryProblem",
    "FetchOutcome",
    "SourceSpec",
    "SqlStorage",
    "Storage",
    "SubscriberSpec",
    "open_storage",
]
