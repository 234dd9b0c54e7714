"""``feedsvc resubscribe``: undo an unsubscribe (the operator's decision)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

from feedsvc.cli.commands import EXIT_OK, Command
from feedsvc.cli.compose import load_checked_config, now, opened_storage
from feedsvc.config import Config
from feedsvc.errors import FeedsvcError


def resubscribe(args: argparse.Namespace) -> int:
    loaded, _ = load_checked_config(args.config)
    subscriber = next((s for s in loaded.config.subscribers if s.email == args.email), None)
    if subscriber is None:
        raise FeedsvcError(f"no subscriber {args.email!r} in {args.config}")
    names = args.subscription or subscriber.subscriptions
    unknown = sorted(set(names) - set(subscriber.subscriptions))
    if unknown:
        raise FeedsvcError(f"{args.email} is not subscribed to {', '.join(unknown)} in the config")
    asyncio.run(_resubscribe(loaded.config, args.email, names))
    print(f"{args.email}: subscribed again to {', '.join(names)} (from now on)")
    return EXIT_OK


async def _resubscribe(config: Config, email: str, names: Sequence[str]) -> None:
    async with opened_storage(config) as storage:
        for name in names:
            await storage.resubscribe(email, name, now())


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("email")
    parser.add_argument("subscription", nargs="*", help="default: all of the subscriber's")


COMMAND = Command(
    "resubscribe",
    "undo an unsubscribe (the operator's decision)",
    resubscribe,
    add_arguments=_arguments,
)
