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

Either way memory per connection stays bounded however fast the room talks. A client that
reads *nothing* is cut off under both policies: when the server has not taken a frame for
``HEADRACE_WEBSOCKET_SEND_TIMEOUT`` seconds the connection is closed the same way (1013), and
when even that close cannot be written within the same time, the connection is aborted (its
TCP connection reset) if the server offers the ``headrace.websocket.abort`` extension, as
headrace's server does.

Every message goes through the connection's :class:`~headrace.lifecycle.Lifecycle`: a frame
after the consumer's own close raises :class:`~headrace.exceptions.ConnectionStateError`; a
frame after the client left or was cut off is discarded quietly. A client that went away is
not an error here: the server reports it through its disconnect event.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from ..lifecycle import ConnectionState, Event, Lifecycle, event_for
from ..settings import SlowClientPolicy
from ..types import Message, Send

__all__ = ["ABORT_EXTENSION", "SLOW_CLIENT_CLOSE_CODE", "Outbox"]

logger = logging.getLogger("headrace.websocket")

#: RFC 6455 "Try Again Later": sent when a client reads too slowly to keep up.
SLOW_CLIENT_CLOSE_CODE = 1013

#: The ASGI extension (and message type) with which a server lets the application abort a
#: connection at once, without writing anything more to it. headrace's server offers it.
ABORT_EXTENSION = "headrace.websocket.abort"


class Outbox:
    """Per-connection outgoing messages, in order, bounded, never blocking the consumer."""

    __slots__ = (
        "_abort",
        "_in_flight",
        "_limit",
        "_overflow",
        "_policy",
        "_queue",
        "_send",
        "_send_timeout",
        "_stall_timer",
        "_writer",
        "dropped",
        "lifecycle",
    )

    def __init__(
        self,
        send: Send,
        *,
        limit: int,
        policy: SlowClientPolicy,
        overflow: Message | None = None,
        lifecycle: Lifecycle | None = None,
        send_timeout: float | None = None,
        abort: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``lifecycle`` is the connection's (an outbox created without one starts ``OPEN``);
        ``send_timeout`` bounds how long a write may stay stuck; ``abort`` drops the transport.
        """
        self._send = send
        self._overflow: Message = overflow or {
            "type": "websocket.close",
            "code": SLOW_CLIENT_CLOSE_CODE,
            "reason": "client too slow",
        }
        self._limit = limit
        self._policy = policy
        self._send_timeout = send_timeout
        self._abort = abort
        self._queue: deque[Message] = deque()
        self._writer: asyncio.Task[None] | None = None
        self._in_flight: Message | None = None
        self._stall_timer: asyncio.TimerHandle | None = None
        self.lifecycle = lifecycle if lifecycle is not None else Lifecycle(ConnectionState.OPEN)
        #: Frames discarded by the ``"drop-oldest"`` policy.
        self.dropped = 0

    @property
    def pending(self) -> int:
        """Frames waiting for the server to take them."""
        return len(self._queue)

    @property
    def accepted(self) -> bool:
        """The connection was accepted (or its response started) at some point."""
        return self.lifecycle.opened

    @property
    def closed(self) -> bool:
        """Closed by the consumer, cut off, or finished: nothing more goes out."""
        return not self.lifecycle.live

    async def send(self, message: Message) -> None:
        """Queue ``message`` for the client; returns without waiting for the network.

        Raises :class:`~headrace.exceptions.ConnectionStateError` for a message the
        connection's state forbids (a frame after the consumer's own close, a second accept).
        """
        event = event_for(message)
        if event is not None and not self.lifecycle.apply(event):
            return  # the client left or was cut off: discarded quietly
        self._hand_over(message)

    async def cut(self, message: Message | None) -> None:
        """End the connection for headrace's own reasons (a bad frame, a failure, a timeout).

        ``message`` (a close or a refusal) goes out if the connection is still live; either
        way the connection is ``LOST`` afterwards and later frames are discarded quietly.
        """
        live = self.lifecycle.live
        self.lifecycle.apply(Event.CUT)
        if live and message is not None:
            self._hand_over(message)

    def _hand_over(self, message: Message) -> None:
        if self._writer is not None:
            self._enqueue(message)
            return
        task = asyncio.Task(self._write(message), loop=asyncio.get_running_loop(), eager_start=True)
        if task.done():
            task.result()  # an error from the server surfaces here, as a direct await would
            return
        self._watch(task, message)

    def _watch(self, task: asyncio.Task[None], message: Message) -> None:
        self._writer = task
        self._in_flight = message
        task.add_done_callback(self._written)
        if self._send_timeout is not None:
            self._stall_timer = task.get_loop().call_later(self._send_timeout, self._stalled)

    def _written(self, task: asyncio.Task[None]) -> None:
        self._writer = None
        self._in_flight = None
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        _report(task)
        loop = task.get_loop()
        while self._queue:
            message = self._queue.popleft()
            following = asyncio.Task(self._write(message), loop=loop, eager_start=True)
            if not following.done():
                self._watch(following, message)
                return
            _report(following)

    async def _write(self, message: Message) -> None:
        try:
            await self._send(message)
        except OSError:
            # The client is gone; the server delivers its disconnect event to the consumer.
            self.lifecycle.apply(Event.CUT)
            self._queue.clear()

    def _enqueue(self, message: Message) -> None:
        if len(self._queue) < self._limit or not self.lifecycle.live:
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
        self._cut_off()

    def _cut_off(self) -> None:
        """Discard the backlog and the frame stuck in flight, and queue the overflow close."""
        self.lifecycle.apply(Event.CUT)
        self._queue.clear()
        self._queue.append(self._overflow)
        if self._writer is not None:
            # The frame in flight is stuck behind the client; abandon it so the close goes out.
            self._writer.cancel()

    def _stalled(self) -> None:
        """A write has been stuck for ``send_timeout`` seconds: the client is not reading."""
        self._stall_timer = None
        stuck = self._in_flight
        if stuck is not None and event_for(stuck) is not Event.CLOSE:
            logger.warning(
                "client has read nothing for %.1f s; closing its connection with %d",
                self._send_timeout,
                SLOW_CLIENT_CLOSE_CODE,
            )
            self._cut_off()
            return
        # Even the close could not be written: drop the connection.
        self.lifecycle.apply(Event.CUT)
        self._queue.clear()
        if self._writer is not None:
            self._writer.cancel()
        if self._abort is None:
            logger.warning(
                "could not write the close to a client that reads nothing, and the server "
                "cannot abort connections; leaving it to the server's own timeouts"
            )
            return
        logger.warning("could not write the close within %.1f s; aborting", self._send_timeout)
        aborting = asyncio.ensure_future(self._abort())
        aborting.add_done_callback(_report)


def _report(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("sending to a client failed", exc_info=task.exception())
