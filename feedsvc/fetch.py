"""HTTP(S) and ``file:`` retrieval: conditional GET, limits, redirects, address guard, statuses."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import re
import socket
import zlib
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from multidict import CIMultiDictProxy
from yarl import URL

import feedsvc
from feedsvc.config import FetchConfig
from feedsvc.errors import FetchError
from feedsvc.model import Fetched, NotModified, SourceForUpdate

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_PERMANENT_REDIRECTS = frozenset({301, 308})
_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d+)", re.IGNORECASE)
_READ_CHUNK = 64 * 1024
_MAX_MESSAGE = 300


class _ForbiddenAddress(OSError):
    """Raised by the resolver (an OSError, so aiohttp wraps it) for a refused address."""


# ---------------------------------------------------------------- address policy


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


def _literal_address(host: str) -> IPAddress | None:
    """The IP address a URL host denotes literally, or None for a name.

    Raises:
        _ForbiddenAddress: for legacy IPv4 spellings (``2130706433``, ``0x7f000001``,
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
    raise _ForbiddenAddress(f"non-canonical IPv4 address {host!r} ({socket.inet_ntoa(packed)})")


class _GuardedResolver(AbstractResolver):
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
            raise _ForbiddenAddress(f"{host} resolves to forbidden address {refused}")
        return allowed

    async def close(self) -> None:
        await self._resolver.close()


# ---------------------------------------------------------------- body reading


class _TooLarge(Exception):
    pass


class _Inflater:
    """Streams a gzip or deflate body, refusing to produce more than ``limit`` bytes.

    Each ``zlib`` call is capped with ``max_length`` so a gzip bomb is stopped after
    ``limit`` bytes of output instead of being inflated in memory.
    """

    def __init__(self, encoding: str, limit: int) -> None:
        self._encoding = encoding
        self._limit = limit
        self._produced = 0
        self._zlib: Any = None

    def feed(self, data: bytes) -> bytes:
        out = []
        while data:
            if self._zlib is None:
                self._zlib = zlib.decompressobj(self._wbits(data))
            chunk = self._zlib.decompress(data, self._limit - self._produced + 1)
            self._count(len(chunk))
            out.append(chunk)
            data = self._zlib.unconsumed_tail
            if self._zlib.eof:
                # Concatenated gzip members (RFC 1952 §2.2) each start a new stream;
                # zero padding after the last one is ignored, as gzip(1) does.
                data, self._zlib = self._zlib.unused_data.lstrip(b"\x00"), None
        return b"".join(out)

    def finish(self) -> None:
        """Raise zlib.error if the body ended inside a compressed stream."""
        if self._zlib is not None and not self._zlib.eof:
            raise zlib.error("compressed body is truncated")

    def _count(self, size: int) -> None:
        self._produced += size
        if self._produced > self._limit:
            raise _TooLarge(f"decompressed body exceeds {self._limit} bytes")

    def _wbits(self, data: bytes) -> int:
        if self._encoding in ("gzip", "x-gzip"):
            return 16 + zlib.MAX_WBITS
        # "deflate" should be zlib-wrapped (RFC 9110 §8.4.1.2); some servers send raw.
        zlib_header = len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
        return zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS


async def _read_capped(chunks: AsyncIterator[bytes], content_encoding: str, limit: int) -> bytes:
    """The (decoded) body, or _TooLarge once the wire or decoded size passes ``limit``."""
    inflater = _Inflater(content_encoding, limit) if content_encoding != "identity" else None
    received = 0
    parts = []
    async for chunk in chunks:
        received += len(chunk)
        if received > limit:
            raise _TooLarge(f"body exceeds {limit} bytes")
        parts.append(inflater.feed(chunk) if inflater else chunk)
    if inflater:
        inflater.finish()
    return b"".join(parts)


# ---------------------------------------------------------------- the fetcher


class Fetcher:
    """Fetches sources politely: one shared session, global and per-host limits.

    Use as an async context manager; ``fetch`` may be called concurrently.
    """

    def __init__(self, config: FetchConfig, *, version: str = feedsvc.__version__) -> None:
        self._config = config
        self._policy = AddressPolicy(config.allow_private)
        self._user_agent = _user_agent(version, config.user_agent_contact)
        self._slots = asyncio.Semaphore(config.concurrency)
        self._host_slots: dict[str, asyncio.Semaphore] = {}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Fetcher:
        connector = aiohttp.TCPConnector(
            resolver=_GuardedResolver(self._policy),
            limit=self._config.concurrency,
            limit_per_host=self._config.per_host,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None,  # the whole fetch, redirects included, is bounded in fetch()
                sock_connect=self._config.connect_timeout.total_seconds(),
                sock_read=self._config.read_timeout.total_seconds(),
            ),
            headers={"User-Agent": self._user_agent, "Accept-Encoding": "gzip, deflate"},
            auto_decompress=False,  # we inflate ourselves, under the body cap
            trust_env=False,  # an environment proxy would bypass the address guard
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch(
        self, source: SourceForUpdate, *, max_body_bytes: int | None = None
    ) -> Fetched | NotModified:
        """Retrieve ``source.url`` with a conditional GET.

        A 304, or a 200 whose SHA-256 equals ``source.body_hash``, gives NotModified.
        The total timeout covers the whole fetch including redirects, not the wait
        for a concurrency slot.

        Raises:
            FetchError: for every failure of the source, with ``kind`` one of
                ``network``, ``timeout``, ``http``, ``too_large``, ``redirect``,
                ``forbidden_address``, ``unsupported_url``; ``status``,
                ``retry_after`` and ``gone`` carry what the server said.
        """
        limit = max_body_bytes or self._config.max_body_bytes
        try:
            scheme = urlsplit(source.url).scheme.lower()
            if scheme == "file":
                return await self._fetch_file(source, limit)
            if scheme not in ("http", "https"):
                raise _Failure("unsupported_url", f"unsupported URL scheme {scheme!r}")
            async with self._slot_for(source.url):
                async with asyncio.timeout(self._config.total_timeout.total_seconds()):
                    return await self._fetch_http(source, limit)
        except _Failure as e:
            raise FetchError(source.name, e.kind, _shorten(e.message), **e.details) from e
        except Exception as e:
            kind, message = _classify(e)
            raise FetchError(source.name, kind, _shorten(message)) from e

    def _slot_for(self, url: str) -> _Slots:
        host = (urlsplit(url).hostname or "").lower()
        per_host = self._host_slots.setdefault(host, asyncio.Semaphore(self._config.per_host))
        # Host first: sources queued behind a busy host must not hold global slots.
        return _Slots(per_host, self._slots)

    async def _fetch_http(self, source: SourceForUpdate, limit: int) -> Fetched | NotModified:
        assert self._session is not None, "use Fetcher as an async context manager"
        url = _parse_url(source.url)
        seen = {str(url)}
        permanent = True
        for hop in range(self._config.max_redirects + 1):
            self._check_url(url)
            async with self._session.get(
                url, headers=_conditional_headers(source), allow_redirects=False
            ) as response:
                self._check_peer(response)
                if response.status not in _REDIRECT_STATUSES:
                    moved_to = str(url) if hop and permanent else None
                    return await _outcome(response, source, str(url), moved_to, limit)
                url = _redirect_target(response, url, seen)
                permanent = permanent and response.status in _PERMANENT_REDIRECTS
        raise _Failure("redirect", f"more than {self._config.max_redirects} redirects")

    def _check_url(self, url: URL) -> None:
        if url.scheme not in ("http", "https"):
            raise _Failure("unsupported_url", f"redirect to unsupported URL scheme {url.scheme!r}")
        if not url.host:
            raise _Failure("unsupported_url", f"URL without a host: {url}")
        try:
            address = _literal_address(url.host)
        except _ForbiddenAddress as e:
            raise _Failure("forbidden_address", str(e)) from e
        port = url.port or 0
        if address is not None and not self._policy.allows(address, port):
            raise _Failure("forbidden_address", f"{url.host} is a forbidden address")

    def _check_peer(self, response: aiohttp.ClientResponse) -> None:
        """Check the address actually connected to (the resolver already filtered it)."""
        transport = response.connection.transport if response.connection else None
        peer = transport.get_extra_info("peername") if transport else None
        if peer is None:
            return
        address = ipaddress.ip_address(peer[0].split("%")[0])
        if not self._policy.allows(address, peer[1]):
            raise _Failure("forbidden_address", f"connected to forbidden address {peer[0]}")

    async def _fetch_file(self, source: SourceForUpdate, limit: int) -> Fetched | NotModified:
        path = _file_path(source.url, self._config.file_root)
        body = await asyncio.to_thread(_read_file, path, limit)
        body_hash = hashlib.sha256(body).hexdigest()
        if body_hash == source.body_hash:
            return NotModified(source.url)
        return Fetched(source.url, body, {}, None, None, body_hash)


class _Failure(Exception):
    """A classified failure inside the fetcher, turned into FetchError at the boundary."""

    def __init__(self, kind: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.details = details


class _Slots:
    """Holds several semaphores together, acquired in order."""

    def __init__(self, *semaphores: asyncio.Semaphore) -> None:
        self._semaphores = semaphores

    async def __aenter__(self) -> None:
        for acquired, semaphore in enumerate(self._semaphores):
            try:
                await semaphore.acquire()
            except BaseException:
                for held in self._semaphores[:acquired]:
                    held.release()
                raise

    async def __aexit__(self, *exc_info: object) -> None:
        for semaphore in self._semaphores:
            semaphore.release()


def _user_agent(version: str, contact: str | None) -> str:
    return f"feedsvc/{version} (+{contact})" if contact else f"feedsvc/{version}"


def _parse_url(text: str) -> URL:
    try:
        return URL(text)
    except ValueError as e:
        raise _Failure("unsupported_url", f"malformed URL {text!r}") from e


def _conditional_headers(source: SourceForUpdate) -> dict[str, str]:
    headers = {}
    if source.etag:
        headers["If-None-Match"] = source.etag
    if source.last_modified:
        headers["If-Modified-Since"] = source.last_modified
    return headers


def _redirect_target(response: aiohttp.ClientResponse, url: URL, seen: set[str]) -> URL:
    location = response.headers.get("Location")
    if not location:
        raise _Failure("http", f"HTTP {response.status} without Location", status=response.status)
    target = url.join(_parse_url(location))
    if str(target) in seen:
        raise _Failure("redirect", f"redirect loop at {target}")
    seen.add(str(target))
    return target


async def _outcome(
    response: aiohttp.ClientResponse,
    source: SourceForUpdate,
    url: str,
    moved_to: str | None,
    limit: int,
) -> Fetched | NotModified:
    headers = _flat_headers(response.headers)
    max_age = _max_age(headers)
    if response.status == 304:
        return NotModified(
            url,
            headers.get("etag", source.etag),
            headers.get("last-modified", source.last_modified),
            max_age=max_age,
            moved_to=moved_to,
        )
    if not 200 <= response.status < 300:
        raise _status_failure(response.status, response.reason, headers)
    body = await _read_body(response, headers, limit)
    body_hash = hashlib.sha256(body).hexdigest()
    etag, last_modified = headers.get("etag"), headers.get("last-modified")
    if body_hash == source.body_hash:
        return NotModified(url, etag, last_modified, max_age=max_age, moved_to=moved_to)
    return Fetched(url, body, headers, etag, last_modified, body_hash, moved_to, max_age=max_age)


async def _read_body(
    response: aiohttp.ClientResponse, headers: Mapping[str, str], limit: int
) -> bytes:
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip", "x-gzip", "deflate"):
        raise _Failure("http", f"unsupported Content-Encoding {encoding!r}", status=response.status)
    declared = response.content_length
    if declared is not None and declared > limit:
        raise _Failure("too_large", f"Content-Length {declared} exceeds {limit} bytes")
    try:
        return await _read_capped(response.content.iter_chunked(_READ_CHUNK), encoding, limit)
    except _TooLarge as e:
        raise _Failure("too_large", str(e)) from e
    except zlib.error as e:
        raise _Failure("network", f"corrupt {encoding} body: {e}") from e


def _status_failure(status: int, reason: str | None, headers: Mapping[str, str]) -> _Failure:
    message = f"HTTP {status} {reason or ''}".strip()
    retry_after = _retry_after(headers)
    if retry_after is not None:
        message += f" (Retry-After {retry_after:.0f}s)"
    return _Failure("http", message, status=status, retry_after=retry_after, gone=status == 410)


def _flat_headers(headers: CIMultiDictProxy[str]) -> dict[str, str]:
    flat: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        flat[key] = f"{flat[key]}, {value}" if key in flat else value
    return flat


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` in seconds (RFC 9110 §10.2.3: delay-seconds or an HTTP-date).

    An HTTP-date is measured against the response's own ``Date`` so that a skewed
    server clock does not distort the delay.
    """
    value = headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    when = _http_date(value)
    if when is None:
        return None
    reference = _http_date(headers.get("date", "")) or datetime.now(UTC)
    return max(0.0, (when - reference).total_seconds())


def _http_date(value: str) -> datetime | None:
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _max_age(headers: Mapping[str, str]) -> float | None:
    match = _MAX_AGE.search(headers.get("cache-control", ""))
    return float(match.group(1)) if match else None


def _file_path(url: str, root: str | None) -> Path:
    """The local path of a ``file:`` URL, which must lie inside ``root``."""
    if root is None:
        raise _Failure("unsupported_url", "file: URLs need fetch.file_root in the config")
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise _Failure("unsupported_url", f"file: URL with a remote host {parts.netloc!r}")
    root_path = Path(root).resolve()
    # resolve() follows symlinks, so a link pointing outside the root is caught too.
    path = (root_path / unquote(parts.path)).resolve()
    if not path.is_relative_to(root_path):
        raise _Failure("forbidden_address", f"{path} is outside the file root {root_path}")
    return path


def _read_file(path: Path, limit: int) -> bytes:
    if not path.is_file():
        raise _Failure("network", f"{path} is not a regular file")
    with path.open("rb") as f:
        body = f.read(limit + 1)
    if len(body) > limit:
        raise _Failure("too_large", f"{path} exceeds {limit} bytes")
    return body


def _shorten(message: str) -> str:
    """Error messages are stored and shown per source; servers can make them huge."""
    return message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 1] + "…"


def _classify(error: Exception) -> tuple[str, str]:
    """The FetchError kind and message of an exception out of aiohttp or the OS."""
    if isinstance(error, TimeoutError):
        return "timeout", f"timed out ({type(error).__name__})"
    if isinstance(error, aiohttp.ClientConnectorError) and isinstance(
        error.os_error, _ForbiddenAddress
    ):
        return "forbidden_address", str(error.os_error)
    if isinstance(error, aiohttp.InvalidURL | UnicodeError):
        return "unsupported_url", f"invalid URL: {error}"
    if isinstance(error, aiohttp.ClientError | OSError):
        return "network", f"{type(error).__name__}: {error}"
    raise error
