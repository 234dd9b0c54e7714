"""What the commands show: plain text tables (East Asian wide characters count as two
columns), the progress bar over sources, and the service's state as rows or JSON."""

from __future__ import annotations

import contextlib
import sys
import unicodedata
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Never

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from feedsvc.model import SourceStatus
from feedsvc.pipeline import SourceReport
from feedsvc.store import DeliveryProblem

POLL_COLUMNS = ["source", "status", "new", "changed", "matches", "seconds", "error"]
STATUS_COLUMNS = [
    "source",
    "state",
    "failures",
    "last success",
    "next poll",
    "entries",
    "url",
    "last error",
]
PROBLEM_COLUMNS = ["outbox", "to", "failed at", "state", "error"]


def table(header: list[str], rows: list[list[object]]) -> str:
    """A plain text table; widths count East Asian wide characters as two columns."""
    cells = [header, *[[str(c) for c in row] for row in rows]]
    widths = [max(_width(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  ".join(_pad(c, w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


class ProgressBar:
    """A progress bar over sources on a terminal (log lines print above it); elsewhere
    the per-source log lines already show progress, so it stays silent."""

    def __init__(self) -> None:
        self._bar: tqdm[Never] | None = None
        self._on_terminal = sys.stderr.isatty()
        self._logging = contextlib.ExitStack()

    def __enter__(self) -> ProgressBar:
        if self._on_terminal:
            self._logging.enter_context(logging_redirect_tqdm())
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._bar.close()
        self._logging.close()

    def __call__(self, report: SourceReport, total: int) -> None:
        if self._bar is None:
            self._bar = tqdm(total=total, unit="source", disable=not self._on_terminal)
        self._bar.set_postfix_str(f"{report.source}: {report.status}", refresh=False)
        self._bar.update()


def poll_row(r: SourceReport) -> list[object]:
    return [r.source, r.status, r.new, r.changed, r.matches, f"{r.seconds:.2f}", r.error or ""]


def poll_summary(reports: list[SourceReport]) -> str:
    failed = sum(1 for r in reports if r.status == "error")
    return (
        f"{len(reports)} sources polled, {sum(r.new for r in reports)} new entries, "
        f"{sum(r.matches for r in reports)} matches, {failed} failed"
    )


@dataclass(frozen=True)
class ServiceState:
    """What ``feedsvc status`` shows."""

    sources: list[SourceStatus]
    outbox: dict[str, int]
    problems: list[DeliveryProblem]
    unsubscribed: set[tuple[str, str]]


def status_text(state: ServiceState) -> str:
    """The sources' health, the outbox, failed deliveries and unsubscribes, for people."""
    parts = [
        table(STATUS_COLUMNS, [_status_row(s) for s in state.sources]),
        "outbox: " + ", ".join(f"{k}={v}" for k, v in sorted(state.outbox.items())),
    ]
    if state.problems:
        parts.append("\ndeliveries that failed (newest first):")
        parts.append(table(PROBLEM_COLUMNS, [_problem_row(p) for p in state.problems]))
    if state.unsubscribed:
        pairs = ", ".join(f"{e} ({s})" for e, s in sorted(state.unsubscribed))
        parts.append(f"unsubscribed (feedsvc resubscribe undoes it): {pairs}")
    return "\n".join(parts)


def status_report(state: ServiceState) -> dict[str, object]:
    """The same state for programs (``feedsvc status --json``)."""
    return {
        "sources": [_status_json(s) for s in state.sources],
        "outbox": state.outbox,
        "delivery_problems": [_json_ready(asdict(p)) for p in state.problems],
        "unsubscribed": [{"email": e, "subscription": s} for e, s in sorted(state.unsubscribed)],
    }


def _problem_row(problem: DeliveryProblem) -> list[object]:
    state = "failed" if problem.permanent else f"retry {_when(problem.next_attempt)}"
    return [problem.outbox_id, problem.subscriber, _when(problem.at), state, problem.error]


def _status_row(status: SourceStatus) -> list[object]:
    error = f"{status.last_error_kind}: {status.last_error}" if status.last_error else ""
    return [
        status.name,
        _state(status),
        status.consecutive_failures,
        _when(status.last_success),
        _when(status.next_poll),
        status.entry_count,
        status.url,
        error,
    ]


def _state(status: SourceStatus) -> str:
    if not status.enabled:
        return "disabled"
    return "failing" if status.consecutive_failures else "ok"


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if value else "-"


def _status_json(status: SourceStatus) -> dict[str, object]:
    return {**_json_ready(asdict(status)), "state": _state(status)}


def _json_ready(data: dict[str, object]) -> dict[str, object]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in data.items()}
