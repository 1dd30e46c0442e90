"""The broadcast fast path: encode a group message's payload once per process, not per member.

When ``group_send`` reaches N consumers in one process, the in-memory and Redis layers give each
member a shallow copy of *one* decoded message, so a nested value (``event["payload"]``) is the
very same object for all N. Two paths use that:

1. **Pre-encoded frames.** A group message ``{"type": "websocket.send", "text": ...}`` (or
   ``"bytes"``) is forwarded by every WebSocket consumer as is: the sender encodes once and no
   member runs a handler. The SSE consumer does the same for ``{"type": "sse.event", ...}``.
2. **Shared JSON payloads.** ``AsyncJsonWebsocketConsumer.send_json(event["payload"])`` is
   encoded by the first member and reused by the others: :func:`encode_shared` keeps the last
   ``(object, consumer class) -> text`` pair, keyed by the object's *identity* and holding a
   strong reference, and forgets it at the end of the current event-loop iteration. All members
   of one ``group_send`` are woken in the same iteration, so they hit; nothing outlives the
   iteration, so nothing leaks and a later mutation of the object is never served stale.

The one assumption: a handler does not mutate a group message in place (it is shared with the
other members already, so doing so is a bug with or without this cache).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["encode_shared"]

# (object, owner, text) — replaced as a whole, so readers on other threads see a consistent
# triple under the GIL.
_last: tuple[object, object, str] | None = None


def _forget() -> None:
    global _last
    _last = None


async def encode_shared(
    content: object, owner: object, encode: Callable[[Any], Awaitable[str]]
) -> str:
    """``await encode(content)``, shared by every caller in this loop iteration."""
    global _last
    cached = _last
    if cached is not None and cached[0] is content and cached[1] is owner:
        return cached[2]
    text = await encode(content)
    if _last is None:
        asyncio.get_running_loop().call_soon(_forget)
    _last = (content, owner, text)
    return text
