"""JSON Feed sources: mapped onto the same EntryData as Atom and RSS, just as safe."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from feedsvc.cli import main
from feedsvc.errors import ParseError
from feedsvc.model import ParsedFeed
from feedsvc.parse import parse_feed

FEED = Path(__file__).resolve().parent.parent / "data" / "jsonfeed" / "finews.json"
NOW = datetime(2026, 11, 26, tzinfo=UTC)


def parse(body: bytes) -> ParsedFeed:
    headers = {"content-type": "application/feed+json"}
    url = "https://finews.withounder.com/feed.json"
    return parse_feed(body, source="json", url=url, headers=headers, now=NOW)


def test_json_feed_items_become_entries_with_ids_dates_authors_and_tags() -> None:
    parsed = parse(FEED.read_bytes())
    assert parsed.version == "json11"
    assert parsed.feed.title == "金融消息" and parsed.feed.link == "https://finews.withounder.com/"
    first, second, _ = parsed.entries
    assert first.id == "https://finews.withounder.com/emnews/2021/12/08/202112082206968262"
    assert first.title == "港股午评：恒指跌0.07% 内房股再度走强"
    assert first.published == datetime(2021, 12, 8, 4, 2, 10, tzinfo=UTC)
    assert first.authors == ("财联社",) and first.categories == ("emnews", "东财滚动新闻")
    assert "<b>恒指</b>" in first.content
    assert second.id == "202112082206972753", "a numeric id is kept as its text"
    assert second.updated == datetime(2021, 12, 8, 13, 30, tzinfo=UTC)
    assert "分布式光伏" in second.content and "<" not in second.content


def test_hostile_json_items_are_sanitised_like_any_other_feed() -> None:
    hostile = parse(FEED.read_bytes()).entries[2]
    assert hostile.link is None, "javascript: links are dropped"
    # JSON Feed titles are plain text: kept literally, escaped wherever they are shown.
    assert hostile.title == "新能源<script>alert(1)</script>"
    assert "<script" not in hostile.content and "onclick" not in hostile.content
    assert "javascript" not in hostile.content.replace("&#9;", "")
    assert hostile.published == NOW, "a date in the far future becomes the first-seen time"
    assert hostile.authors == ("旧格式作者",), "JSON Feed 1.0 `author` is read too"


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b'{"version": "https://jsonfeed.org/version/1.1", "items": [', "parse"),
        (b'{"hello": "world"}', "not_a_feed"),
        (b"[1, 2, 3]", "not_a_feed"),
        (b"{" * 100_000, "parse"),
    ],
)
def test_broken_or_foreign_json_is_that_source_s_error(body: bytes, kind: str) -> None:
    with pytest.raises(ParseError) as error:
        parse(body)
    assert error.value.kind == kind


def test_feedsvc_match_reads_json_feeds(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["match", "光伏 OR 恒指", str(FEED)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(line["id"], line["terms"]) for line in lines] == [
        ("https://finews.withounder.com/emnews/2021/12/08/202112082206968262", ["恒指"]),
        ("202112082206972753", ["光伏"]),
    ]
