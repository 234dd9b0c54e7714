"""The operator endpoints: ``/healthz`` and Prometheus ``/metrics``."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from feedsvc.errors import StorageError
from feedsvc.model import SourceStatus
from feedsvc.store.base import Storage

log = logging.getLogger(__name__)

_HEALTH_TIMEOUT_SECONDS = 5.0


class Operations:
    """Health and metrics; ``feed_requests`` counts feed answers by HTTP status."""

    def __init__(self, storage: Storage, feed_requests: Counter[int]) -> None:
        self.storage = storage
        self.feed_requests = feed_requests

    async def healthz(self, request: Request) -> Response:
        try:
            await asyncio.wait_for(self.storage.outbox_counts(), _HEALTH_TIMEOUT_SECONDS)
        except (StorageError, TimeoutError) as e:
            # The details go to the log, not to whoever can reach the health check.
            log.warning("health check: database unavailable: %s", e or "timeout")
            return JSONResponse({"status": "error", "database": "unavailable"}, 503)
        return JSONResponse({"status": "ok", "database": "ok"})

    async def metrics(self, request: Request) -> Response:
        try:
            statuses = await self.storage.source_statuses()
            outbox = await self.storage.outbox_counts()
        except StorageError as e:
            return PlainTextResponse(f"database unavailable: {e}\n", 503)
        text = _prometheus_text(statuses, outbox, self.feed_requests)
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")


def _prometheus_text(
    statuses: Sequence[SourceStatus], outbox: dict[str, int], feed_requests: Counter[int]
) -> str:
    """The text exposition format 0.0.4, one family per metric."""
    families: list[tuple[str, str, str, list[tuple[dict[str, str], float]]]] = [
        ("feedsvc_source_consecutive_failures", "gauge", "Consecutive failed polls of a source.",
         [({"source": s.name}, s.consecutive_failures) for s in statuses]),
        ("feedsvc_source_last_success_timestamp_seconds", "gauge",
         "Unix time of a source's last successful poll.",
         [({"source": s.name}, s.last_success.timestamp()) for s in statuses if s.last_success]),
        ("feedsvc_source_entries", "gauge", "Entries stored for a source.",
         [({"source": s.name}, s.entry_count) for s in statuses]),
        ("feedsvc_outbox_messages", "gauge", "Digest messages in the outbox by state.",
         [({"state": k}, outbox.get(k, 0)) for k in ("pending", "sent", "failed")]),
        ("feedsvc_feed_requests_total", "counter", "Feed requests answered, by HTTP status.",
         [({"status": str(code)}, n) for code, n in sorted(feed_requests.items())]),
    ]  # fmt: skip
    lines: list[str] = []
    for name, kind, help_text, samples in families:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        lines += [f"{name}{_labels(labels)} {_number(value)}" for labels, value in samples]
    return "\n".join(lines) + "\n"


def _labels(labels: dict[str, str]) -> str:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
