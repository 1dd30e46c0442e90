"""How many WebSocket connections and server-sent event streams this process holds open.

headrace's server (``runserver``, :class:`~headrace.testing.LiveServer`) wraps the application
with :func:`track_connections`; the dashboard and ``/metrics`` read :func:`connection_counts`.
An application served by uvicorn directly can wrap itself the same way. A WebSocket counts
from its ``websocket.accept`` until the application returns; an SSE stream from a response
start whose content type is ``text/event-stream`` until the application returns.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from .types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ConnectionCounts", "connection_counts", "track_connections"]

_lock = threading.Lock()
_open = {"websockets": 0, "sse": 0}


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionCounts:
    websockets: int  #: accepted WebSocket connections still open
    sse: int  #: server-sent event streams still open


def connection_counts() -> ConnectionCounts:
    """The open connections of this process now."""
    with _lock:
        return ConnectionCounts(**_open)


def _change(kind: str, by: int) -> None:
    with _lock:
        _open[kind] += by


def track_connections(app: ASGIApp) -> ASGIApp:
    """Wrap ``app`` to count its open WebSockets and SSE streams (see the module docstring)."""

    async def tracked(scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("websocket", "http"):
            await app(scope, receive, send)
            return
        counted: str | None = None

        async def counting_send(message: Message) -> None:
            nonlocal counted
            if counted is None:
                if message["type"] == "websocket.accept":
                    counted = "websockets"
                    _change(counted, 1)
                elif message["type"] == "http.response.start" and _is_event_stream(message):
                    counted = "sse"
                    _change(counted, 1)
            await send(message)

        try:
            await app(scope, receive, counting_send)
        finally:
            if counted is not None:
                _change(counted, -1)

    return tracked


def _is_event_stream(message: Message) -> bool:
    for name, value in message.get("headers", ()):
        if bytes(name).lower() == b"content-type":
            return bytes(value).split(b";")[0].strip().lower() == b"text/event-stream"
    return False
