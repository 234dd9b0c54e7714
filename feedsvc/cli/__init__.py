"""The ``feedsvc`` command: the composition root (``compose``), the argument parser
(``main``), one module per command (``commands``) and what they show (``present``)."""

from feedsvc.cli.compose import open_services
from feedsvc.cli.main import main

__all__ = ["main", "open_services"]
