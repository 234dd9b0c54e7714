"""Fixtures of the end-to-end tests (the servers live in servers.py)."""

from tests.e2e.servers import feed_server, smtp_server

__all__ = ["feed_server", "smtp_server"]
