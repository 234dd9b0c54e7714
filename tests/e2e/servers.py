"""Support of the end-to-end tests: config files, and the tests' fake servers (HTTP feeds
and SMTP, both on 127.0.0.1) as fixtures."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.servers.http import FeedServer, serve_feeds
from tests.servers.smtp import SmtpServer, smtp_in_thread

DATA = Path(__file__).resolve().parent.parent / "data"
CORPUS = DATA / "corpus"

__all__ = ["CORPUS", "FeedServer", "SmtpServer", "write_config"]


@pytest.fixture
async def feed_server() -> AsyncIterator[FeedServer]:
    """Serves the feeds a test puts in ``feed_server.files``."""
    async with serve_feeds() as server:
        yield server


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """An SMTP server apart from the test's event loop, as a real one would be."""
    with smtp_in_thread() as server:
        yield server


def write_config(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path
