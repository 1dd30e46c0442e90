"""Message payloads of the Redis layer: msgpack, optionally sealed with Fernet keys."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from typing import Any

from headrace.exceptions import ConfigurationError
from headrace.layers.codec import decode
from headrace.layers.redis.wire import Message

__all__ = ["Payloads"]


class Payloads:
    """Seals encoded messages for Redis and opens what readers take out of it.

    With ``symmetric_encryption_keys`` the first key encrypts and all of them decrypt (rotate
    by putting the new key first), each hashed to a Fernet key as channels_redis does, so
    the two can share keys.
    """

    __slots__ = ("_crypter",)

    def __init__(self, keys: Sequence[str | bytes] | None) -> None:
        self._crypter = _crypter(keys)

    def seal(self, data: bytes) -> bytes:
        return data if self._crypter is None else self._crypter.encrypt(data)

    def open(self, payload: bytes) -> Message:
        if self._crypter is not None:
            payload = self._crypter.decrypt(payload)
        return decode(payload)


def _crypter(keys: Sequence[str | bytes] | None) -> Any:
    """A MultiFernet over ``keys``, or None without keys."""
    if keys is None:
        return None
    if isinstance(keys, str | bytes) or not keys:
        raise ConfigurationError(
            "symmetric_encryption_keys must be a non-empty list of keys (the first encrypts)"
        )
    from cryptography.fernet import Fernet, MultiFernet

    fernets = []
    for key in keys:
        raw = key.encode() if isinstance(key, str) else key
        if not isinstance(raw, bytes) or not raw:
            raise ConfigurationError("each symmetric encryption key must be a non-empty str")
        fernets.append(Fernet(base64.urlsafe_b64encode(hashlib.sha256(raw).digest())))
    return MultiFernet(fernets)
