"""The schema's checks, each reported at the position of the value it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.config.config_files import problems_of, write


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("timezone: Mars/Olympus\n", ":1:11: timezone: unknown time zone 'Mars/Olympus'"),
        ("http: {listen: localhost}\n", ":1:16: http.listen: listen must be HOST:PORT"),
        ("fetch: {min_every: 2h, max_every: 1h}\n", ":1:8: fetch: min_every must not be"),
        ("sources: [{name: a, url: 'http://e.com/', every: soon}]\n", "not a duration: 'soon'"),
        ("subscribers: [{email: a@b.cn, subscriptions: [], digest: daily}]\n", "at least 1 item"),
        ("subscriptions: [{name: s, query: x, keywords: [y]}]\n", "exactly one of query or"),
        ("mail: {delivery: pigeon}\n", "delivery must be smtp, maildir:PATH or file:PATH"),
        ("sources: [{name: a, url: 'http://e.com/', enabled: 'yes'}]\n", "valid boolean"),
    ],
)
def test_bad_values_are_reported_with_their_position(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    assert any(expected in p for p in problems_of(path)), problems_of(path)
