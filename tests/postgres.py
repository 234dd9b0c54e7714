"""The PostgreSQL server of the tests: required in CI, optional on a developer's machine."""

from __future__ import annotations

import os

import pytest


def postgres_url() -> str:
    """``$FEEDSVC_TEST_POSTGRES``; without it the test fails in CI and is skipped elsewhere."""
    url = os.environ.get("FEEDSVC_TEST_POSTGRES")
    if url:
        return url
    if os.environ.get("CI") == "true":
        pytest.fail("CI=true but FEEDSVC_TEST_POSTGRES is unset: run .ci/start-postgres first")
    pytest.skip('FEEDSVC_TEST_POSTGRES is unset (eval "$(.ci/start-postgres)" to run these)')
