"""The command-line contracts (docs/architecture.md): check, match, poll, status, digest."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser
import pytest

from feedsvc.cli import main
from feedsvc.cli.compose import opened_storage
from feedsvc.config import load_config
from feedsvc.match import normalize
from feedsvc.schedule import schedule_trigger
from feedsvc.store import SubscriberSpec
from tests.cli.sample_config import good_config
from tests.e2e.servers import CORPUS, FeedServer, write_config


def test_check_accepts_a_valid_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(good_config(tmp_path))]) == 0
    assert "ok" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # an unknown key, on the key itself
        (
            "sources:\n  - name: a\n    url: http://example.com/f\n    colour: red\n",
            ":4:5: unknown key 'colour'",
        ),
        # a missing field, at the mapping that lacks it
        ("sources:\n  - {name: a}\n", ":2:5: missing required field 'url'"),
        # a reference to an unknown source, at the reference
        (
            "subscriptions:\n  - name: s\n    keywords: [深圳]\n    sources: [nowhere]\n",
            ":4:15: unknown source 'nowhere'",
        ),
        # a malformed e-mail address
        (
            "subscriptions: [{name: s, query: 深圳}]\n"
            "subscribers:\n  - {email: not-an-address, subscriptions: [s]}\n",
            ":3:13: subscribers.0.email: malformed email address",
        ),
        # an unknown subscription
        (
            "subscriptions: [{name: s, query: 深圳}]\n"
            "subscribers:\n  - email: a@example.com\n    subscriptions: [s, t]\n",
            ":4:24: unknown subscription 't'",
        ),
        # a malformed query, reported at the query's line
        (
            "subscriptions:\n  - name: s\n    query: '(新能源 OR 光伏'\n",
            ":3:12: unbalanced parenthesis",
        ),
        # YAML that does not parse
        ("sources: [\n", ":2:1: invalid YAML"),
    ],
)
def test_check_reports_each_problem_at_its_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    path = write_config(tmp_path / "bad.yaml", text)
    assert main(["check", "-c", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}{expected}" in err, err


def test_match_prints_one_json_line_per_matching_entry(capsys: pytest.CaptureFixture[str]) -> None:
    feed = CORPUS / "rss2" / "all.gb18030.xml"
    assert main(["match", "港股 OR 新能源", str(feed)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    source = feedparser.parse(feed.read_bytes())
    expected = {
        e.id
        for e in source.entries
        if any(k in normalize(e.title + " " + e.description) for k in ("港股", "新能源"))
    }
    assert {line["id"] for line in lines} == expected
    assert all(set(line) == {"id", "title", "link", "terms"} and line["terms"] for line in lines)


def test_match_finds_the_same_entries_in_traditional_as_in_simplified_chinese(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The Traditional corpus feed is the Simplified one converted (same entry ids)."""
    assert main(["match", "港股 OR 汽车", str(CORPUS / "all.xml")]) == 0
    simplified = {json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()}
    assert main(["match", "港股 OR 汽车", str(CORPUS / "traditional" / "all.xml")]) == 0
    traditional = {json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()}
    assert simplified and traditional == simplified


def test_a_query_beginning_with_an_exclusion_is_taken_as_the_query(
    capsys: pytest.CaptureFixture[str],
) -> None:
    feed = str(CORPUS / "all.xml")
    assert main(["match", "港股", feed]) == 0
    with_hk = {json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()}
    assert main(["-v", "match", "-港股", feed]) == 0
    without_hk = {json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()}
    every = {e.id for e in feedparser.parse((CORPUS / "all.xml").read_bytes()).entries}
    assert with_hk and without_hk == every - with_hk


def test_match_rejects_a_malformed_query_with_exit_2_and_its_position(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["match", "港股 OR (新能源", str(CORPUS / "all.xml")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.strip().splitlines()
    assert "parenthesis" in line and "at " in line


def test_poll_then_status_through_the_installed_console_script(tmp_path: Path) -> None:
    config = good_config(tmp_path)
    script = Path(sys.executable).with_name("feedsvc")
    poll = subprocess.run(
        [script, "poll", "-c", config], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert poll.returncode == 0, poll.stderr
    assert "finews" in poll.stdout and "1 sources polled" in poll.stdout
    status = subprocess.run(
        [script, "status", "-c", config, "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    [source] = json.loads(status.stdout)["sources"]
    assert source["name"] == "finews" and source["entry_count"] == 104
    assert source["state"] == "ok" and source["last_error"] is None


async def test_match_fetches_a_url_on_a_local_server(feed_server: FeedServer) -> None:
    """The command line names the server, so its loopback address is allowed."""
    feed_server.files["/hk.xml"] = (CORPUS / "by_source" / "hk.xml").read_bytes()
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("feedsvc")),
        "match",
        "港股",
        feed_server.url("/hk.xml"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    lines = [json.loads(line) for line in out.decode().splitlines()]
    assert lines and all("港股" in line["terms"] for line in lines)


def test_resubscribe_undoes_an_unsubscribe_recorded_in_the_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = good_config(tmp_path)
    loaded = load_config(config)

    async def unsubscribe() -> set[tuple[str, str]]:
        async with opened_storage(loaded.config) as storage:
            await storage.sync_subscribers(
                [SubscriberSpec("reader@example.com", ("hk",))], datetime.now(UTC)
            )
            await storage.unsubscribe("reader@example.com", "hk", datetime.now(UTC))
            return await storage.unsubscribed()

    assert asyncio.run(unsubscribe()) == {("reader@example.com", "hk")}
    assert main(["status", "-c", str(config)]) == 0
    assert "reader@example.com (hk)" in capsys.readouterr().out
    assert main(["resubscribe", "-c", str(config), "reader@example.com"]) == 0
    assert main(["status", "-c", str(config), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.split("\n", 1)[1])["unsubscribed"] == []
    assert main(["resubscribe", "-c", str(config), "nobody@example.com"]) == 1


def test_digest_now_without_an_offset_is_read_in_the_config_time_zone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A minute before the next 08:00 in Shanghai no digest is due; a minute after, it is
    (read as UTC, both would be eight hours later and due)."""
    monkeypatch.chdir(tmp_path)  # the digest goes to the default Maildir, var/mail
    config = good_config(tmp_path)
    text = config.read_text(encoding="utf-8").replace("[hk]}", "[hk], digest: 'daily 08:00'}")
    config.write_text("timezone: Asia/Shanghai\n" + text, encoding="utf-8")
    assert main(["poll", "-c", str(config)]) == 0
    trigger = schedule_trigger("daily 08:00", "Asia/Shanghai")
    next_fire = trigger.get_next_fire_time(None, datetime.now(UTC)).replace(tzinfo=None)
    for offset, expected in ((-1, "enqueued=0"), (1, "enqueued=1")):
        local = (next_fire + timedelta(minutes=offset)).isoformat()
        assert main(["digest", "-c", str(config), "--send-due", "--now", local]) == 0
        assert expected in capsys.readouterr().out.splitlines()[-1], local
