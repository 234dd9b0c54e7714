"""A real feed reader (newsboat) subscribed to served feeds stores every entry, titles intact."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3

import pytest

pytestmark = pytest.mark.skipif(shutil.which("newsboat") is None, reason="newsboat not installed")


async def newsboat_reload(tmp_path, urls: list[str]) -> dict[str, list[tuple[str, str]]]:
    """Run ``newsboat -x reload`` on the URLs; returns (guid, title) per feed URL from its cache.

    newsboat keeps one row per guid across all feeds, so the Atom and RSS variants of one
    feed are read in separate runs.
    """
    tmp_path.mkdir()
    (tmp_path / "urls").write_text("\n".join(urls) + "\n", encoding="utf-8")
    (tmp_path / "config").write_text("", encoding="utf-8")
    cache = tmp_path / "cache.db"
    process = await asyncio.create_subprocess_exec(
        "newsboat", "-x", "reload", "-u", str(tmp_path / "urls"), "-c", str(cache),
        "-C", str(tmp_path / "config"),
        env={**os.environ, "HOME": str(tmp_path), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, (out, err)
    with sqlite3.connect(cache) as db:
        rows = db.execute("SELECT feedurl, guid, title FROM rss_item").fetchall()
    stored: dict[str, list[tuple[str, str]]] = {}
    for feed_url, guid, title in rows:
        stored.setdefault(feed_url, []).append((guid, title))
    return stored


async def test_newsboat_stores_all_entries_of_atom_rss_and_private_feeds(site, tmp_path):
    """Entries carry Simplified and Traditional Chinese titles."""
    added = await site.add_matches("all.xml", "news", 50)
    hk = await site.add_matches("traditional/all.xml", "desk-hk", 8, source="hk")
    atom, private = (
        f"{site.url}/feeds/news.atom",
        f"{site.url}/feeds/desk-hk.atom?token=k3y-%E7%A7%81%E5%AF%86-token",
    )
    rss = f"{site.url}/feeds/news.rss"
    stored = await newsboat_reload(tmp_path / "atom", [atom, private])
    stored |= await newsboat_reload(tmp_path / "rss", [rss])
    expected = sorted((e.id, e.title) for e in added)
    assert len(expected) == 50
    assert sorted(stored[atom]) == expected
    assert sorted(stored[rss]) == expected
    assert sorted(stored[private]) == sorted((e.id, e.title) for e in hk)
    assert any("股" in title for _, title in stored[private])
