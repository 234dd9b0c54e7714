"""``feedsvc check``: validate a config file."""

from __future__ import annotations

import argparse

from feedsvc.cli.commands import EXIT_OK, Command
from feedsvc.cli.compose import load_checked_config


def check(args: argparse.Namespace) -> int:
    loaded, _ = load_checked_config(args.config)
    config = loaded.config
    print(
        f"{args.config}: ok ({len(config.sources)} sources, {len(config.subscriptions)} "
        f"subscriptions, {len(config.subscribers)} subscribers)"
    )
    return EXIT_OK


COMMAND = Command("check", "validate a config file", check)
