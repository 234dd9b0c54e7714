"""``feedsvc poll``: poll sources once now, then exit."""

from __future__ import annotations

import argparse
import asyncio

from feedsvc import pipeline
from feedsvc.cli.commands import EXIT_FAILURE, EXIT_OK, Command
from feedsvc.cli.compose import load_checked_config, now, open_services
from feedsvc.cli.present import POLL_COLUMNS, ProgressBar, poll_row, poll_summary, table
from feedsvc.config import LoadedConfig
from feedsvc.errors import FeedsvcError
from feedsvc.match import MatchIndex


def poll(args: argparse.Namespace) -> int:
    loaded, index = load_checked_config(args.config)
    reports = asyncio.run(_poll(loaded, index, args.source))
    print(table(POLL_COLUMNS, [poll_row(r) for r in reports]))
    print(poll_summary(reports))
    failed = sum(1 for r in reports if r.status == "error")
    return EXIT_FAILURE if failed and failed == len(reports) else EXIT_OK


async def _poll(
    loaded: LoadedConfig, index: MatchIndex, only: list[str] | None
) -> list[pipeline.SourceReport]:
    known = {s.name for s in loaded.config.sources}
    unknown = [name for name in only or [] if name not in known]
    if unknown:
        raise FeedsvcError(f"unknown source(s): {', '.join(unknown)}")
    names = only or [s.name for s in loaded.config.sources if s.enabled]
    async with open_services(loaded, parse_in_processes=len(names) > 4, index=index) as svc:
        with ProgressBar() as bar:
            return await pipeline.update_due_sources(svc, now(), names=names, progress=bar)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", action="append", help="only this source (repeatable)")


COMMAND = Command("poll", "poll sources once now, then exit", poll, add_arguments=_arguments)
