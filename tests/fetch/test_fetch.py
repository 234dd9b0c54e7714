"""The fetcher against a real hostile HTTP server on 127.0.0.1: each failure maps to its outcome."""

from __future__ import annotations

import asyncio
import hashlib
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from feedsvc.errors import FetchError, ParseError
from feedsvc.fetch import Fetcher
from feedsvc.model import Fetched, NotModified, SourceForUpdate
from feedsvc.parse import parse_feed

DATA = Path(__file__).resolve().parents[1] / "data"
CORPUS_FEED = (DATA / "corpus" / "all.xml").read_bytes()
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


async def failure(fetch: Any, url: str, **fields: Any) -> FetchError:
    with pytest.raises(FetchError) as info:
        await fetch(url, **fields)
    assert info.value.source == "src"
    return info.value


# ---------------------------------------------------------------- success and conditional GET


async def test_first_fetch_returns_body_validators_and_max_age(fetch: Any, server: Any) -> None:
    result = await fetch(server.url("/feed"))
    assert isinstance(result, Fetched)
    assert result.body == CORPUS_FEED
    assert result.body_hash == hashlib.sha256(CORPUS_FEED).hexdigest()
    assert (result.etag, result.last_modified) == ('"v1"', "Tue, 31 May 2022 10:03:41 GMT")
    assert result.headers["content-type"] == "application/atom+xml"
    assert result.max_age == 600
    assert result.moved_to is None


async def test_validators_are_sent_and_304_is_not_modified(fetch: Any, server: Any) -> None:
    result = await fetch(
        server.url("/feed"), etag='"v1"', last_modified="Tue, 31 May 2022 10:03:41 GMT"
    )
    assert result == NotModified(
        server.url("/feed"), '"v1"', "Tue, 31 May 2022 10:03:41 GMT", max_age=600
    )
    _, sent = server.requests[-1]
    assert sent["If-None-Match"] == '"v1"'
    assert sent["If-Modified-Since"] == "Tue, 31 May 2022 10:03:41 GMT"


async def test_200_with_the_last_body_hash_is_not_modified(fetch: Any, server: Any) -> None:
    same = hashlib.sha256(CORPUS_FEED).hexdigest()
    assert isinstance(await fetch(server.url("/plain"), body_hash=same), NotModified)
    assert isinstance(await fetch(server.url("/plain"), body_hash="0" * 64), Fetched)


async def test_user_agent_names_feedsvc_version_and_contact(fetch: Any, server: Any) -> None:
    await fetch(server.url("/plain"))
    _, sent = server.requests[-1]
    assert sent["User-Agent"] == ("feedsvc/0.1.0 (+https://ops.example.com/feedsvc)")


@pytest.mark.parametrize("kind", ["gzip", "gzip-members", "gzip-padded", "deflate", "raw-deflate"])
async def test_compressed_bodies_are_inflated(fetch: Any, server: Any, kind: str) -> None:
    result = await fetch(server.url(f"/compressed/{kind}"))
    assert isinstance(result, Fetched) and result.body == CORPUS_FEED
    assert result.body_hash == hashlib.sha256(CORPUS_FEED).hexdigest()
    _, sent = server.requests[-1]
    assert sent["Accept-Encoding"] == "gzip, deflate"


async def test_wrong_content_type_still_parses(fetch: Any, server: Any) -> None:
    result = await fetch(server.url("/wrong-type"))
    assert result.headers["content-type"].startswith("text/plain")
    parsed = parse_feed(result.body, source="src", url=result.url, headers=result.headers, now=NOW)
    assert len(parsed.entries) == 104
    assert parsed.entries[0].title.startswith("消费电子股大爆发")


async def test_gb18030_feed_without_charset_header(fetch: Any, server: Any) -> None:
    result = await fetch(server.url("/gb18030"))
    assert "charset" not in result.headers["content-type"]
    parsed = parse_feed(result.body, source="src", url=result.url, headers=result.headers, now=NOW)
    expected = (DATA / "corpus" / "rss2" / "all.xml").read_bytes()
    reference = parse_feed(expected, source="src", url=result.url, headers={}, now=NOW)
    assert [e.title for e in parsed.entries] == [e.title for e in reference.entries]
    assert parsed.feed.title == "金融消息"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/data/gb2312-rong-zhe.xml?charset=utf-8", ["朱镕基谈深圳新能源发展", "陶喆新专辑发布"]),
        ("/data/gb2312-rong-zhe.xml?charset=gb2312", ["朱镕基谈深圳新能源发展", "陶喆新专辑发布"]),
        ("/data/big5.xml?charset=iso-8859-1", ["港股收市：恆生指數上升", "臺灣半導體產業報導"]),
        ("/data/bom-utf8-declared-gb2312.xml?charset=gbk", ["新能源汽车销量创新高"]),
    ],
)
async def test_chinese_encodings_over_http(
    fetch: Any, server: Any, path: str, expected: list[str]
) -> None:
    result = await fetch(server.url(path))
    parsed = parse_feed(result.body, source="src", url=result.url, headers=result.headers, now=NOW)
    assert [e.title for e in parsed.entries] == expected


async def test_html_page_instead_of_a_feed_is_not_a_feed(fetch: Any, server: Any) -> None:
    result = await fetch(server.url("/page"))
    with pytest.raises(ParseError) as info:
        parse_feed(result.body, source="src", url=result.url, headers=result.headers, now=NOW)
    assert info.value.kind == "not_a_feed"


async def test_truncated_gzip_body_is_a_network_error(fetch: Any, server: Any) -> None:
    error = await failure(fetch, server.url("/compressed/gzip-truncated"))
    assert error.kind == "network" and "truncated" in error.message


# ---------------------------------------------------------------- redirects and statuses


async def test_permanent_redirects_report_the_new_url(fetch: Any, server: Any) -> None:
    result = await fetch(server.url("/moved"))  # 301 then 308
    assert isinstance(result, Fetched)
    assert result.url == result.moved_to == server.url("/plain")


@pytest.mark.parametrize("path", ["/found", "/moved-then-found"])
async def test_a_temporary_hop_keeps_the_stored_url(fetch: Any, server: Any, path: str) -> None:
    result = await fetch(server.url(path))
    assert isinstance(result, Fetched)
    assert result.url == server.url("/plain")
    assert result.moved_to is None


async def test_redirect_loop_is_detected(fetch: Any, server: Any) -> None:
    error = await failure(fetch, server.url("/loop/a"))
    assert error.kind == "redirect" and "loop" in error.message
    assert server.hits["/loop/a"] == 1 and server.hits["/loop/b"] == 1


async def test_five_redirects_are_followed_six_are_refused(fetch: Any, server: Any) -> None:
    assert isinstance(await fetch(server.url("/chain/4")), Fetched)  # 5 hops
    error = await failure(fetch, server.url("/chain/5"))
    assert error.kind == "redirect"


async def test_redirect_without_location_is_an_http_error(fetch: Any, server: Any) -> None:
    error = await failure(fetch, server.url("/no-location"))
    assert (error.kind, error.status) == ("http", 302)


async def test_410_marks_the_source_gone(fetch: Any, server: Any) -> None:
    error = await failure(fetch, server.url("/gone"))
    assert (error.kind, error.status, error.gone) == ("http", 410, True)


async def test_429_retry_after_seconds(fetch: Any, server: Any) -> None:
    error = await failure(fetch, server.url("/ratelimited"))
    assert (error.kind, error.status, error.retry_after, error.gone) == ("http", 429, 120, False)


async def test_503_retry_after_http_date_against_the_server_clock(fetch: Any, server: Any) -> None:
    error = await failure(fetch, server.url("/unavailable"))
    assert (error.status, error.retry_after) == (503, 300)


async def test_other_status_has_no_retry_after(fetch: Any, server: Any) -> None:
    error = await failure(fetch, server.url("/server-error"))
    assert (error.kind, error.status, error.retry_after, error.gone) == ("http", 500, None, False)


# ---------------------------------------------------------------- limits


async def test_slow_trickle_is_cut_off_at_the_total_timeout(fetch: Any, server: Any) -> None:
    started = time.monotonic()
    error = await failure(fetch, server.url("/trickle"))
    elapsed = time.monotonic() - started
    assert error.kind == "timeout"
    assert 0.5 < elapsed < 1.5  # total_timeout is 0.6 s, the read timeout (1 s) never fires


async def test_gzip_bomb_is_refused_without_inflating_it(fetch: Any, server: Any) -> None:
    error = await failure(fetch, server.url("/bomb"))
    assert error.kind == "too_large" and "decompressed" in error.message


async def test_50mb_streamed_body_is_cut_at_the_cap(fetch: Any, server: Any) -> None:
    error = await failure(fetch, server.url("/huge"))
    assert error.kind == "too_large"


async def test_declared_content_length_over_the_cap_is_refused_before_reading(
    fetch: Any, server: Any
) -> None:
    error = await failure(fetch, server.url("/huge?declared=1"))
    assert error.kind == "too_large" and "Content-Length" in error.message


async def test_per_source_body_cap_overrides_the_default(fetcher: Fetcher, server: Any) -> None:
    with pytest.raises(FetchError) as info:
        await fetcher.fetch(SourceForUpdate("src", server.url("/plain")), max_body_bytes=100_000)
    assert info.value.kind == "too_large"


async def test_connection_reset_mid_body_is_a_network_error(fetch: Any, server: Any) -> None:
    error = await failure(fetch, server.url("/reset"))
    assert error.kind == "network"


@pytest.mark.parametrize(
    ("declared", "sent"), [(5000, 100), (100, 5000)], ids=["longer-than-body", "shorter-than-body"]
)
async def test_lying_content_length_is_a_network_error(
    make_config: Any, raw_server: Any, declared: int, sent: int
) -> None:
    address = await raw_server(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\n"
        + f"Content-Length: {declared}\r\nConnection: close\r\n\r\n".encode()
        + CORPUS_FEED[:sent]
    )
    async with Fetcher(make_config(address)) as fetcher:
        with pytest.raises(FetchError) as info:
            await fetcher.fetch(SourceForUpdate("src", f"http://{address}/"))
    assert info.value.kind == "network"
    assert len(info.value.message) <= 300  # the server's bytes are not echoed at length


async def test_unreachable_port_is_a_network_error(make_config: Any) -> None:
    async with Fetcher(make_config("127.0.0.1:9")) as fetcher:
        with pytest.raises(FetchError) as info:
            await fetcher.fetch(SourceForUpdate("src", "http://127.0.0.1:9/feed"))
    assert info.value.kind == "network"


async def test_per_host_limit(make_config: Any, server: Any) -> None:
    config = make_config(f"127.0.0.1:{server.port}", per_host=2, concurrency=10)
    async with Fetcher(config) as fetcher:
        await asyncio.gather(
            *(fetcher.fetch(SourceForUpdate(f"s{i}", server.url("/hold"))) for i in range(8))
        )
    assert server.hits["/hold"] == 8
    assert server.max_in_flight == 2


async def test_global_limit(make_config: Any, server: Any) -> None:
    config = make_config(f"127.0.0.1:{server.port}", per_host=10, concurrency=3)
    async with Fetcher(config) as fetcher:
        await asyncio.gather(
            *(fetcher.fetch(SourceForUpdate(f"s{i}", server.url("/hold"))) for i in range(9))
        )
    assert server.max_in_flight == 3


async def test_sources_waiting_for_a_busy_host_do_not_block_other_hosts(
    make_config: Any, server: Any
) -> None:
    config = make_config(f"127.0.0.1:{server.port}", per_host=1, concurrency=2)
    busy = [server.url("/hold")] * 4
    other = f"http://localhost:{server.port}/hold"  # another host name, same test server
    async with Fetcher(config) as fetcher:
        await asyncio.gather(
            *(fetcher.fetch(SourceForUpdate(f"s{i}", url)) for i, url in enumerate([*busy, other]))
        )
    arrivals = [h["Host"].split(":")[0] for _, h in server.requests]
    assert arrivals.index("localhost") == 1  # served beside the first busy one, not last


# ---------------------------------------------------------------- one cycle with everything


HOSTILE = {
    "/trickle": "timeout",
    "/loop/a": "redirect",
    "/gone": "http",
    "/ratelimited": "http",
    "/unavailable": "http",
    "/reset": "network",
    "/bomb": "too_large",
    "/huge": "too_large",
    "/metadata": "forbidden_address",
    "/to-ftp": "unsupported_url",
    "/page": "not_a_feed",
    "/data/billion-laughs.xml": "entities",
}


async def poll_one(fetcher: Fetcher, name: str, url: str) -> tuple[str, str | int]:
    """What a polling cycle records for one source: its entry count or its error kind."""
    try:
        result = await fetcher.fetch(SourceForUpdate(name, url))
        assert isinstance(result, Fetched)
        parsed = parse_feed(
            result.body, source=name, url=result.url, headers=result.headers, now=NOW
        )
    except (FetchError, ParseError) as e:
        assert e.source == name
        return name, e.kind
    return name, len(parsed.entries)


async def test_one_cycle_with_every_hostile_source_and_a_healthy_one(
    fetcher: Fetcher, server: Any
) -> None:
    sources = {path: server.url(path) for path in HOSTILE}
    sources |= {
        "healthy": server.url("/feed"),
        "gb18030": server.url("/gb18030"),
        "wrong-type": server.url("/wrong-type"),
    }
    started = time.monotonic()
    outcomes = dict(await asyncio.gather(*(poll_one(fetcher, n, u) for n, u in sources.items())))
    elapsed = time.monotonic() - started
    assert outcomes == HOSTILE | {"healthy": 104, "gb18030": 104, "wrong-type": 104}
    assert elapsed < 2.0  # bounded by the 0.6 s total timeout, not by the trickle's 50 s
