"""``feedsvc publish``: write each subscription's feeds into a folder for static hosting."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from feedsvc import pipeline
from feedsvc.cli.commands import EXIT_OK, Command
from feedsvc.cli.compose import load_checked_config, now, opened_storage
from feedsvc.config import Config


def publish(args: argparse.Namespace) -> int:
    loaded, _ = load_checked_config(args.config)
    written = asyncio.run(_publish(loaded.config, args.out))
    print(f"wrote {len(written)} files into {args.out}")
    return EXIT_OK


async def _publish(config: Config, out: Path) -> list[Path]:
    async with opened_storage(config) as storage:
        return await pipeline.publish_feeds(config, storage, out, now())


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path)


COMMAND = Command("publish", "write each subscription's feeds", publish, add_arguments=_arguments)
