"""The fetcher: one shared HTTP session, conditional GET, concurrency limits and redirects
followed hop by hop under the address guard."""

from __future__ import annotations

import asyncio
import ipaddress
from types import TracebackType
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

import feedsvc
from feedsvc.config import FetchConfig
from feedsvc.errors import FetchError
from feedsvc.fetch.failure import Failure, classify, shorten
from feedsvc.fetch.files import fetch_file
from feedsvc.fetch.guard import AddressPolicy, ForbiddenAddress, GuardedResolver, literal_address
from feedsvc.fetch.outcome import outcome
from feedsvc.model import Fetched, NotModified, SourceForUpdate

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_PERMANENT_REDIRECTS = frozenset({301, 308})


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
            resolver=GuardedResolver(self._policy),
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
                return await fetch_file(source, self._config.file_root, limit)
            if scheme not in ("http", "https"):
                raise Failure("unsupported_url", f"unsupported URL scheme {scheme!r}")
            async with self._slot_for(source.url):
                async with asyncio.timeout(self._config.total_timeout.total_seconds()):
                    return await self._fetch_http(source, limit)
        except Failure as e:
            raise FetchError(source.name, e.kind, shorten(e.message), **e.details) from e
        except Exception as e:
            kind, message = classify(e)
            raise FetchError(source.name, kind, shorten(message)) from e

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
                    return await outcome(response, source, str(url), moved_to, limit)
                url = _redirect_target(response, url, seen)
                permanent = permanent and response.status in _PERMANENT_REDIRECTS
        raise Failure("redirect", f"more than {self._config.max_redirects} redirects")

    def _check_url(self, url: URL) -> None:
        if url.scheme not in ("http", "https"):
            raise Failure("unsupported_url", f"redirect to unsupported URL scheme {url.scheme!r}")
        if not url.host:
            raise Failure("unsupported_url", f"URL without a host: {url}")
        try:
            address = literal_address(url.host)
        except ForbiddenAddress as e:
            raise Failure("forbidden_address", str(e)) from e
        port = url.port or 0
        if address is not None and not self._policy.allows(address, port):
            raise Failure("forbidden_address", f"{url.host} is a forbidden address")

    def _check_peer(self, response: aiohttp.ClientResponse) -> None:
        """Check the address actually connected to (the resolver already filtered it)."""
        transport = response.connection.transport if response.connection else None
        peer = transport.get_extra_info("peername") if transport else None
        if peer is None:
            return
        address = ipaddress.ip_address(peer[0].split("%")[0])
        if not self._policy.allows(address, peer[1]):
            raise Failure("forbidden_address", f"connected to forbidden address {peer[0]}")


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
        raise Failure("unsupported_url", f"malformed URL {text!r}") from e


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
        raise Failure("http", f"HTTP {response.status} without Location", status=response.status)
    target = url.join(_parse_url(location))
    if str(target) in seen:
        raise Failure("redirect", f"redirect loop at {target}")
    seen.add(str(target))
    return target
