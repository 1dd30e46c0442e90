"""WebSocket consumers: the async core and its sync twin, plain and JSON.

The WebSocket consumer is written once, as async code, in :class:`WebsocketProtocol` (and the
JSON layer once, in ``_JsonProtocol``). The async classes are those; the sync twins only say
that their hooks (``connect``, ``receive``, ``receive_json``, ``disconnect``) are plain
functions, run on the handler pool, and derive their blocking API (``accept``, ``send``,
``close``, ``send_json``) from the async originals, one line each (see
:mod:`headrace.consumer`). Close codes headrace chooses (all from RFC 6455):

====  =========================================================================
1003  a binary frame reached a JSON consumer (it only understands text)
1007  a text frame on a JSON consumer is not valid JSON (or is nested too deeply)
1009  an incoming message is larger than ``HEADRACE_WEBSOCKET_MAX_MESSAGE_SIZE``
1011  a handler raised, or a message arrived that has no handler
1013  the client reads too slowly (see :mod:`headrace.generic.outbox`)
====  =========================================================================

Each is logged once and affects only that connection. A failure before ``accept`` (including
a ``connect`` that does not accept or deny within ``HEADRACE_WEBSOCKET_HANDSHAKE_TIMEOUT``)
refuses the handshake instead (HTTP 403); ``disconnect`` is then not called, since the
connection never opened (as in Channels, where such a consumer simply ends).
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Iterable
from typing import Any

from ..consumer import AsyncConsumer, SyncConsumer, _sync_twin
from ..db import aclose_old_connections
from ..exceptions import AcceptConnection, DenyConnection, StopConsumer
from ..lifecycle import ConnectionState
from ..settings import limits
from ..types import Message, Send
from ..utils import quoted
from .broadcast import encode_shared
from .outbox import ABORT_EXTENSION, Outbox

__all__ = [
    "AsyncJsonWebsocketConsumer",
    "AsyncWebsocketConsumer",
    "BadFrame",
    "JsonWebsocketConsumer",
    "WebsocketConsumer",
    "WebsocketProtocol",
]

logger = logging.getLogger("headrace.websocket")

INTERNAL_ERROR = 1011
MESSAGE_TOO_BIG = 1009
INVALID_PAYLOAD = 1007
UNSUPPORTED_DATA = 1003


class BadFrame(Exception):
    """An incoming frame this consumer refuses; closes the connection with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class WebsocketProtocol(AsyncConsumer):
    """The WebSocket consumer, written once; use :class:`AsyncWebsocketConsumer` or
    :class:`WebsocketConsumer`.

    Hooks are reached through ``_run_hook`` and the public API through ``_run_hook`` too, so
    a sync subclass's plain-function hooks and blocking API plug in without a second copy.
    """

    #: Groups joined on connect and left on disconnect.
    groups: list[str] | None = None
    _outbox: Outbox

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.groups = list(self.groups or [])

    # -- hooks (override these) ----------------------------------------------------------------

    async def connect(self) -> None:
        """Called on a new connection; accepts it unless overridden."""
        await self._run_hook(self.accept)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Called with each frame's payload."""

    async def disconnect(self, code: int) -> None:
        """Called when the connection has closed (not when ``connect`` itself failed)."""

    # -- the API handlers call -----------------------------------------------------------------

    async def accept(
        self, subprotocol: str | None = None, headers: Iterable[Any] | None = None
    ) -> None:
        """Accept the connection, optionally choosing a subprotocol and adding headers."""
        message: Message = {"type": "websocket.accept", "subprotocol": subprotocol}
        if headers:
            message["headers"] = list(headers)
        await self._raw_send(message)

    async def send(  # type: ignore[override]
        self,
        text_data: str | None = None,
        bytes_data: bytes | None = None,
        close: bool | int = False,
    ) -> None:
        """Send a text or binary frame; ``close`` (True or a code) closes afterwards."""
        await self._raw_send(self._frame_message(text_data, bytes_data))
        if close:
            await self._run_hook(self.close, close)

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        """Close the connection (before accept this refuses the handshake: HTTP 403)."""
        await self._raw_send(self._close_message(code, reason))

    # -- ASGI events -----------------------------------------------------------------------------

    async def websocket_connect(self, message: Message) -> None:
        """Join ``groups``, then run :meth:`connect`."""
        await self._membership.join_all(self.groups or ())
        try:
            await self._run_hook(self.connect)
        except AcceptConnection:
            await self._run_hook(self.accept)
        except DenyConnection:
            await self._run_hook(self.close)

    async def websocket_receive(self, message: Message) -> None:
        """Check the frame's size and hand its payload to :meth:`receive`."""
        self._check_size(message)
        if message.get("text") is not None:
            await self._run_hook(self.receive, text_data=message["text"])
        else:
            await self._run_hook(self.receive, bytes_data=message.get("bytes"))

    async def websocket_send(self, message: Message) -> None:
        """Forward a ready-made frame from the channel layer (the broadcast fast path)."""
        await self._raw_send(self._frame_message(message.get("text"), message.get("bytes")))

    async def websocket_disconnect(self, message: Message) -> None:
        """Leave ``groups``, run :meth:`disconnect`, and stop the consumer."""
        await self._membership.leave_all(self.groups or ())
        lifecycle = self._lifecycle
        if lifecycle.opened or lifecycle.state is not ConnectionState.LOST:
            await self._run_hook(self.disconnect, message.get("code", 1000))
        if not self._sync:
            await aclose_old_connections()
        raise StopConsumer()

    # -- internals -------------------------------------------------------------------------------

    def _wrap_send(self, send: Send) -> Send:
        lim = limits()

        async def abort() -> None:
            await send({"type": ABORT_EXTENSION})

        can_abort = ABORT_EXTENSION in (self.scope.get("extensions") or {})
        self._outbox = Outbox(
            send,
            limit=lim.websocket_outbox_size,
            policy=lim.websocket_slow_client,
            lifecycle=self._lifecycle,
            send_timeout=lim.websocket_send_timeout,
            abort=abort if can_abort else None,
        )
        return self._outbox.send

    def _deadline_for(self, message: Message) -> float | None:
        if message.get("type") == "websocket.connect":
            return limits().websocket_handshake_timeout
        return None

    @staticmethod
    def _frame_message(text_data: str | None, bytes_data: bytes | None) -> Message:
        if text_data is not None:
            return {"type": "websocket.send", "text": text_data}
        if bytes_data is not None:
            return {"type": "websocket.send", "bytes": bytes_data}
        raise ValueError("send() needs text_data or bytes_data")

    @staticmethod
    def _close_message(code: int | bool | None, reason: str | None) -> Message:
        message: Message = {"type": "websocket.close"}
        if code is not None and code is not True and code is not False:
            message["code"] = code
        if reason:
            message["reason"] = reason
        return message

    @staticmethod
    def _check_size(message: Message) -> None:
        """Refuse a frame over the size limit (the server enforces it too, on the wire)."""
        cap = limits().websocket_max_message_size
        text = message.get("text")
        if text is not None:
            if len(text) > cap or (len(text) * 4 > cap and len(text.encode()) > cap):
                raise BadFrame(MESSAGE_TOO_BIG, "message too big")
            return
        data = message.get("bytes")
        if data is not None and len(data) > cap:
            raise BadFrame(MESSAGE_TOO_BIG, "message too big")

    async def _handler_failed(self, exc: Exception, message: Message) -> bool:
        kind = message.get("type")
        lifecycle = self._lifecycle
        name = type(self).__name__
        if isinstance(exc, BadFrame):
            logger.warning("closing WebSocket %s with %d: %s", _path(self), exc.code, exc.reason)
            await self._outbox.cut(self._close_message(exc.code, exc.reason))
            return True
        if kind == "websocket.connect" and not lifecycle.opened:
            # The client gets HTTP 403: say so, and do not call disconnect() later.
            if isinstance(exc, TimeoutError):
                logger.error(
                    "%s did not accept or deny WebSocket %s within %.1f s; refused it (HTTP 403)",
                    name,
                    _path(self),
                    limits().websocket_handshake_timeout,
                )
            else:
                logger.error(
                    "%s failed in connect() on WebSocket %s; refused it (HTTP 403)",
                    name,
                    _path(self),
                    exc_info=exc,
                )
            await self._outbox.cut(self._close_message(None, None))
            return True
        if lifecycle.live:
            code = INTERNAL_ERROR if lifecycle.opened else None
            logger.error(
                "%s failed handling %r on WebSocket %s; %s",
                name,
                kind,
                _path(self),
                f"closing it with {code}" if code else "refused it (HTTP 403)",
                exc_info=exc,
            )
            await self._outbox.cut(self._close_message(code, None))
        else:
            logger.error(
                "%s failed handling %r on WebSocket %s (already closed)",
                name,
                kind,
                _path(self),
                exc_info=exc,
            )
        # Wait for the server's websocket.disconnect to run the normal cleanup, unless this
        # failure happened in that very cleanup.
        return kind != "websocket.disconnect"


def _path(consumer: Any) -> str:
    scope = getattr(consumer, "scope", None) or {}
    return quoted(scope.get("path", "?"))


async def _resolved(value: Any) -> Any:
    """``value``, awaited if it is awaitable (an async or a sync codec)."""
    if inspect.isawaitable(value):
        return await value
    return value


class AsyncWebsocketConsumer(WebsocketProtocol):
    """An async WebSocket consumer with Channels' method names and behaviour."""


class WebsocketConsumer(WebsocketProtocol, SyncConsumer):
    """The sync twin of :class:`AsyncWebsocketConsumer`; hooks run on the handler pool."""

    def connect(self) -> None:  # type: ignore[override]
        """Called on a new connection; accepts it unless overridden."""
        self.accept()

    def receive(  # type: ignore[override]
        self, text_data: str | None = None, bytes_data: bytes | None = None
    ) -> None:
        """Called with each frame's payload."""

    def disconnect(self, code: int) -> None:  # type: ignore[override]
        """Called when the connection has closed (not when ``connect`` itself failed)."""

    # The API and the handlers, derived from the one async source (callable from hooks).
    accept = _sync_twin(WebsocketProtocol.accept)
    send = _sync_twin(WebsocketProtocol.send)
    close = _sync_twin(WebsocketProtocol.close)
    websocket_connect = _sync_twin(WebsocketProtocol.websocket_connect)
    websocket_receive = _sync_twin(WebsocketProtocol.websocket_receive)
    websocket_send = _sync_twin(WebsocketProtocol.websocket_send)
    websocket_disconnect = _sync_twin(WebsocketProtocol.websocket_disconnect)


class _JsonProtocol(WebsocketProtocol):
    """JSON text frames both ways, written once (async); see the two public JSON classes."""

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        if text_data is None:
            raise BadFrame(UNSUPPORTED_DATA, "binary frames are not accepted; send JSON text")
        try:
            content = await _resolved(self.decode_json(text_data))
        except RecursionError:
            raise BadFrame(INVALID_PAYLOAD, "JSON nested too deeply") from None
        except ValueError:
            raise BadFrame(INVALID_PAYLOAD, "frame is not valid JSON") from None
        await self._run_hook(self.receive_json, content, **kwargs)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Called with each decoded JSON frame."""

    async def send_json(self, content: Any, close: bool | int = False) -> None:
        """Encode ``content`` as JSON and send it as a text frame.

        When ``content`` is a value of the group message being handled (``send_json(
        event["payload"])``), it is the same object for every member in this process, and it is
        encoded once for all of them (see :mod:`headrace.generic.broadcast`).
        """
        event = self.layer_message
        if event is not None and _is_shared_value(content, event):
            text = await encode_shared(content, type(self), self._encode)
        else:
            text = await self._encode(content)
        await self._run_hook(self.send, text_data=text, close=close)

    async def _encode(self, content: Any) -> str:
        text: str = await _resolved(self.encode_json(content))
        return text

    @classmethod
    async def decode_json(cls, text_data: str) -> Any:
        return json.loads(text_data)

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        return json.dumps(content)


def _is_shared_value(content: Any, event: Message) -> bool:
    if not isinstance(content, dict | list):
        return False
    return any(value is content for value in event.values())


class AsyncJsonWebsocketConsumer(_JsonProtocol, AsyncWebsocketConsumer):
    """An async WebSocket consumer that speaks JSON text frames both ways.

    A binary frame closes with 1003 and malformed (or too deeply nested) JSON with 1007
    (Channels raises instead).
    """


class JsonWebsocketConsumer(_JsonProtocol, WebsocketConsumer):
    """A sync WebSocket consumer that speaks JSON text frames both ways.

    A binary frame closes with 1003 and malformed (or too deeply nested) JSON with 1007
    (Channels raises instead).
    """

    def receive_json(self, content: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Called with each decoded JSON frame."""

    receive = _sync_twin(_JsonProtocol.receive)
    send_json = _sync_twin(_JsonProtocol.send_json)

    @classmethod
    def decode_json(cls, text_data: str) -> Any:
        return json.loads(text_data)

    @classmethod
    def encode_json(cls, content: Any) -> str:  # type: ignore[override]
        return json.dumps(content)
