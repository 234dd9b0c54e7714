"""``SqlStorage``: the Storage Protocol on SQLAlchemy Core (async), for SQLite and PostgreSQL.

Each aggregate keeps its methods in a module of its own (sources, entries, matches,
subscribers, outbox), all on one ``Database`` (engine and transactions, in
``engine``); ``SqlStorage`` is their union.
"""

from __future__ import annotations

from feedsvc.store.engine import create_engine
from feedsvc.store.entries import EntryStorage
from feedsvc.store.matches import MatchStorage
from feedsvc.store.outbox import OutboxStorage
from feedsvc.store.sources import SourceStorage
from feedsvc.store.subscribers import SubscriberStorage


class SqlStorage(SourceStorage, EntryStorage, MatchStorage, SubscriberStorage, OutboxStorage):
    """The Storage Protocol on one SQLAlchemy async engine (SQLite or PostgreSQL).

    The same statements serve both databases; claims differ only in how each database
    keeps two nodes apart (see ``feedsvc.store.leases``).
    """


def open_storage(url: str) -> SqlStorage:
    """Open the database at ``url``; call ``await storage.migrate()`` before use.

    ``sqlite:///relative.db`` or ``sqlite:////absolute.db``: the file and its directory
    are created and the file switched to WAL mode now. ``postgresql://…`` or
    ``postgresql+asyncpg://…``: nothing connects before the first call.

    Raises:
        ValueError: the URL names another database or driver, or an in-memory SQLite
            database (each pooled connection would see its own empty database).
        StorageError: the SQLite file cannot be opened as a database.
    """
    return SqlStorage(create_engine(url))
