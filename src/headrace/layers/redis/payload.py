"""Message payloads of the Redis layer: msgpack, optionally sealed with Fernet keys."""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from headrace.exceptions import ConfigurationError
from headrace.layers.codec import decode
from headrace.layers.redis.shared import Counts
from headrace.layers.redis.wire import Message

__all__ = ["BadEntry", "BadKind", "Payloads", "Rejects"]


class BadKind(StrEnum):
    """Why an entry taken from Redis is not a message (each is logged once, then counted)."""

    GARBAGE = "garbage"
    TRUNCATED = "truncated"
    UNDECRYPTABLE = "encrypted with a key this layer does not have"
    NOT_A_DICT = "not a message dict"


class BadEntry(Exception):
    """An entry that cannot be decoded into a message dict; the reader skips it."""

    def __init__(self, kind: BadKind, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail

    @classmethod
    def from_parse(cls, error: ValueError) -> BadEntry:
        """From a ``ValueError`` of :mod:`.layout`'s parsers."""
        short = "bytes or more" in str(error) or "cut short" in str(error)
        return cls(BadKind.TRUNCATED if short else BadKind.GARBAGE, str(error))


class Rejects:
    """Skips entries that are not messages: counts each by kind, logs the first of each.

    A reader that stopped at such an entry would leave every later message unread, so it is
    counted (``statistics().undecodable``) and passed over.
    """

    __slots__ = ("_counts", "_logger")

    def __init__(self, counts: Counts, logger: logging.Logger) -> None:
        self._counts = counts
        self._logger = logger

    def skip(self, bad: BadEntry, where: str) -> None:
        """Count ``bad``, found in ``where`` (a channel, group or inbox), and go on."""
        counts = self._counts.undecodable
        seen = counts.get(bad.kind, 0)
        counts[bad.kind] = seen + 1
        self._logger.log(
            logging.DEBUG if seen else logging.WARNING,
            "Redis layer skipped an entry in %r that is not a message (%s); further entries "
            "of this kind are counted in statistics().undecodable",
            where,
            bad,
        )


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
        """The message in ``payload``; :class:`BadEntry` when there is none (garbage, cut
        short, sealed with a key this layer lacks, or a value that is not a dict)."""
        if self._crypter is not None:
            try:
                payload = self._crypter.decrypt(payload)
            except Exception as error:  # cryptography's InvalidToken
                raise BadEntry(BadKind.UNDECRYPTABLE, type(error).__name__) from None
        try:
            message = decode(payload)
        except Exception as error:  # msgpack's errors are ValueErrors, some not its own
            text = str(error)
            incomplete = "incomplete" in text or "exceeds max_" in text
            raise BadEntry(BadKind.TRUNCATED if incomplete else BadKind.GARBAGE, text) from None
        if type(message) is not dict:
            raise BadEntry(BadKind.NOT_A_DICT, f"a {type(message).__name__}")
        return message


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
