"""Fixtures of the fetch tests (the servers live in hostile.py)."""

from tests.fetch.hostile import (
    fetch,
    fetcher,
    guard_violations,
    make_config,
    network_guard,
    other_server,
    raw_server,
    server,
)

__all__ = [
    "fetch",
    "fetcher",
    "guard_violations",
    "make_config",
    "network_guard",
    "other_server",
    "raw_server",
    "server",
]
