"""The HTML pages: the list of public feeds, unsubscribe (RFC 8058) and source status."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, quote
from zoneinfo import ZoneInfo

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from feedsvc.feeds import feed_url
from feedsvc.model import SourceStatus
from feedsvc.tokens import InvalidToken, UnsubscribeRequest, verify_unsubscribe
from feedsvc.web.context import Published, WebContext, public_metas

_MAX_FORM_BYTES = 4096
_HTML_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class Pages:
    """The page endpoints, rendered from the templates' ``web/`` folder."""

    def __init__(self, ctx: WebContext, published: dict[str, Published]) -> None:
        self.ctx = ctx
        self.published = published
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(ctx.templates_dir / "web"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )

    async def feed_list(self, request: Request) -> Response:
        feeds = [
            {
                "name": meta.name,
                "title": meta.title,
                **{kind: feed_url(meta, kind) for kind in ("atom", "rss", "json")},
            }
            for meta in public_metas(self.published.values())
        ]
        opml_url = f"{self.ctx.config.http.base_url}/feeds.opml"
        return self._page("feeds.html", {"feeds": feeds, "opml_url": opml_url})

    async def unsubscribe(self, request: Request) -> Response:
        form = await _small_form(request) if request.method == "POST" else {}
        token = request.query_params.get("token") or form.get("token", "")
        try:
            wanted = verify_unsubscribe(self.ctx.secret, token)
        except InvalidToken:
            return self._page("unsubscribe.html", {"state": "invalid"}, status_code=400)
        if request.method == "POST":
            await self._unsubscribe(wanted)
            return self._unsubscribe_page(wanted, "done", token)
        return self._unsubscribe_page(wanted, "confirm", token)

    async def status(self, request: Request) -> Response:
        statuses = sorted(
            await self.ctx.storage.source_statuses(),
            key=lambda s: (_state(s) == "ok", s.name),  # failing (and disabled) first
        )
        tz = ZoneInfo(self.ctx.config.timezone)
        context = {
            "sources": [_status_row(s, tz) for s in statuses],
            "failing": sum(_state(s) == "failing" for s in statuses),
            "timezone": self.ctx.config.timezone,
            "generated": _local(self.ctx.clock(), tz),
            "lang": "en",
        }
        return self._page("status.html", context)

    async def _unsubscribe(self, wanted: UnsubscribeRequest) -> None:
        now = self.ctx.clock()
        for subscription in wanted.subscriptions:
            await self.ctx.storage.unsubscribe(wanted.email, subscription, now)

    def _unsubscribe_page(self, wanted: UnsubscribeRequest, state: str, token: str) -> Response:
        titles = [self._subscription_title(name) for name in wanted.subscriptions]
        action = f"/unsubscribe?token={quote(token, safe='')}"
        context = {"state": state, "email": wanted.email, "titles": titles, "action": action}
        return self._page("unsubscribe.html", context)

    def _subscription_title(self, name: str) -> str:
        sub = self.ctx.config.subscription(name)
        return sub.display_title if sub else name

    def _page(self, template: str, context: dict[str, Any], status_code: int = 200) -> Response:
        html = self.templates.get_template(template).render(context)
        return HTMLResponse(html, status_code=status_code, headers=_HTML_HEADERS)


async def _small_form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body of at most a few KB."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM_BYTES:
            break
    fields = parse_qs(body[:_MAX_FORM_BYTES].decode("utf-8", "replace"))
    return {key: values[0] for key, values in fields.items()}


def _state(status: SourceStatus) -> str:
    if not status.enabled:
        return "disabled"
    return "failing" if status.consecutive_failures else "ok"


def _status_row(status: SourceStatus, tz: ZoneInfo) -> dict[str, Any]:
    return {
        "name": status.name,
        "url": status.url,
        "state": _state(status),
        "consecutive_failures": status.consecutive_failures,
        "last_success": _local(status.last_success, tz),
        "last_error_at": _local(status.last_error_at, tz),
        "last_error_kind": status.last_error_kind or "",
        "last_error": status.last_error or "",
        "next_poll": _local(status.next_poll, tz),
        "entry_count": status.entry_count,
    }


def _local(moment: datetime | None, tz: ZoneInfo) -> str:
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S") if moment else "—"
