"""The lxml fast path of parse_feed gives feedparser's answer exactly, or declines."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedsvc.errors import ParseError
from feedsvc.model import ParsedFeed
from feedsvc.parse import decode_document, parse_feed
from feedsvc.parse.decode import prepared_document
from feedsvc.parse.feedparser_path import read_with_feedparser
from feedsvc.parse.well_formed import read_well_formed

DATA = Path(__file__).resolve().parents[1] / "data"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
URL = "https://news.example.cn/feeds/rss.xml"
ATOM_NS = "http://www.w3.org/2005/Atom"
FEED_FILES = sorted(
    {
        *DATA.glob("corpus/**/*.xml"),
        *DATA.glob("fetch/*.xml"),
        *DATA.glob("fetch/*.html"),
        *DATA.glob("web/*.xml"),
        *DATA.glob("match/*.xml"),
    }
)
#: Hostile or not-a-feed documents: the fast path must leave them to feedparser.
DECLINED_FILES = {"billion-laughs.xml", "xxe.xml", "page.html"}


def outcome(body: bytes, *, fast_path: bool, url: str = URL) -> ParsedFeed | str:
    """parse_feed's result, or its error as text (both paths must fail alike)."""
    try:
        return parse_feed(body, source="src", url=url, headers={}, now=NOW, fast_path=fast_path)
    except ParseError as e:
        return f"{e.kind}: {e}"


def handled(body: bytes, url: str = URL) -> bool:
    """Whether the fast path answers for ``body`` (instead of declining).

    Where it answers, its record must be feedparser's field for field, not just lead to
    the same entries.
    """
    text, _ = decode_document(body)
    document = prepared_document(text)
    record = read_well_formed(document, url)
    if record is not None:
        assert record == read_with_feedparser(document, url, {}, "src")
    return record is not None


def assert_same(body: bytes, url: str = URL) -> ParsedFeed | str:
    fast, slow = outcome(body, fast_path=True, url=url), outcome(body, fast_path=False, url=url)
    if isinstance(fast, ParsedFeed) and isinstance(slow, ParsedFeed):
        assert fast.feed == slow.feed
        assert fast.version == slow.version
        assert fast.min_interval == slow.min_interval
        assert fast.warnings == slow.warnings
        assert len(fast.entries) == len(slow.entries)
        for mine, theirs in zip(fast.entries, slow.entries, strict=True):
            assert mine == theirs, (mine, theirs)
    assert fast == slow
    return fast


# ---------------------------------------------------------------- every test feed


@pytest.mark.parametrize("path", FEED_FILES, ids=lambda p: str(p.relative_to(DATA)))
def test_every_test_feed_reads_the_same_on_both_paths(path: Path) -> None:
    body = path.read_bytes()
    result = assert_same(body)
    if path.name in DECLINED_FILES:
        assert not handled(body)
    else:
        assert handled(body), "the fast path should read this common feed itself"
        assert isinstance(result, ParsedFeed) and result.entries


def test_the_corpus_entries_are_real_chinese_entries() -> None:
    result = assert_same((DATA / "corpus" / "rss2" / "all.gb18030.xml").read_bytes())
    assert isinstance(result, ParsedFeed) and len(result.entries) == 104
    assert all(e.title and e.link and e.published for e in result.entries)
    assert any("股" in e.title for e in result.entries)


# ---------------------------------------------------------------- hand-made edge cases


def atom(*entries: str, head: str = "", root: str = "") -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?><feed xmlns="{ATOM_NS}" {root}>'
        f"<title>深圳快讯</title><id>urn:feed:1</id>"
        f'<link href="https://news.example.cn/" rel="alternate"/>{head}'
        + "".join(f"<entry>{e}</entry>" for e in entries)
        + "</feed>"
    ).encode("utf-8")


def rss(*items: str, channel: str = "", root: str = "") -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0" {root}><channel>'
        f"<title>深圳新闻</title><link>https://news.example.cn/</link>{channel}"
        + "".join(f"<item>{i}</item>" for i in items)
        + "</channel></rss>"
    ).encode("utf-8")


ENTRY = (
    "<title>新能源汽车销量</title><id>urn:e:1</id>"
    '<link href="https://news.example.cn/1"/><updated>2022-05-31T10:03:41Z</updated>'
)
ITEM = (
    "<title>光伏板块走强</title><link>https://news.example.cn/2</link>"
    "<pubDate>Tue, 31 May 2022 18:03:41 +0800</pubDate>"
)
DC = 'xmlns:dc="http://purl.org/dc/elements/1.1/"'
CONTENT = 'xmlns:content="http://purl.org/rss/1.0/modules/content/"'
SY = 'xmlns:sy="http://purl.org/rss/1.0/modules/syndication/"'
MEDIA = 'xmlns:media="http://search.yahoo.com/mrss/"'

#: (name, document, whether the fast path is expected to read it itself)
EDGE_CASES: list[tuple[str, bytes, bool]] = [
    (
        "atom title html",
        atom(ENTRY.replace("<title>", '<title type="html">&lt;b&gt;深圳&lt;/b&gt;')),
        True,
    ),
    (
        "atom title text with markup",
        atom(ENTRY.replace("<title>", '<title type="text">&lt;b&gt;AI&lt;/b&gt; ')),
        True,
    ),
    (
        "atom title xhtml",
        atom(
            '<title type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml">深圳<b>新能源</b></div>'
            '</title><id>urn:x</id><link href="https://news.example.cn/x"/>'
        ),
        False,
    ),
    ("entities in html", atom(ENTRY.replace("新能源", "&amp;#28145;圳 &amp;amp; 港股")), True),
    ("entities in rss title", rss(ITEM.replace("光伏", "&amp;#28145;&amp;amp;&lt;b&gt;")), True),
    ("character references", rss(ITEM.replace("光伏", "&#28145;&#x5733;&#160;")), True),
    (
        "cdata",
        rss(ITEM + "<description><![CDATA[<p>正文 <a href='/rel'>链接</a></p>]]></description>"),
        True,
    ),
    ("cdata title", rss(ITEM.replace("光伏板块走强", "<![CDATA[<b>光伏</b> & 储能]]>")), True),
    ("missing ids", rss(ITEM, ITEM.replace("/2", "/3")), True),
    (
        "no id no link",
        rss("<title>只有标题</title><pubDate>Tue, 31 May 2022 18:03:41 GMT</pubDate>"),
        True,
    ),
    (
        "duplicate ids",
        rss(
            ITEM + '<guid isPermaLink="false">same</guid>',
            ITEM.replace("/2", "/4") + '<guid isPermaLink="false">same</guid>',
        ),
        True,
    ),
    (
        "guid permalink default",
        rss(ITEM.replace("<link>https://news.example.cn/2</link>", "") + "<guid>a/b?x=1</guid>"),
        True,
    ),
    (
        "guid permalink true",
        rss(ITEM + '<guid isPermaLink="true">https://news.example.cn/p/9</guid>'),
        True,
    ),
    ("guid permalink false", rss(ITEM + '<guid isPermaLink="false">tag-9</guid>'), True),
    ("guid relative without link", rss("<title>相对</title><guid>items/9</guid>"), True),
    (
        "guid before link",
        rss(
            "<guid>https://news.example.cn/g</guid><title>次序</title><link>https://news.example.cn/l</link>"
        ),
        True,
    ),
    (
        "xml:base relative links",
        atom(
            ENTRY.replace('href="https://news.example.cn/1"', 'href="../a/1?x=1&amp;y=2"')
            + '<content type="html" xml:base="https://cdn.example.cn/p/">'
            '&lt;img src="i.png"&gt;&lt;a href="/q"&gt;q&lt;/a&gt;</content>',
            root='xml:base="https://news.example.cn/base/"',
        ),
        True,
    ),
    (
        "entry xml:base",
        atom(
            '<title>基</title><id>rel/id</id><link href="x.html"/>'
            '<summary type="html" xml:base="s/">&lt;a href="y"&gt;y&lt;/a&gt;</summary>',
            root='xml:base="https://b.example.cn/d/"',
        ),
        True,
    ),
    (
        "rss relative link",
        rss(
            "<title>相对</title><link>/news/1?a=1&amp;b=2</link>"
            "<description>&lt;a href=&quot;rel&quot;&gt;x&lt;/a&gt;</description>"
        ),
        True,
    ),
    ("javascript link", rss("<title>坏链接</title><link>javascript:alert(1)</link>"), True),
    *[
        (f"rfc822 date {zone}", rss(ITEM.replace("+0800", zone)), True)
        for zone in ("GMT", "EST", "PDT", "+0800", "-0500", "Z", "UT", "")
    ],
    ("rfc822 without weekday", rss(ITEM.replace("Tue, ", "")), True),
    ("bad date", rss(ITEM.replace("Tue, 31 May 2022 18:03:41 +0800", "昨天")), True),
    ("future date", rss(ITEM.replace("2022", "2099")), True),
    ("old date", rss(ITEM.replace("2022", "1970")), True),
    *[
        (f"atom date {stamp}", atom(ENTRY.replace("2022-05-31T10:03:41Z", stamp)), True)
        for stamp in (
            "2022-05-31T18:03:41+08:00",
            "2022-05-31T18:03:41",
            "2022-05-31",
            "2022-05-31T18:03:41.123-05:00",
        )
    ],
    (
        "atom published and updated",
        atom(ENTRY + "<published>2022-05-30T01:00:00+08:00</published>"),
        True,
    ),
    (
        "dc creator",
        rss(ITEM + "<dc:creator>张三</dc:creator><dc:creator>李四</dc:creator>", root=DC),
        True,
    ),
    (
        "dc date",
        rss("<title>日期</title><dc:date>2022-05-31T18:03:41+08:00</dc:date>", root=DC),
        True,
    ),
    ("rss author email", rss(ITEM + "<author>editor@example.cn (王五)</author>"), True),
    (
        "atom authors",
        atom(
            ENTRY + "<author><name>赵六</name><email>z@example.cn</email></author>"
            "<author><email>q@example.cn</email><uri>/u</uri></author>"
            "<author><name> </name></author>"
        ),
        True,
    ),
    (
        "multiple categories",
        rss(
            ITEM + "<category>股票</category><category domain='d'>基金</category>"
            "<category>股票</category><category></category>"
        ),
        True,
    ),
    (
        "atom categories",
        atom(
            ENTRY + '<category term="港股"/><category term="A股" label="沪深"/>'
            '<category label="只有标签"/><category scheme="s"/>'
        ),
        True,
    ),
    (
        "enclosure",
        rss(ITEM + '<enclosure url="https://news.example.cn/a.mp3" length="1" type="audio/mpeg"/>'),
        True,
    ),
    (
        "media namespace",
        rss(
            ITEM
            + '<media:content url="https://news.example.cn/v.mp4"><media:title>视频</media:title></media:content>',
            root=MEDIA,
        ),
        False,
    ),
    (
        "script in title",
        rss(ITEM.replace("光伏板块走强", "&lt;script&gt;alert(1)&lt;/script&gt;光伏")),
        True,
    ),
    (
        "script in atom html title",
        atom(ENTRY.replace("<title>", '<title type="html">&lt;script&gt;x()&lt;/script&gt;')),
        True,
    ),
    (
        "script in content",
        rss(
            ITEM + "<description>&lt;script&gt;x()&lt;/script&gt;"
            "&lt;p onclick='y'&gt;段落&lt;/p&gt;</description>"
        ),
        True,
    ),
    (
        "content encoded",
        rss(
            ITEM + "<description>摘要</description>"
            "<content:encoded>&lt;p&gt;全文&lt;/p&gt;</content:encoded>",
            root=CONTENT,
        ),
        True,
    ),
    (
        "content encoded first",
        rss(
            ITEM + "<content:encoded>&lt;p&gt;全文&lt;/p&gt;</content:encoded>"
            "<description>摘要</description>",
            root=CONTENT,
        ),
        True,
    ),
    (
        "atom content then summary",
        atom(ENTRY + '<content type="html">&lt;p&gt;全&lt;/p&gt;</content><summary>摘</summary>'),
        True,
    ),
    ("atom content text", atom(ENTRY + "<content>纯文本 &lt;b&gt;</content>"), True),
    ("atom content src", atom(ENTRY + '<content src="https://x.example.cn/c"/>'), False),
    (
        "atom content base64",
        atom(ENTRY + '<content type="application/octet-stream">5rex</content>'),
        False,
    ),
    ("control characters", rss(ITEM.replace("光伏", "光\x1b[31m伏\x07")), True),
    ("latin-1 mojibake", rss(ITEM.replace("光伏板块走强", "CafÃ© naÃ¯ve")), True),
    ("c1 character reference", rss(ITEM.replace("光伏", "&#x93;引号&#x94;")), True),
    ("whitespace", rss(ITEM.replace("光伏板块走强", "\n  光伏\t 板块  \n")), True),
    ("empty title", rss("<title></title><link>https://news.example.cn/e</link>"), True),
    ("duplicate title", rss(ITEM + "<title>第二个标题</title>"), False),
    (
        "ttl and sy hints",
        rss(
            ITEM,
            channel="<ttl>30</ttl><sy:updatePeriod>hourly</sy:updatePeriod><sy:updateFrequency>2</sy:updateFrequency>",
            root=SY,
        ),
        True,
    ),
    (
        "atom link in rss channel",
        rss(
            ITEM,
            channel='<atom:link href="https://news.example.cn/self" rel="self"'
            ' type="application/rss+xml"/>',
            root=f'xmlns:atom="{ATOM_NS}"',
        ),
        True,
    ),
    (
        "atom alternate link in rss",
        rss(
            ITEM + '<atom:link href="https://news.example.cn/alt"/>', root=f'xmlns:atom="{ATOM_NS}"'
        ),
        True,
    ),
    (
        "atom links",
        atom(
            '<title>多链接</title><id>urn:l</id><link rel="related" href="https://r.example.cn/"/>'
            '<link rel="alternate" type="text/html" href="https://a.example.cn/"/>'
            '<link href="https://b.example.cn/" type="application/pdf"/>'
        ),
        True,
    ),
    ("atom id as link", atom("<title>只有id</title><id>https://news.example.cn/by-id</id>"), True),
    (
        "comment inside item",
        rss(ITEM + "<!-- 注释 --><comments>https://news.example.cn/c</comments>"),
        True,
    ),
    ("comment inside title", rss(ITEM.replace("光伏", "光<!-- x -->伏")), False),
    ("rss 0.91", rss(ITEM).replace(b'version="2.0"', b'version="0.91"'), True),
    ("rss 0.92", rss(ITEM).replace(b'version="2.0"', b'version="0.92"'), True),
    ("rss without version", rss(ITEM).replace(b' version="2.0"', b""), True),
    (
        "rss 1.0",
        (
            '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"'
            ' xmlns="http://purl.org/rss/1.0/"><channel rdf:about="https://x.example.cn/">'
            '<title>RDF</title></channel><item rdf:about="https://x.example.cn/1">'
            "<title>条目</title><link>https://x.example.cn/1</link></item></rdf:RDF>"
        ).encode(),
        False,
    ),
    (
        "doctype",
        b'<!DOCTYPE rss PUBLIC "-//Netscape Communications//DTD RSS 0.91//EN" "http://my.netscape.com/publish/formats/rss-0.91.dtd">'
        + rss(ITEM)[len(b'<?xml version="1.0" encoding="utf-8"?>') :],
        False,
    ),
    (
        "external entity",
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        + rss(ITEM.replace("光伏", "&x;"))[len(b'<?xml version="1.0" encoding="utf-8"?>') :],
        False,
    ),
    ("undefined entity", rss(ITEM.replace("光伏", "&nbsp;光伏")), False),
    ("not well-formed", rss(ITEM).replace(b"</channel>", b""), False),
    (
        "prefix rebound",
        rss(ITEM + "<dc:creator>x</dc:creator>", root='xmlns:dc="http://example.com/not-dc"'),
        False,
    ),
    ("unknown element", rss(ITEM + "<source url='https://s.example.cn/'>来源</source>"), False),
    (
        "item attributes",
        rss(ITEM).replace(
            b"<item>",
            b'<item rdf:about="x" xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">',
        ),
        False,
    ),
]


@pytest.mark.parametrize(("name", "body", "fast"), EDGE_CASES, ids=[c[0] for c in EDGE_CASES])
def test_edge_case_reads_the_same_on_both_paths(name: str, body: bytes, fast: bool) -> None:
    assert_same(body)
    assert handled(body) is fast


def test_a_non_http_base_is_left_to_feedparser() -> None:
    body = rss(ITEM)
    assert not handled(body, url="file:///srv/feeds/a.xml")
    assert_same(body, url="file:///srv/feeds/a.xml")


def test_fast_path_output_is_sanitised() -> None:
    body = rss(
        ITEM.replace("光伏", "&lt;script&gt;x&lt;/script&gt;光伏")
        + "<description>&lt;img src=&quot;javascript:x&quot; onerror=&quot;y&quot;&gt;"
        "&lt;a href=&quot;/rel&quot;&gt;链&lt;/a&gt;</description>"
    )
    assert handled(body)
    result = assert_same(body)
    assert isinstance(result, ParsedFeed)
    (entry,) = result.entries
    # An RSS title with tags outside feedparser's HTML list stays plain text (on both
    # paths): it reaches subscribers escaped, never as markup.
    assert entry.title == "<script>x</script>光伏板块走强"
    assert "javascript" not in entry.content and "onerror" not in entry.content
    assert 'href="https://news.example.cn/rel"' in entry.content


# ---------------------------------------------------------------- property test

_TEXT = st.text(
    alphabet=st.sampled_from([*"深圳新能源光伏港股央行 AIabcXYZ019<>&\"'/;#=-_.:", "\n", "\t"]),
    max_size=20,
)
_MARKUP = st.sampled_from(
    ["", "<b>", "</b>", "<p>", "<script>x</script>", "&amp;", "&#28145;", "<a href='/r'>"]
)
_RFC822 = st.sampled_from(
    [
        "Tue, 31 May 2022 18:03:41",
        "31 May 2022 18:03",
        "Mon, 01 Jan 1996 00:00:00",
        "1 Jan 2099 00:00:00",
    ]
)
_ZONE = st.sampled_from(["", " GMT", " EST", " +0800", " -0930", " Z", " XYZ"])
_W3C = st.sampled_from(
    ["2022-05-31T18:03:41", "2022-05-31", "1990-01-01T00:00:00", "2022-05-31T18:03:41.5"]
)
_OFFSET = st.sampled_from(["", "Z", "+08:00", "-05:00"])
_LINK = st.sampled_from(
    ["https://news.example.cn/a", "/rel/a?x=1&y=2", "rel", "javascript:x", "", "mailto:a@b.cn"]
)


def _escaped(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@st.composite
def _rss_items(draw: st.DrawFn) -> str:
    parts = [f"<title>{_escaped(draw(_TEXT) + draw(_MARKUP) + draw(_TEXT))}</title>"]
    if link := draw(_LINK):
        parts.append(f"<link>{_escaped(link)}</link>")
    if draw(st.booleans()):
        permalink = draw(st.sampled_from(["", ' isPermaLink="true"', ' isPermaLink="false"']))
        parts.append(
            f"<guid{permalink}>{_escaped(draw(st.sampled_from(['g1', 'g2', 'https://x.example.cn/g'])))}</guid>"
        )
    if draw(st.booleans()):
        parts.append(f"<pubDate>{draw(_RFC822)}{draw(_ZONE)}</pubDate>")
    if draw(st.booleans()):
        parts.append(f"<description>{_escaped(draw(_MARKUP) + draw(_TEXT))}</description>")
    if draw(st.booleans()):
        parts.append(f"<category>{_escaped(draw(_TEXT))}</category>")
    order = draw(st.permutations(parts))
    return "".join(order)


@st.composite
def _atom_entries(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["", ' type="text"', ' type="html"']))
    parts = [f"<title{kind}>{_escaped(draw(_TEXT) + draw(_MARKUP) + draw(_TEXT))}</title>"]
    if draw(st.booleans()):
        parts.append(
            f"<id>{_escaped(draw(st.sampled_from(['urn:a', 'urn:b', 'rel/id', 'https://x.example.cn/i'])))}</id>"
        )
    if link := draw(_LINK):
        parts.append(f'<link href="{_escaped(link)}"/>')
    for element in ("updated", "published"):
        if draw(st.booleans()):
            parts.append(f"<{element}>{draw(_W3C)}{draw(_OFFSET)}</{element}>")
    if draw(st.booleans()):
        content = draw(st.sampled_from(["", ' type="html"', ' type="text"']))
        parts.append(f"<content{content}>{_escaped(draw(_MARKUP) + draw(_TEXT))}</content>")
    if draw(st.booleans()):
        parts.append(f"<author><name>{_escaped(draw(_TEXT))}</name></author>")
    return "".join(draw(st.permutations(parts)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.lists(_rss_items(), min_size=1, max_size=4).map(lambda items: rss(*items)),
        st.lists(_atom_entries(), min_size=1, max_size=4).map(lambda entries: atom(*entries)),
    )
)
def test_random_feeds_read_the_same_on_both_paths(body: bytes) -> None:
    """Where the fast path declines, both runs are feedparser's: equal either way."""
    assert outcome(body, fast_path=True) == outcome(body, fast_path=False)


def test_forcing_feedparser_is_an_ordinary_keyword() -> None:
    body = (DATA / "corpus" / "rss2" / "all.xml").read_bytes()
    slow = parse_feed(body, source="s", url=URL, headers={}, now=NOW, fast_path=False)
    assert slow == parse_feed(body, source="s", url=URL, headers={}, now=NOW)
