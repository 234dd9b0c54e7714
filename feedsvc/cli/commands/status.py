"""``feedsvc status``: the sources' health, the outbox and unsubscribes."""

from __future__ import annotations

import argparse
import asyncio
import json

from feedsvc.cli.commands import EXIT_OK, Command
from feedsvc.cli.compose import load_checked_config, opened_storage
from feedsvc.cli.present import ServiceState, status_report, status_text
from feedsvc.config import Config

#: Failed deliveries listed by ``feedsvc status``.
STATUS_PROBLEMS = 20


def status(args: argparse.Namespace) -> int:
    loaded, _ = load_checked_config(args.config)
    state = asyncio.run(_state(loaded.config))
    if args.json:
        print(json.dumps(status_report(state), ensure_ascii=False, indent=2))
    else:
        print(status_text(state))
    return EXIT_OK


async def _state(config: Config) -> ServiceState:
    async with opened_storage(config, read_only=True) as storage:
        return ServiceState(
            await storage.source_statuses(),
            await storage.outbox_counts(),
            await storage.delivery_problems(STATUS_PROBLEMS),
            await storage.unsubscribed(),
        )


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true")


COMMAND = Command("status", "show sources' health and the outbox", status, add_arguments=_arguments)
