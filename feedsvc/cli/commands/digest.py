"""``feedsvc digest``: send the digests due now, or preview a subscriber's next one."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from feedsvc import pipeline
from feedsvc.cli.commands import EXIT_FAILURE, EXIT_OK, Command
from feedsvc.cli.compose import load_checked_config, now, open_services
from feedsvc.config import Config, LoadedConfig
from feedsvc.errors import FeedsvcError
from feedsvc.match import MatchIndex


def digest(args: argparse.Namespace) -> int:
    loaded, index = load_checked_config(args.config)
    at = _instant(args.now, loaded.config)
    if args.preview:
        return asyncio.run(_preview(loaded, index, args.preview, at, args.out))
    report = asyncio.run(_send_due(loaded, index, at))
    print(f"digests enqueued={report.enqueued} sent={report.sent} failed={report.failed}")
    return EXIT_FAILURE if report.failed else EXIT_OK


def _instant(value: datetime | None, config: Config) -> datetime:
    if value is None:
        return now()
    if value.tzinfo is None:
        value = value.replace(tzinfo=ZoneInfo(config.timezone))
    return value.astimezone(UTC)


async def _send_due(loaded: LoadedConfig, index: MatchIndex, at: datetime) -> pipeline.DigestReport:
    async with open_services(loaded, parse_in_processes=False, index=index) as svc:
        return await pipeline.send_due_digests(svc, at)


async def _preview(
    loaded: LoadedConfig, index: MatchIndex, email: str, at: datetime, out: Path | None
) -> int:
    services = open_services(loaded, parse_in_processes=False, index=index, read_only=True)
    async with services as svc:
        try:
            rendered = await pipeline.preview_digest(svc, email, at)
        except KeyError as e:
            raise FeedsvcError(str(e.args[0])) from e
    if rendered is None:
        print(f"nothing pending for {email}", file=sys.stderr)
        return EXIT_OK
    out = out or Path(f"var/preview-{email}.html")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(rendered.html, encoding="utf-8")
    out.with_suffix(".txt").write_text(
        f"Subject: {rendered.subject}\n\n{rendered.text}", encoding="utf-8"
    )
    print(f"{rendered.subject}\nHTML: {out}\ntext: {out.with_suffix('.txt')}")
    return EXIT_OK


def _parse_instant(text: str) -> datetime:
    """An ISO 8601 instant; without an offset it is read in the config's time zone."""
    try:
        return datetime.fromisoformat(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from e


def _arguments(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--send-due", action="store_true", help="send the digests due now")
    mode.add_argument("--preview", metavar="EMAIL", help="write this subscriber's next digest")
    parser.add_argument(
        "--now",
        type=_parse_instant,
        help="act as if it were this ISO 8601 time (no offset: the config's time zone)",
    )
    parser.add_argument("--out", type=Path, help="with --preview: write the HTML here")


COMMAND = Command("digest", "send due digests, or preview one", digest, add_arguments=_arguments)
