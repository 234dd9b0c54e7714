"""Story fragments rendered once and reused: output identical to rendering every digest whole.

Run as a script to rewrite the golden files after an intended template change:
``.venv/bin/python tests/mail/test_story_cache.py``.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from mail_support import MAIL_DATA, REPO, JobSpec, load_corpus, make_job

from feedsvc.model import DigestItem, DigestJob, Highlighted, StoredEntry
from feedsvc.render import DigestRenderer, RenderedDigest

GOLDEN = MAIL_DATA / "golden"
NEW_ENERGY = ("新能源", ("新能源", "光伏", "储能"), 3)
HK = ("港股", ("港股",), 2)


def golden_jobs(corpus: list[StoredEntry]) -> dict[str, DigestJob]:
    """Digests whose expected output is in tests/data/mail/golden/ (see its README)."""
    zh = make_job(JobSpec({"new-energy": NEW_ENERGY, "hk": HK}, omitted={"hk": 4}), corpus)
    syndicated = dataclasses.replace(zh.items[0], also_in=("东方财富", "新浪财经"))
    unlinked = dataclasses.replace(
        _with_entry(zh.items[1], link="java\tscript:alert(1)"),
        title=Highlighted("标题\r\n<b>粗</b> & 光伏", ((15, 17),)),
    )
    zh = dataclasses.replace(
        zh,
        items=(syndicated, unlinked, *zh.items[2:]),
        # A digest of 2027: every story, from 2021/2022, shows its year.
        window_end=datetime(2027, 1, 2, tzinfo=UTC),
    )
    spec = JobSpec({"hk": HK}, locale="en", timezone="Europe/London", omitted={"hk": 1})
    return {"zh-CN": zh, "en": make_job(spec, corpus)}


def _with_entry(item: DigestItem, **changes: object) -> DigestItem:
    stored = item.match.entry
    entry = dataclasses.replace(stored, data=dataclasses.replace(stored.data, **changes))
    return dataclasses.replace(item, match=dataclasses.replace(item.match, entry=entry))


def _golden(name: str) -> RenderedDigest:
    read = (GOLDEN / name).with_suffix
    return RenderedDigest(
        subject=read(".subject.txt").read_bytes().decode(),
        text=read(".txt").read_bytes().decode(),
        html=read(".html").read_bytes().decode(),
    )


@pytest.mark.parametrize("name", ["zh-CN", "en"])
def test_digest_equals_golden_file_byte_for_byte(
    renderer: DigestRenderer, corpus: list[StoredEntry], name: str
) -> None:
    # The golden files were written by rendering each digest whole and inlining its CSS
    # in one pass; stories now come from the cache and the result must not change.
    job = golden_jobs(corpus)[name]
    assert renderer.render(job) == _golden(name)
    assert renderer.render(job) == _golden(name)  # again, from a warm cache


def test_a_story_shared_by_digests_is_rendered_once(corpus: list[StoredEntry]) -> None:
    renderer = DigestRenderer(REPO / "templates")
    first = make_job(JobSpec({"hk": HK}, subscriber="a@example.com"), corpus)
    second = make_job(JobSpec({"hk": HK}, subscriber="b@example.com"), corpus)
    renderer.render(first)
    renderer.render(second)
    info = renderer.story_fragments.cache_info()
    assert (info.misses, info.hits) == (2, 2)


JobChange = Callable[[DigestJob], DigestJob]


def _first_item(change: Callable[[DigestItem], DigestItem]) -> JobChange:
    return lambda job: dataclasses.replace(job, items=(change(job.items[0]), *job.items[1:]))


def _first_entry(**changes: object) -> JobChange:
    return _first_item(lambda item: _with_entry(item, **changes))


def _first_match(**changes: object) -> JobChange:
    def change(item: DigestItem) -> DigestItem:
        return dataclasses.replace(item, match=dataclasses.replace(item.match, **changes))

    return _first_item(change)


def _first_source_title(title: str) -> JobChange:
    def change(item: DigestItem) -> DigestItem:
        stored = item.match.entry
        feed = dataclasses.replace(stored.feed, title=title)
        entry = dataclasses.replace(stored, feed=feed)
        return dataclasses.replace(item, match=dataclasses.replace(item.match, entry=entry))

    return _first_item(change)


CHANGES: dict[str, JobChange] = {
    "edited title": _first_item(
        lambda i: dataclasses.replace(i, title=Highlighted("港股更正：" + i.title.text))
    ),
    "other highlighted terms": _first_item(
        lambda i: dataclasses.replace(i, title=dataclasses.replace(i.title, spans=((0, 1),)))
    ),
    "edited snippet": _first_item(
        lambda i: dataclasses.replace(i, snippet=Highlighted("新的摘要 港股", ((5, 7),)))
    ),
    "changed link": _first_entry(link="https://finews.example/更正.html"),
    "link removed": _first_entry(link=None),
    "republished": _first_entry(published=datetime(2022, 3, 4, 5, 6, tzinfo=UTC)),
    "no publication time": _first_entry(published=None),
    "also in another source": _first_item(lambda i: dataclasses.replace(i, also_in=("新浪财经",))),
    "other matched terms": _first_match(terms=("港股", "恒指")),
    "renamed source": _first_source_title("东方财富"),
    "other time zone": lambda job: dataclasses.replace(job, timezone="America/New_York"),
    "other locale": lambda job: dataclasses.replace(job, locale="en"),
    "digest of another year": lambda job: dataclasses.replace(
        job, window_end=datetime(2021, 12, 31, tzinfo=UTC)
    ),
}


@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
def test_a_changed_story_never_reuses_a_stale_fragment(
    corpus: list[StoredEntry], change: JobChange
) -> None:
    warm = DigestRenderer(REPO / "templates")
    job = make_job(JobSpec({"hk": HK}), corpus)
    before = warm.render(job)
    changed = change(job)
    after = warm.render(changed)
    assert after == DigestRenderer(REPO / "templates").render(changed)
    assert (after.text, after.html) != (before.text, before.html)


def test_the_cache_is_bounded_and_evicted_stories_render_again(
    corpus: list[StoredEntry],
) -> None:
    small = DigestRenderer(REPO / "templates", story_cache_size=2)
    job = make_job(JobSpec({"new-energy": NEW_ENERGY, "hk": HK}), corpus)
    assert small.render(job) == small.render(job) == DigestRenderer(REPO / "templates").render(job)
    info = small.story_fragments.cache_info()
    assert info.currsize == 2 and info.misses == 2 * len(job.items)


def _write_golden_files() -> None:
    GOLDEN.mkdir(exist_ok=True)
    renderer = DigestRenderer(REPO / "templates")
    for name, job in golden_jobs(load_corpus()).items():
        rendered = renderer.render(job)
        write = (GOLDEN / name).with_suffix
        write(".subject.txt").write_bytes(rendered.subject.encode())
        write(".txt").write_bytes(rendered.text.encode())
        write(".html").write_bytes(rendered.html.encode())


if __name__ == "__main__":
    _write_golden_files()
