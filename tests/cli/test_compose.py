"""The composition root: read-only commands leave the database alone; the services tell
their listener which feeds a poll changed."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest

from feedsvc import pipeline
from feedsvc.cli import main, open_services
from feedsvc.config import load_config
from tests.cli.sample_config import good_config


def database_dump(path: Path) -> list[str]:
    with closing(sqlite3.connect(path)) as conn:
        return list(conn.iterdump())


def test_status_and_preview_neither_migrate_nor_sync_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = good_config(tmp_path)
    assert main(["poll", "-c", str(config)]) == 0
    text = config.read_text(encoding="utf-8").replace(
        "sources:\n", 'sources:\n  - {name: added, url: "http://example.com/feed"}\n'
    )
    config.write_text(text, encoding="utf-8")
    before = database_dump(tmp_path / "f.db")
    assert main(["status", "-c", str(config)]) == 0
    assert main(["status", "-c", str(config), "--json"]) == 0
    preview = tmp_path / "preview.html"
    args = ["digest", "-c", str(config), "--preview", "reader@example.com", "--out", str(preview)]
    assert main(args) == 0
    assert preview.read_text(encoding="utf-8")
    assert database_dump(tmp_path / "f.db") == before


def test_status_does_not_create_the_schema_of_a_new_database(tmp_path: Path) -> None:
    config = good_config(tmp_path)
    assert main(["status", "-c", str(config)]) == 1
    assert not [line for line in database_dump(tmp_path / "f.db") if "CREATE TABLE" in line]


async def test_the_services_tell_their_listener_which_feeds_a_poll_changed(
    tmp_path: Path,
) -> None:
    changed: list[set[str]] = []
    loaded = load_config(good_config(tmp_path))
    async with open_services(
        loaded, parse_in_processes=False, on_feeds_changed=changed.append
    ) as svc:
        await pipeline.update_due_sources(svc, datetime.now(UTC))
    assert changed == [{"hk"}]
