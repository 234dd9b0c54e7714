"""The address guard and URL policy: private addresses, spellings of loopback, redirects, file:."""

from __future__ import annotations

import hashlib
import ipaddress
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from feedsvc.errors import FetchError
from feedsvc.fetch import AddressPolicy, Fetcher
from feedsvc.model import Fetched, NotModified, SourceForUpdate


async def refused(fetcher: Fetcher, url: str) -> FetchError:
    with pytest.raises(FetchError) as info:
        await fetcher.fetch(SourceForUpdate("src", url))
    return info.value


def test_the_network_guard_itself_blocks_off_machine_connects(guard_violations: list[str]) -> None:
    """The audit hook of conftest.py stops a connect to a public address before it happens."""
    with socket.socket() as sock, pytest.raises(RuntimeError, match="off this machine"):
        sock.connect(("192.0.2.1", 80))
    with pytest.raises(RuntimeError, match="off this machine"):
        socket.getaddrinfo("feeds.example.com", 80)
    assert guard_violations == [
        "socket.connect to '192.0.2.1'",
        "socket.getaddrinfo to 'feeds.example.com'",
    ]
    guard_violations.clear()  # expected here; any other test with a violation fails


@pytest.mark.parametrize(
    "host",
    [
        "169.254.169.254",  # cloud metadata (link-local)
        "10.0.0.1",
        "192.168.1.1",
        "172.16.0.1",
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",
        "224.0.0.1",  # multicast
        "[::1]",
        "[fe80::1]",
        "[fc00::1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:169.254.169.254]",
        "[2002:7f00:1::]",  # 6to4 wrapping 127.0.0.1
    ],
)
async def test_private_literal_addresses_are_refused(fetcher: Fetcher, host: str) -> None:
    error = await refused(fetcher, f"http://{host}/feed.xml")
    assert error.kind == "forbidden_address"


@pytest.mark.parametrize("host", ["2130706433", "0x7f000001", "127.1", "0177.0.0.1"])
async def test_legacy_spellings_of_loopback_are_refused_even_on_the_allowed_port(
    fetcher: Fetcher, server: Any, host: str
) -> None:
    error = await refused(fetcher, f"http://{host}:{server.port}/feed")
    assert error.kind == "forbidden_address"
    assert "127.0.0.1" in error.message
    assert server.hits["/feed"] == 0


def test_mapped_ipv6_spelling_of_an_allowed_address_is_the_same_address() -> None:
    policy = AddressPolicy(["127.0.0.1:8765"])
    assert policy.allows(ipaddress.ip_address("::ffff:127.0.0.1"), 8765)
    assert not policy.allows(ipaddress.ip_address("::ffff:127.0.0.1"), 8766)


async def test_a_name_resolving_to_loopback_is_refused_on_another_port(
    fetcher: Fetcher, other_server: Any
) -> None:
    error = await refused(fetcher, f"http://localhost:{other_server.port}/feed.xml")
    assert error.kind == "forbidden_address"
    assert "localhost" in error.message
    assert not other_server.hits


async def test_a_name_resolving_to_the_allowed_address_is_fetched(
    fetcher: Fetcher, server: Any
) -> None:
    result = await fetcher.fetch(SourceForUpdate("src", f"http://localhost:{server.port}/plain"))
    assert isinstance(result, Fetched)


async def test_redirect_to_the_metadata_address_is_refused(fetcher: Fetcher, server: Any) -> None:
    error = await refused(fetcher, server.url("/metadata"))
    assert error.kind == "forbidden_address"
    assert "169.254.169.254" in error.message


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{other}/feed.xml",
        "http://localhost:{other}/feed.xml",
        "http://[::ffff:127.0.0.1]:{other}/feed.xml",
        "http://2130706433:{other}/feed.xml",
    ],
)
async def test_redirect_to_another_loopback_port_is_refused(
    fetcher: Fetcher, server: Any, other_server: Any, target: str
) -> None:
    url = server.url("/redirect?" + urlencode({"to": target.format(other=other_server.port)}))
    error = await refused(fetcher, url)
    assert error.kind == "forbidden_address"
    assert server.hits["/redirect"] == 1
    assert not other_server.hits


async def test_without_an_allow_list_loopback_is_refused(make_config: Any, server: Any) -> None:
    async with Fetcher(make_config()) as fetcher:
        error = await refused(fetcher, server.url("/plain"))
    assert error.kind == "forbidden_address"
    assert not server.hits


async def test_an_allowed_network_without_port_allows_every_port(
    make_config: Any, server: Any
) -> None:
    async with Fetcher(make_config("127.0.0.0/8")) as fetcher:
        assert isinstance(await fetcher.fetch(SourceForUpdate("s", server.url("/plain"))), Fetched)


@pytest.mark.parametrize(
    ("allow", "address", "port", "allowed"),
    [
        ([], "93.184.216.34", 443, True),
        ([], "127.0.0.1", 80, False),
        (["127.0.0.1:8765"], "127.0.0.1", 8765, True),
        (["127.0.0.1:8765"], "127.0.0.1", 8766, False),
        (["127.0.0.1:8765"], "127.0.0.2", 8765, False),
        (["10.0.0.0/8"], "10.1.2.3", 80, True),
        (["10.0.0.0/8"], "192.168.0.1", 80, False),
        (["[::1]:80"], "::1", 80, True),
        (["[::1]:80"], "::1", 81, False),
        (["fd00::/8"], "fd12::1", 443, True),
        ([], "2606:4700::1111", 443, True),
        ([], "ff02::1", 443, False),
    ],
)
def test_address_policy(allow: list[str], address: str, port: int, allowed: bool) -> None:
    assert AddressPolicy(allow).allows(ipaddress.ip_address(address), port) is allowed


def test_a_malformed_allow_entry_is_rejected() -> None:
    with pytest.raises(ValueError):
        AddressPolicy(["localhost:80"])


# ---------------------------------------------------------------- schemes and file:


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1/feed.xml", "gopher://x/", "javascript:alert(1)", "http:///feed.xml"]
)
async def test_unsupported_urls(fetcher: Fetcher, url: str) -> None:
    error = await refused(fetcher, url)
    assert error.kind == "unsupported_url"


async def test_redirect_to_an_unsupported_scheme(fetcher: Fetcher, server: Any) -> None:
    error = await refused(fetcher, server.url("/to-ftp"))
    assert error.kind == "unsupported_url"


def feed_file(root: Path) -> Path:
    path = root / "feeds" / "深圳.xml"
    path.parent.mkdir(parents=True)
    path.write_bytes('<rss version="2.0"><channel><title>深圳</title></channel></rss>'.encode())
    return path


async def test_file_url_inside_the_root(make_config: Any, tmp_path: Path) -> None:
    path = feed_file(tmp_path)
    async with Fetcher(make_config(file_root=str(tmp_path))) as fetcher:
        result = await fetcher.fetch(SourceForUpdate("src", path.as_uri()))
        assert isinstance(result, Fetched) and result.body == path.read_bytes()
        assert result.headers == {} and result.etag is None
        same = hashlib.sha256(path.read_bytes()).hexdigest()
        again = await fetcher.fetch(SourceForUpdate("src", path.as_uri(), body_hash=same))
        assert isinstance(again, NotModified)


async def test_file_url_outside_the_root_is_refused(make_config: Any, tmp_path: Path) -> None:
    path = feed_file(tmp_path)
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "link.xml").symlink_to(path)
    async with Fetcher(make_config(file_root=str(tmp_path / "root"))) as fetcher:
        for url in (
            path.as_uri(),
            (tmp_path / "root" / "link.xml").as_uri(),
            (tmp_path / "root").as_uri() + "/../feeds/%E6%B7%B1%E5%9C%B3.xml",
        ):
            assert (await refused(fetcher, url)).kind == "forbidden_address", url


async def test_file_url_without_a_root_is_unsupported(make_config: Any, tmp_path: Path) -> None:
    async with Fetcher(make_config()) as fetcher:
        error = await refused(fetcher, feed_file(tmp_path).as_uri())
    assert error.kind == "unsupported_url"


async def test_file_url_limits(make_config: Any, tmp_path: Path) -> None:
    (tmp_path / "big.xml").write_bytes(b"x" * 5000)
    async with Fetcher(make_config(file_root=str(tmp_path), max_body_bytes=4096)) as fetcher:
        assert (await refused(fetcher, (tmp_path / "big.xml").as_uri())).kind == "too_large"
        assert (await refused(fetcher, (tmp_path / "missing.xml").as_uri())).kind == "network"
        assert (await refused(fetcher, tmp_path.as_uri())).kind == "network"
