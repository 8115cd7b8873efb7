"""Client keys for ``auth``'s keys mode: made once, stored only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_PREFIX = "gw-"


def new_key() -> tuple[str, str]:
    """A new random client key and the hex SHA-256 digest to store in the config."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, key_digest(key)


def key_digest(key: str) -> str:
    """The hex SHA-256 digest of a client key.

    A key from a request header may hold bytes that are not UTF-8 (aiohttp keeps
    them as surrogates): they are hashed as they came, and match no stored key.
    """
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def digests_match(presented_digest: str, stored_digest: str) -> bool:
    """Compare two digests in constant time."""
    return hmac.compare_digest(presented_digest.encode(), stored_digest.encode())
