"""The exception hierarchy: each error names the resource it concerns and chains its cause."""

from __future__ import annotations

from typing import Any


class FeedsvcError(Exception):
    """Base of all errors feedsvc raises on purpose."""


class ConfigError(FeedsvcError):
    """The configuration is invalid; ``problems`` holds one ``FILE:LINE:COL: message`` each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class QueryError(FeedsvcError, ValueError):
    """A subscription query is malformed at ``position`` (0-based character offset)."""

    def __init__(self, message: str, position: int, subscription: str | None = None) -> None:
        super().__init__(f"{message} at {position}")
        self.message = message
        self.position = position
        #: The subscription whose query this is, when known.
        self.subscription = subscription


class SourceError(FeedsvcError):
    """Polling one source failed; recorded on the source, never fatal to a cycle.

    ``kind`` is a short machine-readable category (``network``, ``timeout``, ``http``,
    ``too_large``, ``not_a_feed``, ``parse``, ``forbidden_address`` ...).
    """

    def __init__(self, source: str, kind: str, message: str) -> None:
        super().__init__(f"{source}: {kind}: {message}")
        self.source = source
        self.kind = kind
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        # Parsing runs in worker processes: an error must unpickle in the parent, or
        # concurrent.futures declares the whole pool broken for every later source.
        return (type(self), (self.source, self.kind, self.message))


class FetchError(SourceError):
    """Retrieving a source failed (network, HTTP status, limits, address policy).

    ``retry_after`` is the delay in seconds the server asked for (429/503), if any;
    ``gone`` is true for 410, which disables the source.
    """

    def __init__(
        self,
        source: str,
        kind: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        gone: bool = False,
    ) -> None:
        super().__init__(source, kind, message)
        self.status = status
        self.retry_after = retry_after
        self.gone = gone

    def __reduce__(self) -> tuple[Any, ...]:
        details = {"status": self.status, "retry_after": self.retry_after, "gone": self.gone}
        return (_rebuild_fetch_error, (type(self), self.source, self.kind, self.message, details))


def _rebuild_fetch_error(
    cls: type[FetchError], source: str, kind: str, message: str, details: dict[str, Any]
) -> FetchError:
    return cls(source, kind, message, **details)


class ParseError(SourceError):
    """The fetched document is not a usable feed."""


class StorageError(FeedsvcError):
    """The database failed; wraps the driver's exception as ``__cause__``."""


class NotifyError(FeedsvcError):
    """Delivering a message failed; ``permanent`` decides whether to retry."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent
