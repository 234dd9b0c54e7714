"""Answering a feed request from its rendering: conditional GET (RFC 9110 §13) and gzip."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from starlette.requests import Request
from starlette.responses import Response

from feedsvc.web.context import Published
from feedsvc.web.feed_cache import RenderedFeed


def conditional_response(
    request: Request, rendered: RenderedFeed, published: Published
) -> Response:
    """200 with the body (gzipped when the client accepts it) or 304, with validators."""
    use_gzip = _accepts_gzip(request.headers.get("accept-encoding", ""))
    etag = rendered.gzip_etag if use_gzip else rendered.etag
    scope = "private" if published.meta.token else "public"
    headers = {
        "ETag": etag,
        "Last-Modified": rendered.last_modified_http,
        "Cache-Control": f"{scope}, max-age={published.max_age}",
        "Vary": "Accept-Encoding",
        "X-Content-Type-Options": "nosniff",
    }
    if _not_modified(request, rendered):
        return Response(status_code=304, headers=headers)
    if use_gzip:
        headers["Content-Encoding"] = "gzip"
    body = rendered.gzipped if use_gzip else rendered.body
    return Response(body, headers=headers, media_type=rendered.media_type)


def _not_modified(request: Request, rendered: RenderedFeed) -> bool:
    """If-None-Match wins over If-Modified-Since when both are sent (RFC 9110 §13.2.2)."""
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None:
        return _etag_matches(if_none_match, (rendered.etag, rendered.gzip_etag))
    since = _http_date(request.headers.get("if-modified-since"))
    return since is not None and rendered.last_modified <= since


def _etag_matches(header: str, current: tuple[str, ...]) -> bool:
    """Weak comparison, as If-None-Match requires; either encoding's tag validates the
    same content (the body differs only in Content-Encoding)."""
    if header.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") in current for tag in header.split(","))


def _http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # an invalid date is ignored (RFC 9110 §13.1.3)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _accepts_gzip(accept_encoding: str) -> bool:
    for part in accept_encoding.lower().split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip() in ("gzip", "x-gzip", "*"):
            return _quality(params) > 0
    return False


def _quality(params: str) -> float:
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.strip() == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0
