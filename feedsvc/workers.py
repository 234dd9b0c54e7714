"""Work done in the parse worker processes: parse a fetched body and match its entries.

A module of its own so that a spawned worker imports only the parse and match stages
(not the database, HTTP and mail stacks that the pipeline pulls in): each worker costs
tens of megabytes less.
"""

from __future__ import annotations

from datetime import datetime

from feedsvc.match import Hit, MatchIndex
from feedsvc.model import EntryData, ParsedFeed
from feedsvc.parse import parse_feed

#: Each entry's hits by entry key (entries without hits left out).
EntryHits = dict[str, list[Hit]]

#: The poller's match index inside a parse worker process (see ``install_match_index``).
_worker_index: MatchIndex | None = None


def install_match_index(index: MatchIndex) -> None:
    """Parse pool initializer: the worker keeps the poller's index (pickled as its
    queries, rebuilt once per worker) and matches what it parses."""
    global _worker_index
    _worker_index = index


def parse_and_match(
    body: bytes,
    *,
    source: str,
    url: str,
    headers: dict[str, str],
    now: datetime,
    encoding: str | None,
    max_entries: int,
) -> tuple[ParsedFeed, EntryHits | None]:
    """``parse_feed``, then, in a parse worker with an index installed, each entry's hits.

    Matching in the workers keeps its normalisation (NFKC, OpenCC, ~40 µs an entry)
    off the poller process, whose CPU limits a first cycle. The hits are by key, the
    first entry of a key winning as in ``save_entries``; ``None`` where no index is
    installed (a thread pool): the poller then matches what was stored.
    """
    parsed = parse_feed(
        body,
        source=source,
        url=url,
        headers=headers,
        now=now,
        encoding=encoding,
        max_entries=max_entries,
    )
    index = _worker_index
    if index is None:
        return parsed, None
    first: dict[str, EntryData] = {}
    for entry in parsed.entries:
        first.setdefault(entry.key, entry)
    found = index.match_many((entry, source) for entry in first.values())
    return parsed, {key: hits for key, hits in zip(first, found, strict=True) if hits}
