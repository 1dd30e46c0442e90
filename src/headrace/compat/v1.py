"""Channels 1.x code on headrace: ``Channel``, ``Group``, function consumers, ``route``/``include``.

Code written for Channels 1 (the ProgRock article, for one) runs with its import lines changed::

    from channels import Channel, Group           ->  from headrace.compat.v1 import Channel, Group
    from channels.routing import route, include   ->  from headrace.compat.v1 import route, include

and its ``channel_routing`` list turned into an ASGI application once, in ``asgi.py``::

    application = v1_application(channel_routing)       # or mix: see v1_application

What it gives:

- ``Channel(name).send(content)`` and ``Group(name).add(channel)`` / ``.discard(channel)`` /
  ``.send(content)``: thin *sync* wrappers over the default channel layer
  (``async_to_sync``), for use in sync code (function consumers, views, signal handlers).
  ``immediately=`` is accepted and ignored: headrace always sends at once.
- Function consumers, ``def worker(message)``, for background channels and for the three
  WebSocket events ``websocket.connect``, ``websocket.receive`` and ``websocket.disconnect``.
  ``message.content`` is the dict that was sent, ``message["key"]`` reads it,
  ``message.reply_channel`` is the connection's :class:`Channel` and ``message.channel`` the
  channel the message came on. Named groups of a route's ``path`` regex are passed as keyword
  arguments, as in Channels 1. Async functions work too.
- Messages without a ``"type"`` (Channels 2+ needs one to name the handler) are given one on
  the way: ``{"text": ...}`` or ``{"bytes": ...}`` to a reply channel or a group becomes a
  ``websocket.send`` frame (which any headrace WebSocket consumer forwards to its client),
  ``{"accept": True}`` / ``{"close": True}`` a reply the WebSocket side of this module acts
  on, anything else a ``"v1.message"`` that a function consumer receives without the added
  key. Delay requests to ``asgi.delay`` get the same treatment for their ``content``.

What it does not give (write the Channels 2+ form instead, see
docs/how-to/porting-from-channels.md): ``channel_session`` and ``http_session`` decorators
(use ``AuthMiddlewareStack`` and ``self.scope["session"]`` in a consumer class), the
``http.request`` channel (use Django views), ``message.channel_session``, class-based v1
consumers, and ``route()`` filters other than ``path``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from asgiref.sync import async_to_sync

from ..db import DatabaseSyncToAsync
from ..delay import DELAY_CHANNEL
from ..exceptions import ConfigurationError
from ..failures import errors_reach_caller
from ..layers import get_channel_layer
from ..layers.registry import DEFAULT_CHANNEL_LAYER
from ..layers.rules import check_channel_name, check_group_name
from ..routing import ChannelNameRouter, ProtocolTypeRouter
from ..types import ASGIApp, Message, Receive, Scope, Send
from ..utils import sync_handler_pool

__all__ = [
    "V1_REPLY",
    "V1_TYPE",
    "Channel",
    "Group",
    "Include",
    "Route",
    "V1Message",
    "V1WebsocketApplication",
    "include",
    "route",
    "v1_application",
]

logger = logging.getLogger("headrace.compat")

#: The ``"type"`` given to a typeless Channels 1 message, removed again before a function
#: consumer sees it.
V1_TYPE: Final = "v1.message"
#: The ``"type"`` of a reply with ``accept`` or ``close`` for a v1 WebSocket connection.
V1_REPLY: Final = "v1.reply"

_WEBSOCKET_EVENTS: Final = ("websocket.connect", "websocket.receive", "websocket.disconnect")
_FRAME_KEYS: Final = frozenset({"text", "bytes"})
_REPLY_KEYS: Final = frozenset({"text", "bytes", "accept", "close"})


def _layer(alias: str) -> Any:
    layer = get_channel_layer(alias)
    if layer is None:
        raise ConfigurationError(f"there is no channel layer {alias!r} in CHANNEL_LAYERS")
    return layer


def _typed(target: str | None, content: Mapping[str, Any]) -> dict[str, Any]:
    """The Channels 2+ message for a Channels 1 ``content`` sent to ``target`` (None: a group)."""
    if not isinstance(content, Mapping):
        raise TypeError(f"a message must be a dict, got {type(content).__name__}")
    message = dict(content)
    if "type" in message:
        return message
    if target == DELAY_CHANNEL and isinstance(message.get("content"), Mapping):
        message["content"] = _typed(message.get("channel"), message["content"])
        return message
    keys = set(message)
    reply_like = target is None or "!" in target
    if reply_like and keys and keys <= _FRAME_KEYS:
        return {"type": "websocket.send", **message}
    if reply_like and keys and keys <= _REPLY_KEYS:
        return {"type": V1_REPLY, **message}
    return {"type": V1_TYPE, **message}


def _untyped(message: Mapping[str, Any]) -> dict[str, Any]:
    content = dict(message)
    if content.get("type") == V1_TYPE:
        del content["type"]
    return content


class Channel:
    """A channel by name, with Channels 1's sync ``send``."""

    def __init__(self, name: str, alias: str = DEFAULT_CHANNEL_LAYER) -> None:
        self.name = check_channel_name(name)
        self.alias = alias

    def send(self, content: Mapping[str, Any], immediately: bool = False) -> None:
        """Send ``content`` now (``immediately`` is accepted for old code; sends always are)."""
        async_to_sync(_layer(self.alias).send)(self.name, _typed(self.name, content))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Channel) and (other.name, other.alias) == (self.name, self.alias)

    def __hash__(self) -> int:
        return hash((self.name, self.alias))

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"Channel({self.name!r})"


def _channel_name(channel: Channel | str) -> str:
    return channel.name if isinstance(channel, Channel) else channel


class Group:
    """A group by name, with Channels 1's sync ``add``, ``discard`` and ``send``."""

    def __init__(self, name: str, alias: str = DEFAULT_CHANNEL_LAYER) -> None:
        self.name = check_group_name(name)
        self.alias = alias

    def add(self, channel: Channel | str) -> None:
        async_to_sync(_layer(self.alias).group_add)(self.name, _channel_name(channel))

    def discard(self, channel: Channel | str) -> None:
        async_to_sync(_layer(self.alias).group_discard)(self.name, _channel_name(channel))

    def send(self, content: Mapping[str, Any], immediately: bool = False) -> None:
        """Send ``content`` to every member (``immediately`` is accepted and ignored)."""
        async_to_sync(_layer(self.alias).group_send)(self.name, _typed(None, content))

    def __repr__(self) -> str:
        return f"Group({self.name!r})"


class V1Message:
    """What a Channels 1 function consumer receives: ``content``, ``channel``, ``reply_channel``."""

    def __init__(self, content: dict[str, Any], channel: str, alias: str) -> None:
        self.content = content
        self.channel = Channel(channel, alias)
        reply = content.get("reply_channel")
        self.reply_channel = Channel(reply, alias) if isinstance(reply, str) else None
        self.channel_layer = _layer(alias)

    def __getitem__(self, key: str) -> Any:
        return self.content[key]

    def __contains__(self, key: object) -> bool:
        return key in self.content

    def __iter__(self) -> Iterator[str]:
        return iter(self.content)

    def get(self, key: str, default: Any = None) -> Any:
        return self.content.get(key, default)

    def keys(self) -> Any:
        return self.content.keys()

    def __repr__(self) -> str:
        return f"<V1Message on {self.channel.name!r}: {self.content!r}>"


Consumer = Callable[..., Any]


def _runner(consumer: Consumer) -> Callable[..., Any]:
    """An awaitable call of ``consumer``: sync ones on the bounded handler pool."""
    if asyncio.iscoroutinefunction(consumer):
        return consumer
    return DatabaseSyncToAsync(consumer, thread_sensitive=False, executor=sync_handler_pool())


# -- routing -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Route:
    """``route(channel, consumer, path=REGEX)``: run ``consumer`` for messages on ``channel``."""

    channel: str
    consumer: Consumer
    path: str | None = None


@dataclass(frozen=True, slots=True)
class Include:
    """``include(routing, path=REGEX)``: the routes of ``routing`` under a path prefix."""

    routing: Sequence[Route | Include] | str
    path: str | None = None


def route(channel: str, consumer: Consumer, **filters: str) -> Route:
    """A Channels 1 route; ``path`` is the only filter headrace understands."""
    unknown = sorted(set(filters) - {"path"})
    if unknown:
        raise ConfigurationError(
            f"route({channel!r}, ...) got the filter(s) {', '.join(unknown)}; only path= is "
            "supported (route on other scope values in a consumer class)"
        )
    if channel == "http.request" or channel.startswith("http."):
        raise ConfigurationError(
            f"route({channel!r}, ...): HTTP channels are not supported; serve HTTP with "
            "Django views (or an AsyncHttpConsumer in a URLRouter)"
        )
    return Route(channel, consumer, filters.get("path"))


def include(routing: Sequence[Route | Include] | str, **filters: str) -> Include:
    """Include another routing list (or its dotted path) under an optional ``path`` prefix."""
    unknown = sorted(set(filters) - {"path"})
    if unknown:
        raise ConfigurationError(f"include() got the filter(s) {', '.join(unknown)}; only path=")
    return Include(routing, filters.get("path"))


@dataclass(frozen=True, slots=True)
class _Flat:
    channel: str
    consumer: Consumer
    paths: tuple[re.Pattern[str], ...]


def _resolve(routing: Sequence[Route | Include] | str) -> Sequence[Route | Include]:
    if not isinstance(routing, str):
        return routing
    module_path, _, name = routing.rpartition(".")
    try:
        found = getattr(importlib.import_module(module_path), name)
    except (ImportError, AttributeError, ValueError) as error:
        raise ConfigurationError(f"cannot include {routing!r}: {error}") from error
    if not isinstance(found, Sequence):
        raise ConfigurationError(f"{routing!r} is not a routing list")
    return found


def _flatten(
    routing: Sequence[Route | Include] | str, paths: tuple[re.Pattern[str], ...] = ()
) -> list[_Flat]:
    flat: list[_Flat] = []
    for entry in _resolve(routing):
        own = (re.compile(entry.path),) if entry.path is not None else ()
        if isinstance(entry, Include):
            flat.extend(_flatten(entry.routing, paths + own))
        elif isinstance(entry, Route):
            flat.append(_Flat(entry.channel, entry.consumer, paths + own))
        else:
            raise ConfigurationError(
                f"a Channels 1 routing list holds route() and include() entries, got {entry!r}"
            )
    return flat


def _match(paths: tuple[re.Pattern[str], ...], path: str) -> dict[str, str] | None:
    """Match each regex in turn, each on what the previous one left (as Channels 1 did)."""
    kwargs: dict[str, str] = {}
    rest = path
    for pattern in paths:
        found = pattern.match(rest)
        if found is None:
            return None
        kwargs.update({k: v for k, v in found.groupdict().items() if v is not None})
        rest = rest[found.end() :]
    return kwargs


def v1_application(
    channel_routing: Sequence[Route | Include] | str,
    *,
    websocket: ASGIApp | None = None,
    channel: ASGIApp | None = None,
    http: ASGIApp | None = None,
    alias: str = DEFAULT_CHANNEL_LAYER,
) -> ProtocolTypeRouter:
    """An ASGI application for a Channels 1 ``channel_routing`` list.

    WebSocket routes become one WebSocket application; every other channel becomes an entry of
    a :class:`~headrace.routing.ChannelNameRouter` (served by ``runworker`` or runserver's
    embedded workers). Pass ``websocket=``, ``channel=`` or ``http=`` to serve those protocols
    with Channels 2+ applications instead (for ``http``, Django's ``get_asgi_application()``).
    """
    flat = _flatten(channel_routing)
    socket_routes = [entry for entry in flat if entry.channel in _WEBSOCKET_EVENTS]
    workers: dict[str, ASGIApp] = {}
    for entry in flat:
        if entry.channel in _WEBSOCKET_EVENTS:
            continue
        if entry.channel.startswith("websocket."):
            raise ConfigurationError(
                f"route({entry.channel!r}, ...): the WebSocket events are websocket.connect, "
                "websocket.receive and websocket.disconnect"
            )
        if entry.paths:
            raise ConfigurationError(
                f"route({entry.channel!r}, ...): path= is for WebSocket routes"
            )
        if entry.channel in workers:
            raise ConfigurationError(f"channel {entry.channel!r} is routed twice")
        workers[entry.channel] = _channel_consumer(entry.consumer, alias)
    mapping: dict[str, ASGIApp] = {}
    if websocket is not None or socket_routes:
        mapping["websocket"] = websocket or V1WebsocketApplication(socket_routes, alias=alias)
    if channel is not None or workers:
        mapping["channel"] = channel or ChannelNameRouter(workers)
    if http is not None:
        mapping["http"] = http
    return ProtocolTypeRouter(mapping)


def _channel_consumer(consumer: Consumer, alias: str) -> ASGIApp:
    """A background-channel application calling ``consumer(message)`` for each message."""
    run = _runner(consumer)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            await run(V1Message(_untyped(message), scope["channel"], alias))

    app.__name__ = app.__qualname__ = getattr(consumer, "__name__", "v1_consumer")
    return app


# -- the WebSocket side --------------------------------------------------------------------------


@dataclass(slots=True)
class _Connection:
    scope: Scope
    send: Send
    reply_channel: str
    alias: str
    raise_errors: bool
    accepted: bool = False
    closed: bool = False  #: a close was sent (or the handshake refused)
    order: int = 0
    pending: list[Message] = field(default_factory=list)

    def content(self, **extra: Any) -> dict[str, Any]:
        content = {"reply_channel": self.reply_channel, "path": self.scope.get("path", "")}
        content.update(extra)
        return content


class V1WebsocketApplication:
    """Runs Channels 1 function consumers for ``websocket.connect/receive/disconnect``.

    Each connection gets a reply channel on the layer; what is sent to it (``{"accept":
    True}``, ``{"text": ...}``, ``{"bytes": ...}``, ``{"close": True}``) goes to the client, the
    first such message accepting the connection (a close before that refuses it). Without a
    ``websocket.connect`` route the connection is accepted at once, as in Channels 1. A
    consumer that raises is logged once and closes (1011) or refuses only its connection;
    under a test communicator the exception is raised to the test (:mod:`headrace.failures`).
    """

    def __init__(self, routes: Sequence[_Flat], *, alias: str = DEFAULT_CHANNEL_LAYER) -> None:
        self.routes = list(routes)
        self.alias = alias

    def _pick(self, event: str, path: str) -> tuple[Consumer, dict[str, str]] | None:
        for entry in self.routes:
            if entry.channel == event:
                kwargs = _match(entry.paths, path)
                if kwargs is not None:
                    return entry.consumer, kwargs
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        layer = _layer(self.alias)
        connection = _Connection(
            scope=scope,
            send=send,
            reply_channel=await layer.new_channel("websocket"),
            alias=self.alias,
            raise_errors=errors_reach_caller(scope, receive, send),
        )
        from_client: asyncio.Task[Message] | None = None
        from_layer: asyncio.Task[Message] | None = None
        try:
            while True:
                if from_client is None:
                    from_client = asyncio.ensure_future(receive())
                if from_layer is None:
                    from_layer = asyncio.ensure_future(layer.receive(connection.reply_channel))
                done, _ = await asyncio.wait(
                    [from_client, from_layer], return_when=asyncio.FIRST_COMPLETED
                )
                if from_layer in done:
                    message, from_layer = from_layer.result(), None
                    await self._reply(connection, message)
                if from_client in done:
                    event, from_client = from_client.result(), None
                    if not await self._client_event(connection, event):
                        return
        finally:
            for task in (from_client, from_layer):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    async def _client_event(self, connection: _Connection, event: Message) -> bool:
        """Run the route for a client event; False when the connection is over."""
        kind = event.get("type")
        path = str(connection.scope.get("path", ""))
        if kind == "websocket.connect":
            picked = self._pick(kind, path)
            if picked is None:
                await self._accept(connection)
                return True
            content = connection.content(order=0)
        elif kind == "websocket.receive":
            picked = self._pick(kind, path)
            connection.order += 1
            frame = {k: event[k] for k in ("text", "bytes") if event.get(k) is not None}
            content = connection.content(order=connection.order, **frame)
        elif kind == "websocket.disconnect":
            picked = self._pick(kind, path)
            connection.order += 1
            content = connection.content(order=connection.order, code=event.get("code", 1000))
        else:
            return True
        if picked is not None:
            consumer, kwargs = picked
            message = V1Message(content, str(kind), connection.alias)
            try:
                await _runner(consumer)(message, **kwargs)
            except Exception as error:
                if connection.raise_errors:
                    raise
                logger.error(
                    "%s failed handling %r on WebSocket %s; %s",
                    getattr(consumer, "__name__", consumer),
                    kind,
                    path,
                    "closing it with 1011" if connection.accepted else "refusing it",
                    exc_info=error,
                )
                await self._close(connection, 1011)
        return bool(kind != "websocket.disconnect")

    async def _accept(self, connection: _Connection) -> None:
        if not connection.accepted and not connection.closed:
            connection.accepted = True
            await connection.send({"type": "websocket.accept"})

    async def _close(self, connection: _Connection, code: int = 1000) -> None:
        if connection.closed:
            return
        if connection.accepted:
            await connection.send({"type": "websocket.close", "code": code})
        else:
            await connection.send({"type": "websocket.close"})  # refuses the handshake
        connection.closed = True

    async def _reply(self, connection: _Connection, message: Message) -> None:
        kind = message.get("type")
        if kind not in ("websocket.send", V1_REPLY):
            logger.warning(
                "dropped a %r message on v1 reply channel %s: only text, bytes, accept and "
                "close replies reach the client",
                kind,
                connection.reply_channel,
            )
            return
        if connection.closed:
            return
        close = message.get("close")
        frame = {k: message[k] for k in ("text", "bytes") if message.get(k) is not None}
        if message.get("accept") or frame:
            await self._accept(connection)
        if frame:
            await connection.send({"type": "websocket.send", **frame})
        if close:
            await self._close(connection, close if type(close) is int else 1000)
