"""Fixtures of the command tests: the fake feed server `feedsvc match` fetches from."""

from tests.e2e.servers import feed_server

__all__ = ["feed_server"]
