"""A small real-WebSocket-client helper for the live-server tests (the ``websockets`` library)."""

from __future__ import annotations

import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect


def ws_connect(url: str, *, origin: str | None = "auto", **kwargs: Any) -> Any:
    """``websockets.connect`` on 127.0.0.1 without proxies; origin defaults to the server's."""
    if origin == "auto":
        origin = "http://" + url.split("://", 1)[1].split("/", 1)[0]
    return connect(url, origin=origin, proxy=None, open_timeout=5, close_timeout=2, **kwargs)  # type: ignore[arg-type]


async def recv_json(ws: ClientConnection, timeout: float = 5) -> Any:
    return json.loads(await ws.recv(decode=True) if timeout else await ws.recv())
