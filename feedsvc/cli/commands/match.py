"""``feedsvc match``: print the entries of feeds that a query matches, one JSON line each."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

from feedsvc.cli.commands import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, Command
from feedsvc.cli.commands.feed_loading import open_feed_loader
from feedsvc.errors import QueryError, SourceError
from feedsvc.match import MatchIndex
from feedsvc.model import ParsedFeed


def match(args: argparse.Namespace) -> int:
    try:
        index = MatchIndex.build({"query": args.query})
    except QueryError as e:
        print(f"feedsvc: malformed query: {e.message} at {e.position}", file=sys.stderr)
        return EXIT_USAGE
    return asyncio.run(_match(index, args.feeds))


async def _match(index: MatchIndex, feeds: Sequence[str]) -> int:
    status = EXIT_OK
    async with open_feed_loader(feeds) as load:
        for feed in feeds:
            try:
                parsed = await load(feed)
            except (SourceError, OSError) as e:
                print(f"feedsvc: {feed}: {e}", file=sys.stderr)
                status = EXIT_FAILURE
                continue
            _print_matches(index, parsed)
    return status


def _print_matches(index: MatchIndex, parsed: ParsedFeed) -> None:
    source = parsed.feed.title
    found = index.match_many((entry, source) for entry in parsed.entries)
    for entry, hits in zip(parsed.entries, found, strict=True):
        if hits:
            line = {
                "id": entry.id,
                "title": entry.title,
                "link": entry.link,
                "terms": list(hits[0].terms),
            }
            print(json.dumps(line, ensure_ascii=False), flush=True)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("query")
    parser.add_argument("feeds", nargs="+", metavar="FEED", help="feed file or http(s) URL")


COMMAND = Command(
    "match",
    "print the entries of feeds that a query matches",
    match,
    needs_config=False,
    add_arguments=_arguments,
)
