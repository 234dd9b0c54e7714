"""Fixtures of the fetch tests: the network guard (network_guard.py) and the hostile
feeds with test-sized fetchers (hostile.py)."""

from tests.fetch.hostile import fetch, fetcher, make_config, other_server, raw_server, server
from tests.fetch.network_guard import guard_violations, network_guard

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
