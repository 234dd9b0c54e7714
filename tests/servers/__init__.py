"""The tests' fake servers, all on 127.0.0.1: ``http`` serves feeds, ``smtp`` takes mail."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now: connections to it are refused
    until a test starts a server there."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
