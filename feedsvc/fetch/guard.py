"""The address guard: which IP addresses the fetcher may connect to, checked on the URL,
on every resolved name and on the connected peer (no request reaches a private network
unless the config allows it)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ForbiddenAddress(OSError):
    """Raised by the resolver (an OSError, so aiohttp wraps it) for a refused address."""


@dataclass(frozen=True)
class _Allowed:
    network: IPNetwork
    port: int | None


class AddressPolicy:
    """Which IP addresses the fetcher may connect to.

    Public unicast addresses are always allowed. Loopback, private, link-local,
    multicast, reserved and unspecified addresses (also when embedded in IPv6 as
    IPv4-mapped, 6to4 or Teredo) are refused unless an allow-list entry covers the
    address and, when the entry names one, the port.
    """

    def __init__(self, allow: Iterable[str] = ()) -> None:
        """Build the policy from entries like ``127.0.0.1:8765``, ``10.0.0.0/8``, ``[::1]:80``.

        Raises:
            ValueError: an entry is not an address or network with optional port.
        """
        self._allowed = tuple(_parse_allow_entry(entry) for entry in allow)

    def allows(self, address: IPAddress, port: int) -> bool:
        """Whether a connection to ``address``:``port`` is permitted."""
        if _is_public(address):
            return True
        candidates = {address, *_embedded_ipv4(address)}
        return any(
            ip.version == rule.network.version and ip in rule.network and rule.port in (None, port)
            for ip in candidates
            for rule in self._allowed
        )


def _parse_allow_entry(entry: str) -> _Allowed:
    text = entry.strip()
    port: int | None = None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            port = int(rest.removeprefix(":"))
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = int(port_text)
    else:
        host = text
    return _Allowed(ipaddress.ip_network(host, strict=False), port)


def _embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    if isinstance(address, ipaddress.IPv4Address):
        return []
    embedded = [address.ipv4_mapped, address.sixtofour]
    if address.teredo:
        embedded.append(address.teredo[1])
    return [ip for ip in embedded if ip is not None]


def _is_public(address: IPAddress) -> bool:
    addresses = [address, *_embedded_ipv4(address)]
    return all(ip.is_global and not ip.is_multicast for ip in addresses)


def literal_address(host: str) -> IPAddress | None:
    """The IP address a URL host denotes literally, or None for a name.

    Raises:
        ForbiddenAddress: for legacy IPv4 spellings (``2130706433``, ``0x7f000001``,
            ``127.1``) that the C library accepts but no real feed uses.
    """
    bare = host.strip("[]")
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    try:
        packed = socket.inet_aton(bare)
    except OSError:
        return None
    raise ForbiddenAddress(f"non-canonical IPv4 address {host!r} ({socket.inet_ntoa(packed)})")


class GuardedResolver(AbstractResolver):
    """Resolves names, then keeps only the addresses the policy allows.

    aiohttp connects only to what the resolver returns, so a name that resolves
    to a private address is refused before any connect, on every redirect hop.
    """

    def __init__(self, policy: AddressPolicy) -> None:
        self._policy = policy
        self._resolver = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._resolver.resolve(host, port, family)
        allowed = [r for r in results if self._policy.allows(ipaddress.ip_address(r["host"]), port)]
        if not allowed:
            refused = ", ".join(sorted({r["host"] for r in results}))
            raise ForbiddenAddress(f"{host} resolves to forbidden address {refused}")
        return allowed

    async def close(self) -> None:
        await self._resolver.close()
