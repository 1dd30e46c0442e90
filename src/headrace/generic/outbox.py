"""The bounded queue between a streaming consumer (WebSocket or SSE) and a slow client.

A consumer never waits for the network: :meth:`Outbox.send` hands the frame to the server at
once when the connection is keeping up (the common case costs no extra task switch), and only
when the server is still busy writing an earlier frame does the frame wait here. The queue holds
at most ``HEADRACE_WEBSOCKET_OUTBOX_SIZE`` frames; past that the connection's slow-client policy
applies:

* ``"close"`` (default): pending frames are discarded and the connection is closed — with
  **1013** (*try again later*) for a WebSocket, by ending the response for server-sent events —
  so the client knows to reconnect and resynchronise;
* ``"drop-oldest"``: the oldest waiting frame is discarded (counted in :attr:`Outbox.dropped`),
  which suits feeds where only the latest state matters.

Either way memory per connection stays bounded however fast the room talks. A client that went
away is not an error here: the server reports it through ``websocket.disconnect``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from ..settings import SlowClientPolicy
from ..types import Message, Send

__all__ = ["SLOW_CLIENT_CLOSE_CODE", "Outbox"]

logger = logging.getLogger("headrace.websocket")

#: RFC 6455 "Try Again Later": sent when a client reads too slowly to keep up.
SLOW_CLIENT_CLOSE_CODE = 1013


class Outbox:
    """Per-connection outgoing messages, in order, bounded, never blocking the consumer."""

    __slots__ = (
        "_limit",
        "_overflow",
        "_policy",
        "_queue",
        "_send",
        "_writer",
        "accepted",
        "closed",
        "dropped",
    )

    def __init__(
        self,
        send: Send,
        *,
        limit: int,
        policy: SlowClientPolicy,
        overflow: Message | None = None,
    ) -> None:
        self._send = send
        self._overflow: Message = overflow or {
            "type": "websocket.close",
            "code": SLOW_CLIENT_CLOSE_CODE,
            "reason": "client too slow",
        }
        self._limit = limit
        self._policy = policy
        self._queue: deque[Message] = deque()
        self._writer: asyncio.Task[None] | None = None
        #: ``websocket.accept`` (or an HTTP denial) has been handed to the server.
        self.accepted = False
        #: ``websocket.close`` has been handed to the server; later frames are discarded.
        self.closed = False
        #: Frames discarded by the ``"drop-oldest"`` policy.
        self.dropped = 0

    @property
    def pending(self) -> int:
        """Frames waiting for the server to take them."""
        return len(self._queue)

    async def send(self, message: Message) -> None:
        """Queue ``message`` for the client; returns without waiting for the network."""
        kind = message["type"]
        if self.closed:
            # After a close the server would raise; a frame racing a close is dropped quietly.
            return
        if kind in ("websocket.accept", "http.response.start"):
            self.accepted = True
        elif kind == "websocket.close" or (
            kind == "http.response.body" and not message.get("more_body", False)
        ):
            self.closed = True
        if self._writer is not None:
            self._enqueue(message)
            return
        task = asyncio.Task(self._write(message), loop=asyncio.get_running_loop(), eager_start=True)
        if task.done():
            task.result()  # an error from the server surfaces here, as a direct await would
            return
        self._watch(task)

    def _watch(self, task: asyncio.Task[None]) -> None:
        self._writer = task
        task.add_done_callback(self._written)

    def _written(self, task: asyncio.Task[None]) -> None:
        self._writer = None
        _report(task)
        loop = task.get_loop()
        while self._queue:
            following = asyncio.Task(
                self._write(self._queue.popleft()), loop=loop, eager_start=True
            )
            if not following.done():
                self._watch(following)
                return
            _report(following)

    async def _write(self, message: Message) -> None:
        try:
            await self._send(message)
        except OSError:
            # The client is gone; the server delivers websocket.disconnect to the consumer.
            self.closed = True
            self._queue.clear()

    def _enqueue(self, message: Message) -> None:
        if len(self._queue) < self._limit or self.closed:
            self._queue.append(message)
            return
        if self._policy == "drop-oldest":
            self._queue.popleft()
            self.dropped += 1
            if self.dropped == 1:
                logger.warning(
                    "WebSocket client is reading too slowly; dropping its oldest frames "
                    "(outbox holds %d)",
                    self._limit,
                )
            self._queue.append(message)
            return
        logger.warning(
            "client is reading too slowly (%d messages waiting); ending its connection",
            self._limit,
        )
        self._queue.clear()
        self.closed = True
        if self._writer is not None:
            # The frame in flight is stuck behind the client; abandon it so the close goes out.
            self._writer.cancel()
        self._queue.append(self._overflow)


def _report(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("sending to a client failed", exc_info=task.exception())
