"""The wire format of channel messages: msgpack, never pickle.

``bytes`` stay bytes, ``str`` stays str, tuples arrive as lists. Every backend encodes with
these two functions, so a message looks the same whichever layer carried it.
"""

from __future__ import annotations

from typing import Any

import msgpack

from headrace.exceptions import InvalidMessage

__all__ = ["decode", "encode"]

# One packer for the process: reusing it is three times cheaper than msgpack.packb(). It is
# safe across threads because packing checked values runs no Python code (no ``default``
# hook), so the GIL is held from start to end of each call.
_packer = msgpack.Packer(use_bin_type=True)
_unpackb = msgpack.unpackb  # raw=False and strict_map_key=True are msgpack's defaults


def encode(message: dict[str, Any]) -> bytes:
    """Encode a checked message (see :func:`headrace.layers.rules.check_message`).

    An unchecked value msgpack refuses (too deep, an unknown type) is an
    :class:`~headrace.exceptions.InvalidMessage`, never msgpack's own error.
    """
    try:
        return _packer.pack(message)  # type: ignore[no-any-return]
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidMessage(f"message cannot be encoded: {exc}") from exc


def decode(data: bytes) -> dict[str, Any]:
    """Decode bytes made by :func:`encode`."""
    return _unpackb(data)  # type: ignore[no-any-return]
