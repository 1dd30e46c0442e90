"""uvicorn's WebSocket protocol, plus a way for the application to abort a connection.

A client that stops reading fills the server's send buffer; from then on uvicorn's ``send``
waits for the buffer to drain, which never happens, and even a close cannot be written. ASGI
has no message to give up on such a connection, so headrace's server offers one as an
extension: the scope's ``extensions`` holds ``"headrace.websocket.abort"``, and sending
``{"type": "headrace.websocket.abort"}`` aborts the transport at once (the TCP connection is
reset, nothing more is written). The server then reports the disconnect as usual. The
outbox uses it when a close could not be written within ``HEADRACE_WEBSOCKET_SEND_TIMEOUT``
(see :mod:`headrace.generic.outbox`).

:func:`websocket_protocol` returns the class for ``uvicorn.Config(ws=...)``, or ``None`` when
the installed uvicorn lacks its ``websockets-sansio`` protocol (then nothing changes).
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from .generic.outbox import ABORT_EXTENSION

__all__ = ["websocket_protocol"]


@functools.cache
def websocket_protocol() -> type[asyncio.Protocol] | None:
    """uvicorn's sans-I/O WebSocket protocol with the abort extension, if available."""
    try:
        from uvicorn.protocols.websockets.websockets_sansio_impl import (
            WebSocketsSansIOProtocol,
        )
    except ImportError:  # pragma: no cover - an older uvicorn, or no websockets package
        return None

    class AbortableWebSocketProtocol(WebSocketsSansIOProtocol):
        """Adds ``headrace.websocket.abort`` to the scope and obeys it."""

        def handle_connect(self, event: Any) -> None:
            super().handle_connect(event)
            scope = getattr(self, "scope", None)
            if scope is not None:  # the application has not started yet: it sees the key
                scope["extensions"][ABORT_EXTENSION] = {}

        async def send(self, message: Any) -> None:
            if message["type"] == ABORT_EXTENSION:
                # No waiting for the buffer to drain (that is the point): drop the transport.
                self.transport.abort()
                return
            await super().send(message)

    return AbortableWebSocketProtocol
