"""Fixtures of the end-to-end tests: the shared fake servers, set up in servers.py."""

from tests.e2e.servers import feed_server, smtp_server

__all__ = ["feed_server", "smtp_server"]
