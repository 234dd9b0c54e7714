"""The commands of ``feedsvc``: each module describes one as a :class:`Command`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

Handler = Callable[[argparse.Namespace], int]


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    """A command whose only argument (if any) is the config."""


@dataclass(frozen=True)
class Command:
    """A sub-command: its name and help, whether it takes ``-c CONFIG``, its other
    arguments, and the handler that runs it and returns the exit status."""

    name: str
    help: str
    handler: Handler
    needs_config: bool = True
    add_arguments: Callable[[argparse.ArgumentParser], None] = _no_arguments
