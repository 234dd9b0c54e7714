"""The digest rules, alone: an entry's time, the same story merged and not sent twice,
the order and the cap, the operator's source labels, and the Message-ID."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from feedsvc.digest import (
    cap_per_digest,
    compose,
    digest_item,
    digest_message_id,
    drop_sent_stories,
    labelled,
    merge_same_stories,
    order_stories,
)
from feedsvc.model import EntryData, FeedInfo, MatchedEntry, StoredEntry

T0 = datetime(2026, 11, 26, 8, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def stored(
    n: int,
    *,
    title: str = "深圳新能源汽车销量创新高",
    link: str | None = None,
    source: str = "finews",
    published: datetime | None = T0,
    updated: datetime | None = None,
    first_seen: datetime = T0 + DAY,
    feed_title: str = "",
) -> StoredEntry:
    data = EntryData(
        id=f"tag:{source},2026:{n}",
        key=f"tag:{source},2026:{n}",
        title=title,
        link=link,
        published=published,
        updated=updated,
        content=f"<p>{title} 光伏与储能</p>",
    )
    feed = FeedInfo(id=f"tag:{source}", title=feed_title)
    return StoredEntry(n, source, feed, data, first_seen, first_seen)


def matched(
    entry: StoredEntry, subscription: str = "energy", terms: tuple[str, ...] = ("新能源",)
) -> MatchedEntry:
    return MatchedEntry(entry, subscription, terms, T0 + DAY)


def ids(stories: list[list[MatchedEntry]]) -> list[list[int]]:
    return [[m.entry.entry_id for m in story] for story in stories]


# -- the entry's time -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("published", "updated", "expected"),
    [
        pytest.param(T0, T0 + HOUR, T0, id="published first"),
        pytest.param(None, T0 + HOUR, T0 + HOUR, id="else updated"),
        pytest.param(None, None, T0 + DAY, id="else first seen"),
    ],
)
def test_an_entrys_time_is_published_else_updated_else_first_seen(
    published: datetime | None, updated: datetime | None, expected: datetime
) -> None:
    assert stored(1, published=published, updated=updated).time == expected


# -- the same story ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("second", "expected"),
    [
        pytest.param(
            stored(2, link="https://a/1", title="另一标题"), [[1, 2]], id="same link: merged"
        ),
        pytest.param(
            stored(2, title="深圳新能源汽車銷量創新高"), [[1, 2]], id="same title: merged"
        ),
        pytest.param(stored(2, published=T0 + DAY), [[1, 2]], id="same title a day later"),
        pytest.param(
            stored(2, published=T0 + DAY + HOUR), [[1], [2]], id="same title, over a day: two"
        ),
        pytest.param(stored(2, title="光伏装机"), [[1], [2]], id="other story"),
    ],
)
def test_the_same_story_is_merged(second: StoredEntry, expected: list[list[int]]) -> None:
    first = stored(1, link="https://a/1")
    assert ids(merge_same_stories([matched(first), matched(second)])) == expected


def test_the_earliest_copy_of_a_story_is_the_one_shown() -> None:
    late = stored(1, link="https://a/1", published=T0 + HOUR)
    early = stored(2, link="https://a/1", source="wire", published=T0)
    assert ids(merge_same_stories([matched(late), matched(early)])) == [[2, 1]]


def test_stories_merge_only_within_one_subscription() -> None:
    entry = stored(1, link="https://a/1")
    stories = merge_same_stories([matched(entry, "energy"), matched(entry, "shenzhen")])
    assert [story[0].subscription for story in stories] == ["energy", "shenzhen"]


def test_entries_without_a_link_are_not_merged_on_the_missing_link() -> None:
    first, second = stored(1, title="甲"), stored(2, title="乙")
    assert ids(merge_same_stories([matched(first), matched(second)])) == [[1], [2]]


@pytest.mark.parametrize(
    ("pending", "kept"),
    [
        pytest.param(stored(2, link="https://a/1", title="另一标题"), [], id="same link"),
        pytest.param(stored(2, link="https://b/2", published=T0 - HOUR), [], id="same title"),
        pytest.param(stored(2, link="https://b/2", published=T0 + 2 * DAY), [2], id="days later"),
        pytest.param(stored(2, link="https://b/2", title="光伏装机"), [2], id="other story"),
    ],
)
def test_a_story_an_earlier_digest_carried_is_dropped(
    pending: StoredEntry, kept: list[int]
) -> None:
    sent = [stored(1, link="https://a/1", source="wire")]
    fresh = drop_sent_stories([matched(pending)], sent)
    assert [m.entry.entry_id for m in fresh] == kept


# -- order, cap, labels -----------------------------------------------------------------


def test_stories_are_ordered_by_subscription_then_source_then_newest_first() -> None:
    stories = [
        [matched(stored(1, source="b", published=T0), "energy")],
        [matched(stored(2, source="a", published=T0), "energy")],
        [matched(stored(3, source="a", published=T0 + HOUR), "energy")],
        [matched(stored(4, source="a", published=T0), "shenzhen")],
    ]
    assert ids(order_stories(stories, ["shenzhen", "energy"])) == [[4], [3], [2], [1]]


def test_the_cap_counts_the_stories_it_leaves_out_per_subscription() -> None:
    stories = [[matched(stored(n), name)] for n, name in enumerate(["a", "b", "b", "a", "b"])]
    shown, omitted = cap_per_digest(stories, 2)
    assert ids(shown) == [[0], [1]]
    assert omitted == {"b": 2, "a": 1}
    assert cap_per_digest(stories, 10) == (stories, {})


def test_the_operators_label_wins_over_the_feeds_own_title() -> None:
    match = matched(stored(1, source="finews", feed_title="FT 中文网"))
    assert labelled(match, {"finews": "金融新闻"}).entry.feed.title == "金融新闻"
    assert labelled(match, {"other": "别的"}) is match


def test_an_item_names_the_other_sources_once_and_highlights_every_term() -> None:
    story = [
        matched(stored(1, source="finews", feed_title="金融"), terms=("新能源",)),
        matched(stored(2, source="wire"), terms=("深圳",)),
        matched(stored(3, source="wire2", feed_title="金融"), terms=("新能源",)),
        matched(stored(4, source="wire"), terms=("新能源",)),
    ]
    item = digest_item(story)
    assert item.match is story[0]
    assert item.also_in == ("wire",)
    assert item.title.spans == ((0, 5),)  # 深圳 and 新能源, adjacent


def test_compose_merges_orders_caps_and_labels() -> None:
    pending = [
        matched(stored(1, link="https://a/1", source="finews"), "energy"),
        matched(stored(2, link="https://a/1", source="wire"), "energy"),
        matched(stored(3, title="光伏装机", source="wire"), "energy"),
        matched(stored(4, title="深圳地铁", source="wire"), "shenzhen"),
    ]
    items, omitted = compose(pending, ["shenzhen", "energy"], 2, {"wire": "通讯社"})
    assert [i.match.entry.entry_id for i in items] == [4, 1]
    assert items[0].match.entry.feed.title == "通讯社"
    assert items[1].also_in == ("通讯社",)
    assert omitted == {"energy": 1}


# -- Message-ID -------------------------------------------------------------------------


def test_message_ids_differ_per_window_and_subscriber() -> None:
    t = datetime(2026, 11, 26, tzinfo=UTC)
    message_ids = {
        digest_message_id("a@example.com", t, "n@news.example"),
        digest_message_id("b@example.com", t, "n@news.example"),
        digest_message_id("a@example.com", t + timedelta(days=1), "n@news.example"),
    }
    assert len(message_ids) == 3 and all(i.endswith("@news.example>") for i in message_ids)


@pytest.mark.parametrize(
    ("sender", "domain"),
    [
        ("feedsvc <digests@news.example>", "news.example"),
        ("digests@news.example", "news.example"),
        ("feedsvc <>", "feedsvc.invalid"),
    ],
)
def test_a_message_id_is_in_the_senders_domain(sender: str, domain: str) -> None:
    assert digest_message_id("a@example.com", T0, sender).endswith(f"@{domain}>")
