"""A guard that no packet of a fetch test leaves the host.

An audit hook cannot be removed, so it is installed once and armed only while a test that
uses the fixture runs; other test areas (e.g. PostgreSQL on another host) are unaffected.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from collections.abc import Iterator
from typing import Any

import pytest

_guard = {"armed": False}
_violations: list[str] = []


def _numeric_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        pass
    try:  # legacy spellings such as "2130706433" are numeric too: no DNS query
        return ipaddress.ip_address(socket.inet_ntoa(socket.inet_aton(host)))
    except OSError:
        return None


def _leaves_machine(event: str, args: tuple[Any, ...]) -> str | None:
    """The host an audited socket event would reach off this machine, if any."""
    if event == "socket.connect" and isinstance(args[1], tuple):
        address = _numeric_address(str(args[1][0]))
        return None if address is not None and address.is_loopback else str(args[1][0])
    if event == "socket.getaddrinfo" and args[0] is not None:
        host = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
        # Only a name lookup sends a packet (to DNS); numbers are checked at connect.
        return None if host == "localhost" or _numeric_address(host) else host
    return None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _guard["armed"]:
        return
    host = _leaves_machine(event, args)
    if host is not None:
        _violations.append(f"{event} to {host!r}")
        raise RuntimeError(f"test tried to reach {host!r} off this machine ({event})")


sys.addaudithook(_audit)


@pytest.fixture
def guard_violations() -> list[str]:
    """The off-machine accesses the guard has blocked during this test."""
    return _violations


@pytest.fixture(autouse=True)
def network_guard() -> Iterator[None]:
    """Fail the test on any connect (or DNS lookup) that would leave the machine."""
    _violations.clear()
    _guard["armed"] = True
    try:
        yield
    finally:
        _guard["armed"] = False
    assert not _violations, f"non-loopback network access: {_violations}"
