"""The async HTTP consumer: collect the request body, then ``handle`` it.

Channels-compatible (``send_headers``, ``send_body``, ``send_response``, ``handle``,
``disconnect``). A ``handle`` that raises before the response started answers
``500 Internal Server Error`` and is logged once; after the response started, the body is ended
so the client is not left waiting.

The body is buffered in memory, so it is bounded: by Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE``
(2.5 MB by default; ``None`` there means no limit), or by the consumer's own
:attr:`AsyncHttpConsumer.max_body_size`. A request that declares a larger ``Content-Length``,
or whose chunks add up past the limit, is answered ``413 Content Too Large`` at once — the
rest of the body is never read into memory and ``handle`` never runs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Literal, NoReturn

from django.conf import settings

from ..consumer import AsyncConsumer
from ..db import aclose_old_connections
from ..exceptions import StopConsumer
from ..types import Message
from ..utils import quoted

__all__ = ["AsyncHttpConsumer"]

logger = logging.getLogger("headrace.http")

HeaderInput = Iterable[tuple[bytes, bytes]] | Mapping[bytes, bytes] | None


class AsyncHttpConsumer(AsyncConsumer):
    """Buffers the request body and calls :meth:`handle` with it once complete."""

    #: The largest request body buffered for :meth:`handle`, in bytes. ``"settings"`` (the
    #: default) follows Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE``; an int sets this consumer's
    #: own limit; ``None`` turns the limit off — only for a consumer that overrides
    #: ``http_request`` to stream the body somewhere other than memory.
    max_body_size: ClassVar[int | Literal["settings"] | None] = "settings"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.body: list[bytes] = []
        self._body_size = 0
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
        """Collect body chunks; run :meth:`handle` once the body is complete.

        A body over :attr:`max_body_size` is answered 413 as soon as that is known.
        """
        chunk = message.get("body", b"")
        limit = self.body_limit()
        if limit is not None:
            if not self._body_size and self._declared_length() > limit:
                await self._refuse_body(limit)
            self._body_size += len(chunk)
            if self._body_size > limit:
                await self._refuse_body(limit)
        self.body.append(chunk)
        if message.get("more_body"):
            return
        try:
            await self.handle(b"".join(self.body))
        finally:
            await self.disconnect()
        raise StopConsumer()

    def body_limit(self) -> int | None:
        """The body limit in force for this consumer, in bytes (``None``: unlimited)."""
        if self.max_body_size == "settings":
            limit: int | None = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            return limit
        return self.max_body_size

    def _declared_length(self) -> int:
        for name, value in self.scope.get("headers", ()):
            if name == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return 0  # the server refuses a bad Content-Length before we see it
        return 0

    async def _refuse_body(self, limit: int) -> NoReturn:
        """Answer 413 and stop reading; the server discards whatever of the body still comes.

        The connection is not closed by us: a close with unread input makes the kernel reset
        it, and the client would lose the 413 it has not read yet.
        """
        logger.warning(
            "refused HTTP %s %s: request body over the %d-byte limit",
            quoted(self.scope.get("method", "?")),
            quoted(self.scope.get("path", "?")),
            limit,
        )
        self.body = []
        await self.send_response(
            413,
            f"Request body too large: the limit is {limit} bytes.\n".encode(),
            headers=[(b"content-type", b"text/plain; charset=utf-8")],
        )
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
