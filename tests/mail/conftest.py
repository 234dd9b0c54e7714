"""Fixtures for render and mail tests; helpers live in mail_support (importable via sys.path)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from mail_support import REPO, JobSpec, load_corpus, make_job

from feedsvc.model import DigestJob, StoredEntry
from feedsvc.render import DigestRenderer
from tests.servers.smtp import SmtpServer, start_smtp


@pytest.fixture(scope="session")
def corpus() -> list[StoredEntry]:
    return load_corpus()


@pytest.fixture(scope="session")
def renderer() -> DigestRenderer:
    return DigestRenderer(REPO / "templates")


@pytest.fixture
def job_for(corpus: list[StoredEntry]) -> Callable[[JobSpec], DigestJob]:
    return lambda spec: make_job(spec, corpus)


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpServer]:
    server = await start_smtp()
    yield server
    await server.stop()
