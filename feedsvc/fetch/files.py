"""``file:`` sources: read from a directory the config names, never outside it."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from urllib.parse import unquote, urlsplit

from feedsvc.fetch.failure import Failure
from feedsvc.model import Fetched, NotModified, SourceForUpdate


async def fetch_file(
    source: SourceForUpdate, root: str | None, limit: int
) -> Fetched | NotModified:
    """The file ``source.url`` names under ``root``; NotModified when its hash is unchanged.

    Raises:
        Failure: no root configured, a remote host, a path outside the root, not a
            regular file, or more than ``limit`` bytes.
    """
    path = _file_path(source.url, root)
    body = await asyncio.to_thread(_read_file, path, limit)
    body_hash = hashlib.sha256(body).hexdigest()
    if body_hash == source.body_hash:
        return NotModified(source.url)
    return Fetched(source.url, body, {}, None, None, body_hash)


def _file_path(url: str, root: str | None) -> Path:
    """The local path of a ``file:`` URL, which must lie inside ``root``."""
    if root is None:
        raise Failure("unsupported_url", "file: URLs need fetch.file_root in the config")
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise Failure("unsupported_url", f"file: URL with a remote host {parts.netloc!r}")
    root_path = Path(root).resolve()
    # resolve() follows symlinks, so a link pointing outside the root is caught too.
    path = (root_path / unquote(parts.path)).resolve()
    if not path.is_relative_to(root_path):
        raise Failure("forbidden_address", f"{path} is outside the file root {root_path}")
    return path


def _read_file(path: Path, limit: int) -> bytes:
    if not path.is_file():
        raise Failure("network", f"{path} is not a regular file")
    with path.open("rb") as f:
        body = f.read(limit + 1)
    if len(body) > limit:
        raise Failure("too_large", f"{path} exceeds {limit} bytes")
    return body
