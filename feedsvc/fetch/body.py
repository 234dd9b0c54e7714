"""Reading a response body under a size cap, inflating gzip and deflate ourselves so that a
compression bomb stops at the cap instead of filling memory."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from typing import Any


class TooLarge(Exception):
    """The body, on the wire or decoded, passed the cap."""


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
            raise TooLarge(f"decompressed body exceeds {self._limit} bytes")

    def _wbits(self, data: bytes) -> int:
        if self._encoding in ("gzip", "x-gzip"):
            return 16 + zlib.MAX_WBITS
        # "deflate" should be zlib-wrapped (RFC 9110 §8.4.1.2); some servers send raw.
        zlib_header = len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
        return zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS


async def read_capped(chunks: AsyncIterator[bytes], content_encoding: str, limit: int) -> bytes:
    """The (decoded) body, or TooLarge once the wire or decoded size passes ``limit``.

    Raises:
        TooLarge: the body is over ``limit`` bytes, received or inflated.
        zlib.error: the compressed body is corrupt or truncated.
    """
    inflater = _Inflater(content_encoding, limit) if content_encoding != "identity" else None
    received = 0
    parts = []
    async for chunk in chunks:
        received += len(chunk)
        if received > limit:
            raise TooLarge(f"body exceeds {limit} bytes")
        parts.append(inflater.feed(chunk) if inflater else chunk)
    if inflater:
        inflater.finish()
    return b"".join(parts)
