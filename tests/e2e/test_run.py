"""`feedsvc run` on the bundled demo config: the service polls, serves Atom and stays healthy."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import feedparser

from feedsvc.cli import main
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
FEEDSVC = Path(sys.executable).with_name("feedsvc")


def test_the_demo_config_is_valid() -> None:
    assert main(["check", "-c", str(ROOT / "config" / "demo.yaml")]) == 0


def test_the_example_config_is_valid_with_its_secrets_set(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    for name in ("FEEDSVC_SECRET", "SMTP_PASSWORD", "DESK_HK_TOKEN"):
        monkeypatch.setenv(name, "x" * 24)
    assert main(["check", "-c", str(ROOT / "config" / "feedsvc.example.yaml")]) == 0


def demo_copy(tmp_path: Path, port: int) -> Path:
    """The demo config and its feeds in a fresh folder, listening on a free port."""
    shutil.copytree(ROOT / "config", tmp_path / "config")
    config = tmp_path / "config" / "demo.yaml"
    text = config.read_text(encoding="utf-8").replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    config.write_text(text, encoding="utf-8")
    return config


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        return bytes(response.read())


def wait_for_feed(url: str, deadline: float) -> feedparser.FeedParserDict:
    while time.monotonic() < deadline:
        try:
            feed = feedparser.parse(get(url))
        except OSError:
            feed = None
        if feed is not None and feed.entries:
            return feed
        time.sleep(0.5)
    raise AssertionError(f"{url} served no entries in time")


def test_run_serves_a_non_empty_feed_of_the_demo(tmp_path: Path) -> None:
    port = free_port()
    config = demo_copy(tmp_path, port)
    process = subprocess.Popen(
        [FEEDSVC, "run", "-c", str(config)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        feed = wait_for_feed(f"http://127.0.0.1:{port}/feeds/hk-stocks.atom", time.monotonic() + 60)
        assert feed.bozo == 0
        assert all(e.id.startswith("https://finews.withounder.com/emnews/") for e in feed.entries)
        assert get(f"http://127.0.0.1:{port}/healthz").startswith(b"{")
        assert b"finews" in get(f"http://127.0.0.1:{port}/status")
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "source=finews status=ok" in output
    assert (tmp_path / "var" / "feedsvc.db").exists()
