"""Fixtures of the parse tests: no test here may reach off the machine."""

from tests.fetch.network_guard import network_guard

__all__ = ["network_guard"]
