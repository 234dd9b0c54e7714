"""How the fetcher's failures are classified before they leave it as ``FetchError``."""

from __future__ import annotations

from typing import Any

import aiohttp

from feedsvc.fetch.guard import ForbiddenAddress

_MAX_MESSAGE = 300


class Failure(Exception):
    """A classified failure inside the fetcher, turned into FetchError at the boundary."""

    def __init__(self, kind: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.details = details


def shorten(message: str) -> str:
    """Error messages are stored and shown per source; servers can make them huge."""
    return message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 1] + "…"


def classify(error: Exception) -> tuple[str, str]:
    """The FetchError kind and message of an exception out of aiohttp or the OS.

    Raises:
        Exception: ``error`` itself when it is none of those (a bug, not a failing source).
    """
    if isinstance(error, TimeoutError):
        return "timeout", f"timed out ({type(error).__name__})"
    if isinstance(error, aiohttp.ClientConnectorError) and isinstance(
        error.os_error, ForbiddenAddress
    ):
        return "forbidden_address", str(error.os_error)
    if isinstance(error, aiohttp.InvalidURL | UnicodeError):
        return "unsupported_url", f"invalid URL: {error}"
    if isinstance(error, aiohttp.ClientError | OSError):
        return "network", f"{type(error).__name__}: {error}"
    raise error
