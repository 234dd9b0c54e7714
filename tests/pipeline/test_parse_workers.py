"""Matching in the parse pool's worker processes: each worker gets the poller's index,
hits come back by entry key, and a cycle stores the matches matching in the poller makes."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime
from pathlib import Path

import pytest

from feedsvc import pipeline, workers
from feedsvc.cli import open_services
from feedsvc.config import load_config
from feedsvc.match import MatchIndex
from feedsvc.parse import parse_feed

from .conftest import ScriptedServer, feed, rss, write_config

NOW = datetime(2026, 11, 26, 8, tzinfo=UTC)
QUERIES = {
    "energy": "新能源",
    "solar-not-storage": "光伏 -储能",
    "seventh": 'title:"第7条"',
    "first-two": "/第[12]篇/",
}
#: Two items under one guid: the first (with 新能源) is the one stored and matched.
REPEATED_KEY = (
    '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>新闻</title>'
    "<link>https://news.example.cn/</link>"
    "<item><guid>tag:x,2026:1</guid><title>新能源汽车</title></item>"
    "<item><guid>tag:x,2026:1</guid><title>天气预报</title></item>"
    "</channel></rss>"
).encode()


def parse_and_match(body: bytes) -> tuple[object, workers.EntryHits | None]:
    return workers.parse_and_match(
        body,
        source="news",
        url="https://news.example.cn/feed",
        headers={},
        now=NOW,
        encoding=None,
        max_entries=500,
    )


@pytest.fixture
def worker_index(monkeypatch: pytest.MonkeyPatch) -> MatchIndex:
    """This process as a parse worker with an index installed (undone afterwards)."""
    index = MatchIndex.build(QUERIES)
    monkeypatch.setattr(workers, "_worker_index", None)
    workers.install_match_index(pickle.loads(pickle.dumps(index)))
    return index


def test_a_match_index_pickles_as_its_queries_and_matches_the_same() -> None:
    index = MatchIndex.build(QUERIES)
    copy = pickle.loads(pickle.dumps(index))
    parsed = parse_feed(rss(range(10, 0, -1)), source="news", url="u", headers={}, now=NOW)
    found = [index.match(entry, "news") for entry in parsed.entries]
    assert [copy.match(entry, "news") for entry in parsed.entries] == found
    assert {hit.subscription for hits in found for hit in hits} == {
        "energy",
        "seventh",
        "first-two",
    }


def test_without_an_installed_index_the_poller_matches() -> None:
    parsed, hits = workers.parse_and_match(
        rss([1]), source="news", url="u", headers={}, now=NOW, encoding=None, max_entries=500
    )
    assert hits is None and len(parsed.entries) == 1


def test_a_worker_returns_the_hits_of_each_entry_by_key(worker_index: MatchIndex) -> None:
    parsed, hits = workers.parse_and_match(
        rss(range(3, 0, -1)),
        source="news",
        url="u",
        headers={},
        now=NOW,
        encoding=None,
        max_entries=500,
    )
    assert hits == {entry.key: worker_index.match(entry, "news") for entry in parsed.entries}
    assert [hit.subscription for hit in hits[parsed.entries[-1].key]] == ["energy", "first-two"]


def test_a_repeated_key_is_matched_as_its_first_entry(worker_index: MatchIndex) -> None:
    parsed, hits = workers.parse_and_match(
        REPEATED_KEY, source="news", url="u", headers={}, now=NOW, encoding=None, max_entries=500
    )
    assert hits is not None and list(hits) == [parsed.entries[0].key]
    assert [hit.subscription for hit in hits[parsed.entries[0].key]] == ["energy"]


async def stored_matches(
    tmp_path: Path, site: ScriptedServer, *, in_processes: bool
) -> dict[str, list[tuple[str, tuple[str, ...]]]]:
    """One cycle over two sources; every subscription's stored (entry key, terms)."""
    sources = (
        f'- {{name: news, url: "{site.url("/news")}"}}\n'
        f'- {{name: other, url: "{site.url("/other")}"}}\n'
    )
    config = write_config(tmp_path, site, sources)
    config.write_text(
        config.read_text(encoding="utf-8")
        + "  - {name: seventh, query: 'title:\"第7条\"'}\n"
        + "  - {name: other-solar, query: '光伏', sources: [other]}\n",
        encoding="utf-8",
    )
    async with open_services(load_config(config), parse_in_processes=in_processes) as svc:
        reports = await pipeline.update_due_sources(svc, datetime.now(UTC))
        assert [r.status for r in reports] == ["ok", "ok"]
        return {
            name: sorted((m.entry.source + m.entry.data.key, m.terms) for m in found)
            for name in ("energy", "seventh", "other-solar")
            for found in [await svc.storage.recent_matches(name, 100)]
        }


async def test_matching_in_worker_processes_stores_what_matching_in_the_poller_does(
    tmp_path: Path, site: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    site.routes["/news"] = feed(rss(range(9, 0, -1)))
    site.routes["/other"] = feed(rss(range(19, 10, -1)))
    (tmp_path / "threads").mkdir()
    (tmp_path / "processes").mkdir()

    in_poller = await stored_matches(tmp_path / "threads", site, in_processes=False)

    def not_in_the_poller(*args: object) -> None:
        raise AssertionError("the poller matched: the workers should have")

    # Spawned workers import their own MatchIndex: only the poller's copy is patched.
    monkeypatch.setattr(MatchIndex, "match", not_in_the_poller)
    in_workers = await stored_matches(tmp_path / "processes", site, in_processes=True)

    assert in_workers == in_poller
    assert [len(in_poller[name]) for name in ("energy", "seventh", "other-solar")] == [18, 1, 9]
    assert all(key.startswith("other") for key, _ in in_poller["other-solar"])
