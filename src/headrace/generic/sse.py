"""Server-sent events: a consumer that streams ``text/event-stream`` to ``EventSource``.

Channels has no such consumer; browsers have supported ``EventSource`` for years, and for
one-way feeds (notifications, progress bars, dashboards) it is simpler than a WebSocket: plain
HTTP, automatic reconnection, and resumption with ``Last-Event-ID``.

::

    class Notifications(AsyncSseConsumer):
        groups = ["notifications"]          # joined on connect, left on disconnect

        async def connect(self):
            await self.accept()
            if self.last_event_id:          # the browser reconnected: replay what it missed
                for item in await missed_since(self.last_event_id):
                    await self.send_event(item.text, id=item.pk, event="notice")

        async def notice_created(self, event):   # group_send(..., {"type": "notice.created"})
            await self.send_event(event["text"], id=event["id"], event="notice")

A group message of type ``"sse.event"`` (keys ``data``, and optionally ``event``, ``id``,
``retry``) is forwarded without a handler. While the stream is idle a ``: keep-alive`` comment
goes out every ``keepalive_interval`` seconds so proxies do not time it out. The outgoing side
is bounded like a WebSocket's (``HEADRACE_WEBSOCKET_OUTBOX_SIZE``, slow-client policy): a client
that stops reading has its stream ended, and ``EventSource`` reconnects with its last id.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..consumer import AsyncConsumer
from ..db import aclose_old_connections
from ..exceptions import StopConsumer
from ..settings import limits
from ..types import Message, Send
from .outbox import Outbox

__all__ = ["AsyncSseConsumer", "format_event"]

logger = logging.getLogger("headrace.sse")

_END: Message = {"type": "http.response.body", "body": b"", "more_body": False}


def format_event(
    data: str | None = None,
    *,
    event: str | None = None,
    id: str | int | None = None,
    retry: int | None = None,
    comment: str | None = None,
) -> bytes:
    """Encode one event in the ``text/event-stream`` format (a multi-line ``data`` is split)."""
    lines: list[str] = []
    if comment is not None:
        lines.extend(f": {part}" for part in comment.splitlines() or [""])
    for name, value in (("event", event), ("id", id)):
        if value is None:
            continue
        text = str(value)
        if "\n" in text or "\r" in text or (name == "id" and "\0" in text):
            raise ValueError(f"an SSE {name} cannot contain a line break or NUL: {text!r}")
        lines.append(f"{name}: {text}")
    if retry is not None:
        lines.append(f"retry: {int(retry)}")
    if data is not None:
        lines.extend(f"data: {part}" for part in data.replace("\r\n", "\n").split("\n"))
    return ("\n".join(lines) + "\n\n").encode()


class AsyncSseConsumer(AsyncConsumer):
    """Streams server-sent events for one ``GET`` request until the client goes away."""

    #: Groups joined when the stream opens and left when it ends.
    groups: list[str] | None = None
    #: Seconds of silence before a ``: keep-alive`` comment; ``None`` sends none.
    keepalive_interval: float | None = 15.0
    #: Reconnection delay (ms) suggested to the browser in the first message; ``None`` omits it.
    retry: int | None = None

    _outbox: Outbox

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.groups = list(self.groups or [])
        self._keepalive: asyncio.Task[None] | None = None
        self._sent_since_tick = False

    # -- what subclasses use ---------------------------------------------------------------

    @property
    def last_event_id(self) -> str | None:
        """The ``Last-Event-ID`` header a reconnecting browser sends, if any."""
        for name, value in self.scope.get("headers", ()):
            if name == b"last-event-id":
                text: str = value.decode("utf-8", "replace")
                return text
        return None

    async def connect(self) -> None:
        """Called for a new stream; accepts it unless overridden (call :meth:`deny` to refuse)."""
        await self.accept()

    async def accept(self, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        """Start the event stream (status 200, ``text/event-stream``)."""
        start_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
            *(headers or []),
        ]
        await self.base_send(
            {"type": "http.response.start", "status": 200, "headers": start_headers}
        )
        # Servers send the headers with the first body chunk: send one now so the browser's
        # EventSource opens at once.
        first = format_event(retry=self.retry) if self.retry is not None else b": open\n\n"
        await self._send_chunk(first)
        if self.keepalive_interval:
            self._keepalive = asyncio.create_task(self._keep_alive(self.keepalive_interval))

    async def deny(self, status: int = 403, body: bytes = b"") -> None:
        """Refuse the stream with an ordinary HTTP response."""
        await self.base_send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8")],
            }
        )
        await self.base_send({"type": "http.response.body", "body": body})

    async def send_event(
        self,
        data: str,
        *,
        event: str | None = None,
        id: str | int | None = None,
        retry: int | None = None,
    ) -> None:
        """Send one event; ``id`` is what the browser sends back as ``Last-Event-ID``."""
        await self._send_chunk(format_event(data, event=event, id=id, retry=retry))

    async def send_comment(self, text: str) -> None:
        """Send a comment line (ignored by ``EventSource``; keeps intermediaries awake)."""
        await self._send_chunk(format_event(comment=text))

    async def close(self) -> None:
        """End the stream (the browser will reconnect unless the page closes it)."""
        await self.base_send(_END)

    async def subscribe(self, group: str) -> None:
        """Join ``group`` for the rest of this stream."""
        await self._membership.join(group)
        if self.groups is not None and group not in self.groups:
            self.groups.append(group)

    async def unsubscribe(self, group: str) -> None:
        """Leave ``group``."""
        self._membership.require((group,))
        await self._membership.leave(group)
        if self.groups is not None and group in self.groups:
            self.groups.remove(group)

    async def disconnect(self) -> None:
        """Called once when the stream has ended."""

    # -- ASGI events -----------------------------------------------------------------------

    async def http_request(self, message: Message) -> None:
        if message.get("more_body"):
            return  # an event stream request has no body worth reading
        await self._membership.join_all(self.groups or ())
        await self.connect()
        if not self._outbox.accepted:
            await self.deny(403, b"The event stream was refused.")
        if self._outbox.closed:
            await self._finish()

    async def http_disconnect(self, message: Message) -> None:
        await self._finish()

    async def sse_event(self, message: Message) -> None:
        """Forward a ready-made ``sse.event`` group message."""
        await self.send_event(
            message.get("data", ""),
            event=message.get("event"),
            id=message.get("id"),
            retry=message.get("retry"),
        )

    # -- internals -------------------------------------------------------------------------

    def _wrap_send(self, send: Send) -> Send:
        lim = limits()
        # No send timeout: HTTP servers offer no way to abort a stream, so a stalled one is
        # bounded by the outbox size and left to the server's own timeouts.
        self._outbox = Outbox(
            send,
            limit=lim.websocket_outbox_size,
            policy=lim.websocket_slow_client,
            overflow=_END,
            lifecycle=self._lifecycle,
        )
        return self._outbox.send

    async def _send_chunk(self, chunk: bytes) -> None:
        self._sent_since_tick = True
        await self.base_send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def _keep_alive(self, interval: float) -> None:
        while not self._outbox.closed:
            self._sent_since_tick = False
            await asyncio.sleep(interval)
            if not self._sent_since_tick and not self._outbox.closed:
                await self._send_chunk(b": keep-alive\n\n")

    async def _finish(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        await self._membership.leave_all(self.groups or ())
        if self._outbox.accepted and not self._outbox.closed:
            await self.base_send(_END)
        await self.disconnect()
        await aclose_old_connections()
        raise StopConsumer()

    async def _handler_failed(self, exc: Exception, message: Message) -> bool:
        self._log_failure(exc, message)
        if not self._outbox.accepted:
            await self.deny(500, b"Internal Server Error")
        try:
            await self._finish()
        except StopConsumer:
            pass
        return False
