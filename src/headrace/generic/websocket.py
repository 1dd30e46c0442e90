"""WebSocket consumers: the async core and its sync twin, plain and JSON.

The protocol decisions — what an accept, frame or close message looks like, how big a frame may
be, what a failure or a bad frame closes with — live once in :class:`WebsocketProtocol`. The
four public classes only add the I/O: ``await`` in the async ones, a thread-pool call in the
sync ones. Close codes headrace chooses (all from RFC 6455):

====  =========================================================================
1003  a binary frame reached a JSON consumer (it only understands text)
1007  a text frame on a JSON consumer is not valid JSON
1009  an incoming message is larger than ``HEADRACE_WEBSOCKET_MAX_MESSAGE_SIZE``
1011  a handler raised, or a message arrived that has no handler
1013  the client reads too slowly (see :mod:`headrace.generic.outbox`)
====  =========================================================================

Each is logged once and affects only that connection. A failure before ``accept`` (including
a ``connect`` that does not accept or deny within ``HEADRACE_WEBSOCKET_HANDSHAKE_TIMEOUT``)
refuses the handshake instead (HTTP 403).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from asgiref.sync import async_to_sync

from ..consumer import AsyncConsumer, SyncConsumer
from ..db import aclose_old_connections
from ..exceptions import AcceptConnection, DenyConnection, InvalidChannelLayerError, StopConsumer
from ..settings import limits
from ..types import Message, Send
from ..utils import quoted
from .broadcast import encode_shared
from .outbox import Outbox

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


class WebsocketProtocol:
    """Everything the async and sync WebSocket consumers share; no I/O here."""

    #: Groups joined on connect and left on disconnect.
    groups: list[str] | None = None
    _outbox: Outbox

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.groups = list(self.groups or [])

    def _wrap_send(self, send: Send) -> Send:
        lim = limits()
        self._outbox = Outbox(
            send, limit=lim.websocket_outbox_size, policy=lim.websocket_slow_client
        )
        return self._outbox.send

    def _deadline_for(self, message: Message) -> float | None:
        if message.get("type") == "websocket.connect":
            return limits().websocket_handshake_timeout
        return None

    def _require_groups(self, layer: Any) -> None:
        if self.groups and (layer is None or not hasattr(layer, "group_add")):
            raise InvalidChannelLayerError(
                f"{type(self).__name__}.groups needs a channel layer with groups, but the "
                f"CHANNEL_LAYERS alias {getattr(self, 'channel_layer_alias', '?')!r} "
                "is not configured"
            )

    @staticmethod
    def _accept_message(subprotocol: str | None, headers: Iterable[Any] | None) -> Message:
        message: Message = {"type": "websocket.accept", "subprotocol": subprotocol}
        if headers:
            message["headers"] = list(headers)
        return message

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
        if isinstance(exc, BadFrame):
            logger.warning("closing WebSocket %s with %d: %s", _path(self), exc.code, exc.reason)
            self._failed = True
            await self._outbox.send(self._close_message(exc.code, exc.reason))
            return True
        if isinstance(exc, TimeoutError) and kind == "websocket.connect":
            logger.error(
                "%s did not accept or deny WebSocket %s within %.1f s; refusing it",
                type(self).__name__,
                _path(self),
                limits().websocket_handshake_timeout,
            )
        else:
            logger.error(
                "%s failed handling %r on WebSocket %s; closing it with %d",
                type(self).__name__,
                kind,
                _path(self),
                INTERNAL_ERROR,
                exc_info=exc,
            )
        self._failed = True
        close = self._close_message(INTERNAL_ERROR if self._outbox.accepted else None, None)
        await self._outbox.send(close)
        # Wait for the server's websocket.disconnect to run the normal cleanup, unless this
        # failure happened in that very cleanup.
        return kind != "websocket.disconnect"

    _failed: bool

    @staticmethod
    def _decode_json_frame(text_data: str | None, bytes_data: bytes | None) -> str:
        if text_data is None:
            raise BadFrame(UNSUPPORTED_DATA, "binary frames are not accepted; send JSON text")
        return text_data


def _is_shared_value(content: Any, event: Message) -> bool:
    if not isinstance(content, dict | list):
        return False
    return any(value is content for value in event.values())


def _path(consumer: Any) -> str:
    scope = getattr(consumer, "scope", None) or {}
    return quoted(scope.get("path", "?"))


class AsyncWebsocketConsumer(WebsocketProtocol, AsyncConsumer):
    """An async WebSocket consumer with Channels' method names and behaviour."""

    async def websocket_connect(self, message: Message) -> None:
        """Join ``groups``, then run :meth:`connect`."""
        self._require_groups(self.channel_layer)
        for group in self.groups or ():
            await self.channel_layer.group_add(group, self.channel_name)
        try:
            await self.connect()
        except AcceptConnection:
            await self.accept()
        except DenyConnection:
            await self.close()

    async def connect(self) -> None:
        """Called on a new connection; accepts it unless overridden."""
        await self.accept()

    async def accept(
        self, subprotocol: str | None = None, headers: Iterable[Any] | None = None
    ) -> None:
        """Accept the connection, optionally choosing a subprotocol and adding headers."""
        await super().send(self._accept_message(subprotocol, headers))

    async def websocket_receive(self, message: Message) -> None:
        """Check the frame's size and hand its payload to :meth:`receive`."""
        self._check_size(message)
        if message.get("text") is not None:
            await self.receive(text_data=message["text"])
        else:
            await self.receive(bytes_data=message.get("bytes"))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Called with each frame's payload."""

    async def send(  # type: ignore[override]
        self,
        text_data: str | None = None,
        bytes_data: bytes | None = None,
        close: bool | int = False,
    ) -> None:
        """Send a text or binary frame; ``close`` (True or a code) closes afterwards."""
        await super().send(self._frame_message(text_data, bytes_data))
        if close:
            await self.close(close)

    async def websocket_send(self, message: Message) -> None:
        """Forward a ready-made frame from the channel layer (the broadcast fast path)."""
        await super().send(self._frame_message(message.get("text"), message.get("bytes")))

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        """Close the connection (before accept this refuses the handshake)."""
        await super().send(self._close_message(code, reason))

    async def websocket_disconnect(self, message: Message) -> None:
        """Leave ``groups``, run :meth:`disconnect`, and stop the consumer."""
        if self.channel_layer is not None:
            for group in self.groups or ():
                await self.channel_layer.group_discard(group, self.channel_name)
        await self.disconnect(message.get("code", 1000))
        await aclose_old_connections()
        raise StopConsumer()

    async def disconnect(self, code: int) -> None:
        """Called when the connection has closed."""


class WebsocketConsumer(WebsocketProtocol, SyncConsumer):
    """The sync twin of :class:`AsyncWebsocketConsumer`; handlers run on the handler pool."""

    def websocket_connect(self, message: Message) -> None:
        """Join ``groups``, then run :meth:`connect`."""
        self._require_groups(self.channel_layer)
        for group in self.groups or ():
            async_to_sync(self.channel_layer.group_add)(group, self.channel_name)
        try:
            self.connect()
        except AcceptConnection:
            self.accept()
        except DenyConnection:
            self.close()

    def connect(self) -> None:
        """Called on a new connection; accepts it unless overridden."""
        self.accept()

    def accept(self, subprotocol: str | None = None, headers: Iterable[Any] | None = None) -> None:
        """Accept the connection, optionally choosing a subprotocol and adding headers."""
        super().send(self._accept_message(subprotocol, headers))

    def websocket_receive(self, message: Message) -> None:
        """Check the frame's size and hand its payload to :meth:`receive`."""
        self._check_size(message)
        if message.get("text") is not None:
            self.receive(text_data=message["text"])
        else:
            self.receive(bytes_data=message.get("bytes"))

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Called with each frame's payload."""

    def send(  # type: ignore[override]
        self,
        text_data: str | None = None,
        bytes_data: bytes | None = None,
        close: bool | int = False,
    ) -> None:
        """Send a text or binary frame; ``close`` (True or a code) closes afterwards."""
        super().send(self._frame_message(text_data, bytes_data))
        if close:
            self.close(close)

    def websocket_send(self, message: Message) -> None:
        """Forward a ready-made frame from the channel layer (the broadcast fast path)."""
        super().send(self._frame_message(message.get("text"), message.get("bytes")))

    def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        """Close the connection (before accept this refuses the handshake)."""
        super().send(self._close_message(code, reason))

    def websocket_disconnect(self, message: Message) -> None:
        """Leave ``groups``, run :meth:`disconnect`, and stop the consumer."""
        if self.channel_layer is not None:
            for group in self.groups or ():
                async_to_sync(self.channel_layer.group_discard)(group, self.channel_name)
        self.disconnect(message.get("code", 1000))
        raise StopConsumer()

    def disconnect(self, code: int) -> None:
        """Called when the connection has closed."""


class JsonWebsocketConsumer(WebsocketConsumer):
    """A sync WebSocket consumer that speaks JSON text frames both ways.

    A binary frame closes with 1003 and malformed JSON with 1007 (Channels raises instead).
    """

    def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        text = self._decode_json_frame(text_data, bytes_data)
        try:
            content = self.decode_json(text)
        except ValueError:
            raise BadFrame(INVALID_PAYLOAD, "frame is not valid JSON") from None
        self.receive_json(content, **kwargs)

    def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Called with each decoded JSON frame."""

    def send_json(self, content: Any, close: bool | int = False) -> None:
        """Encode ``content`` as JSON and send it as a text frame."""
        super().send(text_data=self.encode_json(content), close=close)

    @classmethod
    def decode_json(cls, text_data: str) -> Any:
        return json.loads(text_data)

    @classmethod
    def encode_json(cls, content: Any) -> str:
        return json.dumps(content)


class AsyncJsonWebsocketConsumer(AsyncWebsocketConsumer):
    """An async WebSocket consumer that speaks JSON text frames both ways.

    A binary frame closes with 1003 and malformed JSON with 1007 (Channels raises instead).
    """

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        text = self._decode_json_frame(text_data, bytes_data)
        try:
            content = await self.decode_json(text)
        except ValueError:
            raise BadFrame(INVALID_PAYLOAD, "frame is not valid JSON") from None
        await self.receive_json(content, **kwargs)

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
            text = await encode_shared(content, type(self), self.encode_json)
        else:
            text = await self.encode_json(content)
        await super().send(text_data=text, close=close)

    @classmethod
    async def decode_json(cls, text_data: str) -> Any:
        return json.loads(text_data)

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        return json.dumps(content)
