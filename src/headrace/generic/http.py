"""The async HTTP consumer: collect the request body, then ``handle`` it.

Channels-compatible (``send_headers``, ``send_body``, ``send_response``, ``handle``,
``disconnect``). A ``handle`` that raises before the response started answers
``500 Internal Server Error`` and is logged once; after the response started, the body is ended
so the client is not left waiting.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from ..consumer import AsyncConsumer
from ..db import aclose_old_connections
from ..exceptions import StopConsumer
from ..types import Message

__all__ = ["AsyncHttpConsumer"]

logger = logging.getLogger("headrace.http")

HeaderInput = Iterable[tuple[bytes, bytes]] | Mapping[bytes, bytes] | None


class AsyncHttpConsumer(AsyncConsumer):
    """Buffers the request body and calls :meth:`handle` with it once complete."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.body: list[bytes] = []
        self._response_started = False
        self._response_finished = False

    async def send_headers(self, *, status: int = 200, headers: HeaderInput = None) -> None:
        """Start the response; ``headers`` is a list of ``(name, value)`` bytes pairs or a dict."""
        if headers is None:
            pairs: list[tuple[bytes, bytes]] = []
        elif isinstance(headers, Mapping):
            pairs = list(headers.items())
        else:
            pairs = list(headers)
        self._response_started = True
        await self.send({"type": "http.response.start", "status": status, "headers": pairs})

    async def send_body(self, body: bytes, *, more_body: bool = False) -> None:
        """Send (part of) the body; ``more_body=True`` keeps the response open for more."""
        if not isinstance(body, bytes):
            raise TypeError(f"send_body() needs bytes, got {type(body).__name__}")
        if not more_body:
            self._response_finished = True
        await self.send({"type": "http.response.body", "body": body, "more_body": more_body})

    async def send_response(self, status: int, body: bytes, **kwargs: Any) -> None:
        """Send a complete response in one call."""
        await self.send_headers(status=status, **kwargs)
        await self.send_body(body)

    async def handle(self, body: bytes) -> None:
        """Answer the request; subclasses must override this."""
        await self.send_response(
            405,
            b"This endpoint has no handle() method.",
            headers=[(b"content-type", b"text/plain; charset=utf-8")],
        )

    async def disconnect(self) -> None:
        """Called once when the request is over (answered or abandoned); do not send here."""

    async def http_request(self, message: Message) -> None:
        """Collect body chunks; run :meth:`handle` once the body is complete."""
        self.body.append(message.get("body", b""))
        if message.get("more_body"):
            return
        try:
            await self.handle(b"".join(self.body))
        finally:
            await self.disconnect()
        raise StopConsumer()

    async def http_disconnect(self, message: Message) -> None:
        """The client went away: clean up and stop."""
        await self.disconnect()
        await aclose_old_connections()
        raise StopConsumer()

    async def _handler_failed(self, exc: Exception, message: Message) -> bool:
        self._log_failure(exc, message)
        if not self._response_started:
            await self.base_send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8")],
                }
            )
            await self.base_send({"type": "http.response.body", "body": b"Internal Server Error"})
        elif not self._response_finished:
            await self.base_send({"type": "http.response.body", "body": b""})
        return False
