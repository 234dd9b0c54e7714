"""Signed unsubscribe tokens: who leaves which subscriptions; unforgeable without the secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class UnsubscribeRequest:
    """What a valid token asks for."""

    email: str
    subscriptions: tuple[str, ...]


class InvalidToken(ValueError):
    """The token is malformed, or its signature does not match (forged or altered)."""


def sign_unsubscribe(secret: str, email: str, subscriptions: Sequence[str]) -> str:
    """A URL-safe token naming the subscriber and the subscriptions to leave."""
    payload = json.dumps([email, sorted(subscriptions)], ensure_ascii=False, separators=(",", ":"))
    body = _b64encode(payload.encode("utf-8"))
    return f"{body}.{_b64encode(_mac(secret, body))}"


def verify_unsubscribe(secret: str, token: str) -> UnsubscribeRequest:
    """Check a token's signature and decode it.

    Raises:
        InvalidToken: for any token not signed with ``secret``.
    """
    body, sep, signature = token.strip().partition(".")
    if not sep or not body or not signature:
        raise InvalidToken("malformed token")
    try:
        given = _b64decode(signature)
    except ValueError as e:
        raise InvalidToken("malformed signature") from e
    if not hmac.compare_digest(given, _mac(secret, body)):
        raise InvalidToken("bad signature")
    try:
        email, subscriptions = json.loads(_b64decode(body).decode("utf-8"))
    except (ValueError, TypeError) as e:
        raise InvalidToken("malformed payload") from e
    if not isinstance(email, str) or not all(isinstance(s, str) for s in subscriptions):
        raise InvalidToken("malformed payload")
    return UnsubscribeRequest(email, tuple(subscriptions))


def _mac(secret: str, body: str) -> bytes:
    key = hashlib.sha256(b"feedsvc-unsubscribe:" + secret.encode("utf-8")).digest()
    return hmac.new(key, body.encode("ascii"), hashlib.sha256).digest()


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as e:
        raise ValueError("not base64url") from e
