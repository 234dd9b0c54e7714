"""parse_feed on the corpus and on hostile documents: encodings, safety, fields, entry keys."""

from __future__ import annotations

import multiprocessing
import pickle
import re
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from feedsvc.errors import ParseError
from feedsvc.model import ParsedFeed
from feedsvc.parse import MAX_KEY_CHARS, MAX_TITLE_CHARS, decode_document, parse_feed

DATA = Path(__file__).resolve().parents[1] / "data"
CORPUS = DATA / "corpus"
FETCH_DATA = DATA / "fetch"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
URL = "https://news.example.cn/feeds/rss.xml"


def parse(body: bytes, content_type: str = "", **options: Any) -> ParsedFeed:
    headers = {"content-type": content_type} if content_type else {}
    options = {"source": "src", "url": URL, "headers": headers, "now": NOW} | options
    return parse_feed(body, **options)


def parse_error(body: bytes, **options: Any) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse(body, **options)
    assert info.value.source == "src"
    return info.value


def rss(*items: str, channel: str = "", declaration: str = '<?xml version="1.0"?>') -> bytes:
    return (
        f'{declaration}<rss version="2.0" xmlns:sy="http://purl.org/rss/1.0/modules/syndication/">'
        f"<channel><title>深圳新闻</title><link>https://news.example.cn/</link>{channel}"
        + "".join(items)
        + "</channel></rss>"
    ).encode("utf-8")


def item(
    title: str = "深圳新能源",
    link: str = "https://news.example.cn/1",
    guid: str = "",
    date: str = "Tue, 31 May 2022 18:03:41 +0800",
    description: str = "正文",
) -> str:
    parts = [
        f"<title>{title}</title>" if title else "",
        f"<link>{link}</link>" if link else "",
        f'<guid isPermaLink="false">{guid}</guid>' if guid else "",
        f"<pubDate>{date}</pubDate>" if date else "",
        f"<description>{description}</description>",
    ]
    return "<item>" + "".join(parts) + "</item>"


def titles(parsed: ParsedFeed) -> list[str]:
    return [e.title for e in parsed.entries]


# ---------------------------------------------------------------- the corpus


def test_atom_corpus_entries() -> None:
    parsed = parse((CORPUS / "all.xml").read_bytes())
    assert (parsed.version, len(parsed.entries), parsed.warnings) == ("atom10", 104, ())
    assert parsed.feed.id == "https://finews.withounder.com/feed.xml"
    assert parsed.feed.title == "金融消息"
    first = parsed.entries[0]
    assert (
        first.id
        == first.key
        == ("https://finews.withounder.com/emnews/2022/05/31/202205312398034850")
    )
    assert first.title == "消费电子股大爆发！旺季迎来需求复苏 业绩兑现成关键 关注电子板块两主线"
    assert first.link == "https://finews.withounder.com/emnews/2022/05/31/202205312398034850.html"
    assert first.published == datetime(2022, 5, 31, 10, 3, 41, tzinfo=UTC)
    assert first.authors == ("ZNing",)
    assert "emnews" in first.categories
    assert first.content.startswith("<blockquote>") and "今日(5月31日)" in first.content
    assert "style=" not in first.content and "<!--" not in first.content
    assert re.fullmatch(r"[0-9a-f]{64}", first.content_hash)
    assert len({e.key for e in parsed.entries}) == 104


def test_gb18030_corpus_equals_its_utf8_twin() -> None:
    utf8 = parse((CORPUS / "rss2" / "all.xml").read_bytes())
    gb = parse((CORPUS / "rss2" / "all.gb18030.xml").read_bytes())
    assert titles(gb) == titles(utf8) and len(titles(gb)) == 104
    assert [e.content for e in gb.entries] == [e.content for e in utf8.entries]


@pytest.mark.parametrize(
    ("content_type", "declared"),
    [
        ("application/rss+xml; charset=utf-8", "gb18030"),  # wrong HTTP charset
        ("", "utf-8"),  # wrong XML declaration: GB18030 is tried before windows-1252
        ("text/xml; charset=ISO-8859-1", "gb18030"),  # a server's default charset
    ],
)
def test_gb18030_corpus_with_wrong_declarations(content_type: str, declared: str) -> None:
    body = (CORPUS / "rss2" / "all.gb18030.xml").read_bytes()
    body = body.replace(b'encoding="gb18030"', f'encoding="{declared}"'.encode(), 1)
    parsed = parse(body, content_type)
    assert titles(parsed) == titles(parse((CORPUS / "rss2" / "all.xml").read_bytes()))
    assert any("decoded as gb18030" in w for w in parsed.warnings)


def test_traditional_corpus() -> None:
    parsed = parse((CORPUS / "traditional" / "all.xml").read_bytes())
    assert parsed.entries[0].title.startswith("消費電子股大爆發")


@pytest.mark.parametrize(
    "content_type", ["", "text/xml; charset=gb2312", "text/xml; charset=utf-8"]
)
def test_gb2312_declared_feed_with_characters_outside_gb2312(content_type: str) -> None:
    parsed = parse((FETCH_DATA / "gb2312-rong-zhe.xml").read_bytes(), content_type)
    assert titles(parsed) == ["朱镕基谈深圳新能源发展", "陶喆新专辑发布"]
    assert parsed.feed.title == "国内新闻"


def test_big5_feed_with_a_wrong_http_charset() -> None:
    parsed = parse((FETCH_DATA / "big5.xml").read_bytes(), "text/xml; charset=ISO-8859-1")
    assert titles(parsed) == ["港股收市：恆生指數上升", "臺灣半導體產業報導"]


def test_bom_wins_over_http_charset_and_xml_declaration() -> None:
    body = (FETCH_DATA / "bom-utf8-declared-gb2312.xml").read_bytes()
    parsed = parse(body, "application/xml; charset=gbk")
    assert titles(parsed) == ["新能源汽车销量创新高"]


def test_forced_encoding_wins_over_everything() -> None:
    body = (CORPUS / "rss2" / "all.gb18030.xml").read_bytes()
    # A single-byte label decodes any bytes, so nothing reveals the mistake but the operator.
    mislabelled = body.replace(b'encoding="gb18030"', b'encoding="iso-8859-1"', 1)
    expected = titles(parse((CORPUS / "rss2" / "all.xml").read_bytes()))
    assert titles(parse(mislabelled, "text/xml; charset=iso-8859-1")) != expected
    forced = parse(mislabelled, "text/xml; charset=iso-8859-1", encoding="gb2312")
    assert titles(forced) == expected  # forced gb2312 is read as GB18030 too


def test_a_forced_codec_that_is_not_a_text_encoding_is_ignored() -> None:
    body = (FETCH_DATA / "gb2312-rong-zhe.xml").read_bytes()
    assert titles(parse(body, encoding="base64")) == ["朱镕基谈深圳新能源发展", "陶喆新专辑发布"]


def test_a_forced_encoding_still_drops_the_bom() -> None:
    body = (FETCH_DATA / "bom-utf8-declared-gb2312.xml").read_bytes()
    assert titles(parse(body, encoding="utf-8")) == ["新能源汽车销量创新高"]
    text, _ = decode_document(body, "", "utf-8")
    assert text.startswith("<?xml")


def test_a_stray_byte_in_a_utf8_feed_spoils_one_character_not_the_feed() -> None:
    body = (CORPUS / "rss2" / "all.xml").read_bytes()
    at = body.index("消费电子股大爆发".encode())
    parsed = parse(body[:at] + b"\xff" + body[at:])
    expected = titles(parse(body))
    assert titles(parsed)[0] == "\ufffd" + expected[0]
    assert titles(parsed)[1:] == expected[1:]
    assert any("invalid UTF-8" in w for w in parsed.warnings)


# ---------------------------------------------------------------- hostile documents


@pytest.mark.parametrize("name", ["billion-laughs.xml", "xxe.xml"])
def test_documents_declaring_entities_are_refused(name: str) -> None:
    assert parse_error((FETCH_DATA / name).read_bytes()).kind == "entities"


def test_entity_text_inside_cdata_is_content_not_a_declaration() -> None:
    parsed = parse(rss(item(description="<![CDATA[<p>关于 <!ENTITY xxe> 攻击</p>]]>")))
    assert parsed.entries[0].content.startswith("<p>关于")


def test_a_body_naming_a_local_file_is_not_opened(tmp_path: Path) -> None:
    feed = tmp_path / "feed.xml"
    feed.write_bytes(rss(item()))
    assert parse_error(str(feed).encode()).kind == "not_a_feed"
    assert parse_error(feed.as_uri().encode()).kind == "not_a_feed"


def test_a_body_naming_a_url_is_not_fetched() -> None:
    # The network guard fails this test if feedparser tries to connect.
    assert parse_error(b"http://127.0.0.1:9/feed.xml").kind == "not_a_feed"


@pytest.mark.parametrize(
    "body",
    [(FETCH_DATA / "page.html").read_bytes(), b"", b'{"version": "https://jsonfeed.org/"}'],
    ids=["html", "empty", "json"],
)
def test_not_a_feed(body: bytes) -> None:
    assert parse_error(body).kind == "not_a_feed"


def test_a_feedparser_crash_is_the_sources_parse_error() -> None:
    # feedparser 6.0.14 raises KeyError('where') on a GML element outside georss.
    error = parse_error(
        b'<rss version="2.0"><channel><title>x</title><gml:pos>1 2</gml:pos></channel></rss>'
    )
    assert error.kind == "parse" and "KeyError" in error.message


def test_after_a_sax_error_entries_without_title_or_link_are_dropped() -> None:
    body = rss(
        item(title="深圳一", link="https://news.example.cn/1"),
        item(title="", link="", description="无标题无链接"),
        item(title="深圳二 &bogus;", link="https://news.example.cn/2"),
    )
    parsed = parse(body)
    assert [e.link for e in parsed.entries] == [
        "https://news.example.cn/1",
        "https://news.example.cn/2",
    ]
    assert parsed.warnings and "dropped 1 entries" in parsed.warnings[0]


def test_control_characters_are_stripped_from_every_text_field() -> None:
    dirty = "深圳\x1b[31m新能源\x07\x00\x85\x9b2J"
    channel = f"<category>{dirty}</category>"
    body = rss(
        item(title=dirty, description=dirty).replace(
            "</item>", f"<category>{dirty}</category><author>a@x.cn ({dirty})</author></item>"
        ),
        channel=channel,
    )
    entry = parse(body).entries[0]
    assert entry.title == "深圳新能源"
    assert entry.content == entry.summary == "深圳新能源"
    assert entry.categories == ("深圳新能源",)
    assert all(not re.search("[\x00-\x1f\x7f-\x9f]", a) for a in entry.authors)


def test_field_lengths_and_entry_count_are_capped() -> None:
    long_title, long_guid = "深" * 5000, "https://news.example.cn/" + "x" * 3000
    parsed = parse(
        rss(
            *(
                item(
                    title=f"{i}{long_title}",
                    guid=f"{long_guid}{i}",
                    link=f"https://news.example.cn/{i}",
                )
                for i in range(30)
            )
        ),
        max_entries=10,
    )
    assert len(parsed.entries) == 10 and "kept the first 10 of 30" in parsed.warnings[-1]
    assert all(len(e.title) == MAX_TITLE_CHARS for e in parsed.entries)
    assert all(len(e.key) <= MAX_KEY_CHARS and e.key.startswith("sha256:") for e in parsed.entries)
    assert len({e.key for e in parsed.entries}) == 10


@pytest.mark.parametrize(
    ("date", "expected"),
    [
        ("Tue, 31 May 2022 18:03:41 +0800", datetime(2022, 5, 31, 10, 3, 41, tzinfo=UTC)),
        ("Fri, 27 Nov 2026 11:00:00 +0000", datetime(2026, 11, 27, 11, 0, tzinfo=UTC)),
        ("Sat, 28 Nov 2026 12:00:00 +0000", NOW),  # more than a day ahead
        ("Thu, 01 Jan 2099 00:00:00 +0000", NOW),
        ("Mon, 01 Jan 1990 00:00:00 +0000", NOW),
        ("", None),
    ],
)
def test_dates_are_utc_and_clamped_to_a_plausible_window(date: str, expected: Any) -> None:
    assert parse(rss(item(date=date))).entries[0].published == expected


def test_links_other_than_http_https_mailto_are_dropped_and_relative_ones_resolved() -> None:
    parsed = parse(
        rss(
            item(link="javascript:alert(1)", guid="a"),
            item(link="/2", guid="b"),
            item(link="mailto:desk@news.example.cn", guid="c"),
        )
    )
    assert [e.link for e in parsed.entries] == [
        None,
        "https://news.example.cn/2",
        "mailto:desk@news.example.cn",
    ]


def test_content_html_is_sanitised_and_resolved_against_its_base() -> None:
    body = b"""<feed xmlns="http://www.w3.org/2005/Atom" xml:base="https://news.example.cn/zh/">
      <id>urn:f</id><title>t</title>
      <entry><id>urn:1</id><title>\xe6\xb7\xb1\xe5\x9c\xb3</title><link href="a/1.html"/>
      <content type="html" xml:base="https://cdn.example.cn/x/">&lt;p onclick="x()"&gt;\xe6\xad\xa3
      &lt;a href="../y"&gt;ok&lt;/a&gt;&lt;a href="javascript:alert(1)"&gt;bad&lt;/a&gt;
      &lt;img src="data:image/png;base64,AA"&gt;&lt;script&gt;alert(1)&lt;/script&gt;&lt;/p&gt;
      </content></entry></feed>"""
    entry = parse(body).entries[0]
    assert entry.link == "https://news.example.cn/zh/a/1.html"
    assert '<a href="https://cdn.example.cn/y" rel="noopener noreferrer">ok</a>' in entry.content
    for hostile in ("onclick", "javascript", "data:", "script", "alert"):
        assert hostile not in entry.content


def test_html_titles_become_plain_text() -> None:
    body = rss(item(title="&lt;b&gt;深圳&lt;/b&gt;&lt;br&gt;新能源 &amp;amp; 光伏"))
    assert parse(body).entries[0].title == "深圳 新能源 & 光伏"


# ---------------------------------------------------------------- entry identity


def test_ids_fall_back_to_link_then_to_a_stable_hash() -> None:
    body = rss(
        item(guid="guid-1", link="https://news.example.cn/1"),
        item(title="无 guid", link="https://news.example.cn/2"),
        item(title="无 guid 无链接", link=""),
    )
    parsed = parse(body)
    first, second, third = parsed.entries
    assert (first.id, first.key) == ("guid-1", "guid-1")
    assert second.id == second.key == "https://news.example.cn/2"
    assert third.key.startswith("sha256:") and third.id == third.key
    later = parse(body, now=NOW + timedelta(hours=5))
    assert [e.key for e in later.entries] == [e.key for e in parsed.entries]


def test_reused_ids_are_not_trusted() -> None:
    parsed = parse(
        rss(
            *(
                item(title=f"深圳{i}", guid="1", link=f"https://news.example.cn/{i}")
                for i in range(3)
            )
        )
    )
    assert [e.key for e in parsed.entries] == [f"https://news.example.cn/{i}" for i in range(3)]
    assert [e.id for e in parsed.entries] == ["1", "1", "1"]  # as the feed gives it


def test_an_entry_repeated_in_one_document_is_kept_once() -> None:
    parsed = parse(rss(item(guid="g"), item(guid="g")))
    assert len(parsed.entries) == 1
    assert any("second entry" in w for w in parsed.warnings)


def test_content_hash_follows_what_a_reader_sees() -> None:
    def content_hash(**fields: str) -> str:
        return parse(rss(item(guid="g", **fields))).entries[0].content_hash

    base = content_hash()
    assert content_hash(date="Wed, 01 Jun 2022 09:00:00 +0800") == base
    assert content_hash(description="正文已更新") != base
    assert content_hash(title="深圳新能源（更新）") != base
    assert content_hash(link="https://news.example.cn/other") != base


# ---------------------------------------------------------------- hints and purity


@pytest.mark.parametrize(
    ("channel", "expected"),
    [
        ("", None),
        ("<ttl>30</ttl>", timedelta(minutes=30)),
        (
            "<sy:updatePeriod>hourly</sy:updatePeriod><sy:updateFrequency>2</sy:updateFrequency>",
            timedelta(minutes=30),
        ),
        ("<sy:updatePeriod>daily</sy:updatePeriod><ttl>60</ttl>", timedelta(days=1)),
        ("<ttl>500000</ttl>", timedelta(days=7)),
        ("<ttl>-5</ttl>", None),
    ],
)
def test_feed_polling_hints(channel: str, expected: timedelta | None) -> None:
    assert parse(rss(item(), channel=channel)).min_interval == expected


def test_parse_feed_and_its_result_pickle() -> None:
    body = (FETCH_DATA / "gb2312-rong-zhe.xml").read_bytes()
    function = pickle.loads(pickle.dumps(parse_feed))
    result = function(body, source="src", url=URL, headers={}, now=NOW)
    assert pickle.loads(pickle.dumps(result)) == result == parse(body)


@pytest.mark.parametrize(
    "body", [b"", (FETCH_DATA / "xxe.xml").read_bytes()], ids=["not_a_feed", "entities"]
)
def test_parse_errors_survive_pickling(body: bytes) -> None:
    error = parse_error(body)
    copy = pickle.loads(pickle.dumps(error))
    assert isinstance(copy, ParseError)
    assert (copy.source, copy.kind, copy.message) == (error.source, error.kind, error.message)


def test_a_parse_error_in_a_process_pool_does_not_break_the_pool() -> None:
    """The lead parses in a spawn ProcessPoolExecutor: a bad feed must not break it."""
    good = (FETCH_DATA / "gb2312-rong-zhe.xml").read_bytes()
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as pool:
        bad = pool.submit(partial(parse_feed, b"", source="src", url=URL, headers={}, now=NOW))
        with pytest.raises(ParseError) as info:
            bad.result()
        assert info.value.kind == "not_a_feed"
        job = partial(parse_feed, good, source="src", url=URL, headers={}, now=NOW)
        assert titles(pool.submit(job).result()) == ["朱镕基谈深圳新能源发展", "陶喆新专辑发布"]
