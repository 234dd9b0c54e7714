"""The argument parser and the entry point of the ``feedsvc`` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from feedsvc import __version__
from feedsvc.cli.commands import (
    EXIT_FAILURE,
    Command,
    check,
    digest,
    match,
    poll,
    publish,
    resubscribe,
    run,
    status,
)
from feedsvc.errors import ConfigError, FeedsvcError

#: In the order ``feedsvc --help`` lists them.
COMMANDS: tuple[Command, ...] = (
    check.COMMAND,
    run.COMMAND,
    poll.COMMAND,
    digest.COMMAND,
    match.COMMAND,
    publish.COMMAND,
    status.COMMAND,
    resubscribe.COMMAND,
)
DESCRIPTION = (
    "The ``feedsvc`` command: the composition root, the only module that wires everything."
)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(_query_as_argument(sys.argv[1:] if argv is None else argv))
    _setup_logging(args.verbose)
    try:
        return int(args.handler(args))
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return EXIT_FAILURE
    except FeedsvcError as e:
        print(f"feedsvc: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


def _query_as_argument(argv: Sequence[str]) -> list[str]:
    """``feedsvc match -广告 FEED``: a query may begin with ``-`` (an exclusion), which
    argparse would take for an option; ``match`` has no option but help, so a ``--`` is
    put before such a query."""
    words = list(argv)
    at = next((i for i, word in enumerate(words) if not word.startswith("-")), None)
    if at is None or words[at] != "match" or at + 1 >= len(words):
        return words
    query = words[at + 1]
    if query.startswith("-") and query not in ("-h", "--help", "--"):
        words.insert(at + 1, "--")
    return words


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="feedsvc", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"feedsvc {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    for command in COMMANDS:
        sub = commands.add_parser(command.name, help=command.help, description=command.help)
        sub.set_defaults(handler=command.handler)
        if command.needs_config:
            sub.add_argument(
                "-c", "--config", required=True, type=Path, help="the YAML config file"
            )
        command.add_arguments(sub)
    return parser


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    # APScheduler logs every tick at INFO; feedsvc logs what the ticks did instead.
    logging.getLogger("apscheduler").setLevel(logging.DEBUG if verbose else logging.WARNING)
