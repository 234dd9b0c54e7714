"""Digest rendering: subjects, grouping, highlighting, escaping and link safety, per locale."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import jinja2
import lxml.html
import pytest
from mail_support import REPO, JobSpec

from feedsvc.model import DigestJob, Highlighted
from feedsvc.render import DigestRenderer, Segment, highlight_segments, safe_url

JobFor = Callable[[JobSpec], DigestJob]
NEW_ENERGY = ("新能源", ("新能源", "光伏", "储能"), 8)  # the corpus has 8 such stories
HK = ("港股", ("港股",), 3)


def test_chinese_subject_counts_shown_and_omitted_stories(
    renderer: DigestRenderer, job_for: JobFor
) -> None:
    job = job_for(JobSpec({"new-energy": NEW_ENERGY}, omitted={"new-energy": 4}))
    assert len(job.items) == 8
    assert renderer.render(job).subject == "【新能源】12 条新消息 · 11月26日"


def test_english_subject_uses_subscription_names_and_local_date(
    renderer: DigestRenderer, job_for: JobFor
) -> None:
    spec = JobSpec(
        {"new-energy": NEW_ENERGY}, locale="en", timezone="Europe/London", omitted={"new-energy": 4}
    )
    # The window ends 2026-11-26 00:00 UTC: still 26 Nov in London.
    assert renderer.render(job_for(spec)).subject == "[new-energy] 12 new articles · 26 Nov"


def test_subject_date_is_the_subscribers_day(renderer: DigestRenderer, job_for: JobFor) -> None:
    spec = JobSpec({"new-energy": NEW_ENERGY}, locale="en", timezone="America/New_York")
    assert renderer.render(job_for(spec)).subject.endswith("· 25 Nov")


def test_subject_of_several_subscriptions_names_them_all(
    renderer: DigestRenderer, job_for: JobFor
) -> None:
    job = job_for(JobSpec({"new-energy": NEW_ENERGY, "hk": HK}))
    assert renderer.render(job).subject == "【新能源、港股】11 条新消息 · 11月26日"
    en = dataclasses.replace(job, locale="en")
    assert renderer.render(en).subject == "[new-energy, hk] 11 new articles · 26 Nov"


def test_subject_of_many_subscriptions_stays_short(
    renderer: DigestRenderer, job_for: JobFor
) -> None:
    names = {f"s{i}": (f"主题{i}", ("港股",), 1) for i in range(5)}
    subject = renderer.render(job_for(JobSpec(names))).subject
    assert subject == "【主题0、主题1、主题2等5个订阅】5 条新消息 · 11月26日"


def test_html_groups_by_subscription_then_source_in_order(
    renderer: DigestRenderer, job_for: JobFor
) -> None:
    job = job_for(JobSpec({"new-energy": NEW_ENERGY, "hk": HK}))
    doc = lxml.html.fromstring(renderer.render(job).html)
    cells = doc.xpath('//td[contains(@class, "subscription")]')
    assert [c.xpath('string(.//td[@class="sub-title"])') for c in cells] == ["新能源", "港股"]
    hk_titles = cells[1].xpath('.//div[@class="entry-title"]//a')
    assert [a.text_content() for a in hk_titles] == [i.title.text for i in job.items[-3:]]
    assert [a.get("href") for a in hk_titles] == [i.match.entry.data.link for i in job.items[-3:]]
    assert cells[1].xpath('string(.//div[@class="source-name"])') == "金融消息"


def test_matched_terms_are_marked_in_html_and_bracketed_in_text(
    renderer: DigestRenderer, job_for: JobFor
) -> None:
    job = job_for(JobSpec({"hk": HK}))
    rendered = renderer.render(job)
    doc = lxml.html.fromstring(rendered.html)
    assert {m.text for m in doc.xpath("//mark")} == {"港股"}
    assert "【港股】京城机电股份大涨23%" in rendered.text
    en = renderer.render(dataclasses.replace(job, locale="en"))
    assert "*港股*京城机电股份大涨23%" in en.text


def test_css_is_inlined_and_only_media_queries_stay_in_style(
    renderer: DigestRenderer, job_for: JobFor
) -> None:
    html = renderer.render(job_for(JobSpec({"hk": HK}))).html
    doc = lxml.html.fromstring(html)
    assert "background-color" in doc.xpath("//mark")[0].get("style")
    assert "color" in doc.xpath('//a[@class="entry-link"]')[0].get("style")
    assert "font-family" in doc.xpath('//td[@class="entry-cell"]')[0].get("style")
    style = " ".join(s.text_content() for s in doc.xpath("//style"))
    assert "@media" in style and ".hit" not in style.split("@media")[0]


def test_published_time_is_shown_in_the_subscribers_zone(
    renderer: DigestRenderer, job_for: JobFor
) -> None:
    # The first 港股 entry: published 2021-12-08T13:00:xx+08:00.
    zh = renderer.render(job_for(JobSpec({"hk": HK}))).text
    assert "金融消息 · 2021年12月8日 13:00" in zh
    en = renderer.render(job_for(JobSpec({"hk": HK}, locale="en", timezone="Europe/London"))).text
    assert "金融消息 · 8 Dec 2021 05:00" in en


def test_published_time_shows_the_year_only_when_it_is_not_the_digests(
    renderer: DigestRenderer, job_for: JobFor
) -> None:
    job = job_for(JobSpec({"hk": HK}))
    of_2021 = dataclasses.replace(job, window_end=datetime(2021, 12, 31, tzinfo=UTC))
    assert "金融消息 · 2021年12月8日 13:00" in renderer.render(job).text
    assert "金融消息 · 12月8日 13:00" in renderer.render(of_2021).text


def test_also_in_matched_terms_and_more_link(renderer: DigestRenderer, job_for: JobFor) -> None:
    job = job_for(JobSpec({"hk": HK}, omitted={"hk": 4}))
    first = dataclasses.replace(job.items[0], also_in=("东方财富", "新浪财经"))
    job = dataclasses.replace(job, items=(first, *job.items[1:]))
    rendered = renderer.render(job)
    assert "另见：东方财富、新浪财经" in rendered.text
    assert "命中：港股" in rendered.text
    assert "还有 4 条，查看全部：https://feeds.example.com/feeds/hk.atom" in rendered.text
    doc = lxml.html.fromstring(rendered.html)
    more = doc.xpath('//a[@class="more-link"]')[0]
    assert (more.get("href"), more.text_content()) == (
        "https://feeds.example.com/feeds/hk.atom",
        "还有 4 条，查看全部 »",
    )
    assert doc.xpath('string(//span[@class="also-in"])') == "· 另见：东方财富、新浪财经"


def test_unsubscribe_links_per_subscription_and_for_all(
    renderer: DigestRenderer, job_for: JobFor
) -> None:
    job = job_for(JobSpec({"new-energy": NEW_ENERGY, "hk": HK}, locale="en"))
    doc = lxml.html.fromstring(renderer.render(job).html)
    hrefs = [a.get("href") for a in doc.xpath("//a") if "unsubscribe" in a.get("href")]
    assert hrefs == [
        "https://feeds.example.com/unsubscribe?token=new-energy-tok",
        "https://feeds.example.com/unsubscribe?token=hk-tok",
        "https://feeds.example.com/unsubscribe?token=all-tok",
    ]


HOSTILE_TITLE = (
    '<script>alert(1)</script><img src=x onerror="alert(2)">'
    '<form action="https://e.vil"><iframe src="https://e.vil">'
)
HOSTILE_LINKS = [
    "java\tscript:alert(1)",
    "javascript:alert(1)",
    " JAVASCRIPT:alert(1)",
    "data:text/html;base64,PHNjcmlwdD4=",
    "vbscript:msgbox(1)",
    "//e.vil/x",
    "https://ok.example/\r\nX-Evil: 1",
]


@pytest.mark.parametrize("link", HOSTILE_LINKS)
def test_hostile_feed_text_and_links_never_become_markup(
    renderer: DigestRenderer, job_for: JobFor, link: str
) -> None:
    job = job_for(JobSpec({"hk": HK}))
    first = job.items[0]
    data = dataclasses.replace(first.match.entry.data, link=link, title=HOSTILE_TITLE)
    entry = dataclasses.replace(first.match.entry, data=data)
    hostile = dataclasses.replace(
        first,
        match=dataclasses.replace(first.match, entry=entry, terms=("<b>港股</b>",)),
        title=Highlighted(HOSTILE_TITLE + "港股", ((len(HOSTILE_TITLE), len(HOSTILE_TITLE) + 2),)),
        snippet=Highlighted('<a href="javascript:x">港股</a> onerror=alert(3)', ((0, 5),)),
        also_in=("<svg onload=alert(4)>",),
    )
    job = dataclasses.replace(job, items=(hostile,))
    doc = lxml.html.fromstring(renderer.render(job).html)
    assert not doc.xpath("//script | //iframe | //form | //img | //svg | //object | //embed")
    assert not [a for el in doc.iter() for a in el.attrib if a.lower().startswith("on")]
    assert all(h.startswith("https://") for h in doc.xpath("//@href"))
    assert HOSTILE_TITLE + "港股" in doc.text_content()
    assert not doc.xpath('//div[@class="entry-title"]//a')  # no link rather than a bad one


def test_control_characters_in_titles_do_not_reach_the_subject_or_lines(
    renderer: DigestRenderer, job_for: JobFor
) -> None:
    job = job_for(JobSpec({"hk": ("港股\r\nBcc: evil@example.com\x00", ("港股",), 1)}))
    rendered = renderer.render(job)
    assert (
        "\n" not in rendered.subject
        and "\r" not in rendered.subject
        and "\x00" not in rendered.subject
    )
    assert rendered.subject.startswith("【港股 Bcc: evil@example.com】")


def test_locale_falls_back_to_language_then_english(
    tmp_path: Path, renderer: DigestRenderer
) -> None:
    assert renderer.template_locale("zh-CN") == "zh-CN"
    assert renderer.template_locale("zh-TW") == "zh-CN"
    assert renderer.template_locale("fr") == "en"
    assert renderer.template_locale("_layout") == "en"  # layouts are not a locale
    assert renderer.template_locale("../zh-CN") == "en"


def test_undefined_template_variables_fail_loudly(tmp_path: Path, job_for: JobFor) -> None:
    shutil.copytree(REPO / "templates", tmp_path / "templates")
    subject = tmp_path / "templates" / "en" / "digest-subject.txt"
    subject.write_text(subject.read_text() + "{{ no_such_variable }}")
    job = job_for(JobSpec({"hk": HK}, locale="en"))
    with pytest.raises(jinja2.UndefinedError):
        DigestRenderer(tmp_path / "templates").render(job)


def test_rendering_is_deterministic(renderer: DigestRenderer, job_for: JobFor) -> None:
    job = job_for(JobSpec({"new-energy": NEW_ENERGY, "hk": HK}))
    assert renderer.render(job) == renderer.render(job)


@pytest.mark.parametrize(
    ("spans", "expected"),
    [
        ((), [("深圳市新能源", False)]),
        (((0, 2), (3, 6)), [("深圳", True), ("市", False), ("新能源", True)]),
        (((0, 3), (2, 6)), [("深圳市新能源", True)]),  # overlapping spans merge
        (((4, 99), (-5, 1)), [("深", True), ("圳市新", False), ("能源", True)]),  # clipped
        (((2, 2),), [("深圳市新能源", False)]),  # empty span ignored
    ],
)
def test_highlight_segments(
    spans: tuple[tuple[int, int], ...], expected: list[tuple[str, bool]]
) -> None:
    assert highlight_segments(Highlighted("深圳市新能源", spans)) == tuple(
        Segment(*e) for e in expected
    )


@pytest.mark.parametrize(
    ("url", "safe"),
    [
        ("https://例子.中国/新闻?q=深圳", True),
        ("http://finews.withounder.com/a.html", True),
        ("HTTPS://EXAMPLE.COM/", True),
        ("java\tscript:alert(1)", False),
        ("https://a.example/\u202eevil", False),
        ("ftp://example.com/x", False),
        ("https:///nohost", False),
        ("", False),
        (None, False),
    ],
)
def test_safe_url(url: str | None, safe: bool) -> None:
    assert safe_url(url) == (url if safe else None)


def test_window_line_uses_local_times(renderer: DigestRenderer, job_for: JobFor) -> None:
    job = job_for(JobSpec({"hk": HK}))
    assert job.window_end == datetime(2026, 11, 26, tzinfo=UTC)
    assert "11月25日 08:00 至 11月26日 08:00（Asia/Shanghai）" in renderer.render(job).text
