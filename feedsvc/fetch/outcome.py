"""What a final (non-redirect) HTTP response means for a source: new content, not modified,
or a failure carrying the status and the server's Retry-After."""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import aiohttp
from multidict import CIMultiDictProxy

from feedsvc.fetch.body import TooLarge, read_capped
from feedsvc.fetch.failure import Failure
from feedsvc.model import Fetched, NotModified, SourceForUpdate

_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d+)", re.IGNORECASE)
_READ_CHUNK = 64 * 1024


async def outcome(
    response: aiohttp.ClientResponse,
    source: SourceForUpdate,
    url: str,
    moved_to: str | None,
    limit: int,
) -> Fetched | NotModified:
    """The result of ``response``, reading its body under ``limit`` bytes.

    Raises:
        Failure: a status outside 2xx/304, an unsupported encoding, or a body too large.
    """
    headers = _flat_headers(response.headers)
    max_age = _max_age(headers)
    if response.status == 304:
        return NotModified(
            url,
            headers.get("etag", source.etag),
            headers.get("last-modified", source.last_modified),
            max_age=max_age,
            moved_to=moved_to,
        )
    if not 200 <= response.status < 300:
        raise _status_failure(response.status, response.reason, headers)
    body = await _read_body(response, headers, limit)
    body_hash = hashlib.sha256(body).hexdigest()
    etag, last_modified = headers.get("etag"), headers.get("last-modified")
    if body_hash == source.body_hash:
        return NotModified(url, etag, last_modified, max_age=max_age, moved_to=moved_to)
    return Fetched(url, body, headers, etag, last_modified, body_hash, moved_to, max_age=max_age)


async def _read_body(
    response: aiohttp.ClientResponse, headers: Mapping[str, str], limit: int
) -> bytes:
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip", "x-gzip", "deflate"):
        raise Failure("http", f"unsupported Content-Encoding {encoding!r}", status=response.status)
    declared = response.content_length
    if declared is not None and declared > limit:
        raise Failure("too_large", f"Content-Length {declared} exceeds {limit} bytes")
    try:
        return await read_capped(response.content.iter_chunked(_READ_CHUNK), encoding, limit)
    except TooLarge as e:
        raise Failure("too_large", str(e)) from e
    except zlib.error as e:
        raise Failure("network", f"corrupt {encoding} body: {e}") from e


def _status_failure(status: int, reason: str | None, headers: Mapping[str, str]) -> Failure:
    message = f"HTTP {status} {reason or ''}".strip()
    retry_after = _retry_after(headers)
    if retry_after is not None:
        message += f" (Retry-After {retry_after:.0f}s)"
    return Failure("http", message, status=status, retry_after=retry_after, gone=status == 410)


def _flat_headers(headers: CIMultiDictProxy[str]) -> dict[str, str]:
    flat: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        flat[key] = f"{flat[key]}, {value}" if key in flat else value
    return flat


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` in seconds (RFC 9110 §10.2.3: delay-seconds or an HTTP-date).

    An HTTP-date is measured against the response's own ``Date`` so that a skewed
    server clock does not distort the delay.
    """
    value = headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    when = _http_date(value)
    if when is None:
        return None
    reference = _http_date(headers.get("date", "")) or datetime.now(UTC)
    return max(0.0, (when - reference).total_seconds())


def _http_date(value: str) -> datetime | None:
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _max_age(headers: Mapping[str, str]) -> float | None:
    match = _MAX_AGE.search(headers.get("cache-control", ""))
    return float(match.group(1)) if match else None
