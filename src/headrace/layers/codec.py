"""The wire format of channel messages: msgpack, never pickle.

``bytes`` stay bytes, ``str`` stays str, tuples arrive as lists. Every backend encodes with
these two functions, so a message looks the same whichever layer carried it.
"""

from __future__ import annotations

from typing import Any

import msgpack

__all__ = ["decode", "encode"]

_packer_options = {"use_bin_type": True}


def encode(message: dict[str, Any]) -> bytes:
    """Encode a checked message (see :func:`headrace.layers.rules.check_message`)."""
    return msgpack.packb(message, **_packer_options)  # type: ignore[no-any-return]


def decode(data: bytes) -> dict[str, Any]:
    """Decode bytes made by :func:`encode`."""
    return msgpack.unpackb(data, raw=False, strict_map_key=True)  # type: ignore[no-any-return]
