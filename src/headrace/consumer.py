"""Consumers: ASGI applications that dispatch each message to a method named after its type.

A message ``{"type": "chat.message", ...}`` — from the client or from the channel layer — runs
``chat_message(message)``. One handler runs at a time per connection, in arrival order for each
source. :class:`AsyncConsumer` is the async core; :class:`SyncConsumer` derives the sync twin by
running the same dispatch on a bounded thread pool (``HEADRACE_SYNC_THREADS``) instead of on
one global thread, so slow sync handlers on one connection do not stall the others.

A handler that raises is logged once and ends (or, for WebSockets, closes with 1011) only its
own connection; a message with no handler is treated the same way.

**One source for both flavours.** Protocol consumers (WebSocket, JSON) are written once, as
async code that reaches every overridable hook (``connect``, ``receive``...) through
:meth:`AsyncConsumer._run_hook`. The async consumer awaits the hook; the sync consumer runs a
plain-function hook on the handler pool. The public methods a sync handler calls (``send``,
``accept``, ``close``...) are the async originals wrapped by :func:`_sync_twin`, in one line
each. Where the connection is in its life is one :class:`headrace.lifecycle.Lifecycle`, shared
with the outbox.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from asgiref.sync import async_to_sync

from . import DEFAULT_CHANNEL_LAYER
from .db import DatabaseSyncToAsync, aclose_old_connections
from .exceptions import StopConsumer
from .generic.membership import GroupMembership
from .lifecycle import ConnectionState, Event, Lifecycle
from .security.hosts import refuse_disallowed_hosts
from .types import ASGIApp, Message, Receive, Scope, Send
from .utils import get_handler_name, name_that_thing, sync_handler_pool

__all__ = ["DEFAULT_CHANNEL_LAYER", "AsyncConsumer", "SyncConsumer", "get_handler_name"]

logger = logging.getLogger("headrace.consumer")


def _get_channel_layer(alias: str) -> Any:
    from .layers import get_channel_layer

    return get_channel_layer(alias)


def _sync_twin(method: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    """The sync twin of an async consumer method, for code running on a handler thread.

    Called from a sync handler it runs ``method`` on the event loop and waits for it. The
    consumer core, already on the loop, skips the thread hop and awaits ``method`` itself
    (:meth:`SyncConsumer._run_hook` finds it as ``__headrace_async__``).
    """

    @functools.wraps(method)
    def twin(self: Any, *args: Any, **kwargs: Any) -> Any:
        return async_to_sync(method)(self, *args, **kwargs)

    twin.__headrace_async__ = method  # type: ignore[attr-defined]
    return twin


def _call(hook: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return hook(*args, **kwargs)


class AsyncConsumer:
    """The async consumer core: channel layer wiring, serialized dispatch, error containment."""

    _sync: ClassVar[bool] = False
    #: Which ``CHANNEL_LAYERS`` alias this consumer listens on.
    channel_layer_alias: ClassVar[str] = DEFAULT_CHANNEL_LAYER

    scope: Scope
    #: The channel-layer message being handled right now (``None`` for client events). Its
    #: nested values may be shared with every other member of the group: treat it as read-only.
    layer_message: Message | None = None
    channel_layer: Any
    channel_name: str
    base_send: Any
    _lifecycle: Lifecycle
    _membership: GroupMembership
    _raw_send: Send

    def __init__(self, **initkwargs: Any) -> None:
        for key, value in initkwargs.items():
            setattr(self, key, value)

    # -- the ASGI application ------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        self.channel_layer = _get_channel_layer(self.channel_layer_alias)
        if self.channel_layer is not None:
            self.channel_name = await self.channel_layer.new_channel()
        self._lifecycle = Lifecycle()
        self._membership = GroupMembership(
            self.channel_layer,
            getattr(self, "channel_name", None),
            owner=f"{type(self).__name__} (CHANNEL_LAYERS alias {self.channel_layer_alias!r})",
        )
        raw_send = self._wrap_send(send)
        self._raw_send = raw_send
        self.base_send = async_to_sync(raw_send) if self._sync else raw_send
        self._lock = asyncio.Lock()
        main = asyncio.current_task()
        reader: asyncio.Task[None] | None = None
        if self.channel_layer is not None:
            reader = asyncio.create_task(self._read_layer(main))
        self._stop_from_reader = False
        try:
            while self._lifecycle.state is not ConnectionState.STOPPED:
                message = await receive()
                await self._dispatch_one(message, from_client=True)
        except asyncio.CancelledError:
            # The layer reader stops us by cancelling our wait; anyone else's cancel propagates.
            if not (self._stop_from_reader and main is not None and main.uncancel() == 0):
                raise
        finally:
            self._lifecycle.apply(Event.STOP)
            if reader is not None:
                reader.cancel()
                try:
                    await reader
                except asyncio.CancelledError:
                    pass

    async def _read_layer(self, main: asyncio.Task[Any] | None) -> None:
        receive = self.channel_layer.receive
        name = self.channel_name
        while True:
            message = await receive(name)
            await self._dispatch_one(message, from_client=False)
            if self._lifecycle.state is ConnectionState.STOPPED:
                if main is not None:
                    self._stop_from_reader = True
                    main.cancel()
                return

    async def _dispatch_one(self, message: Message, *, from_client: bool) -> None:
        async with self._lock:
            lifecycle = self._lifecycle
            # A closed or cut-off connection only waits for the server's disconnect; layer
            # messages and late client frames could only produce frames nobody reads.
            if not lifecycle.live and (
                lifecycle.state is ConnectionState.STOPPED
                or not (from_client and str(message.get("type", "")).endswith(".disconnect"))
            ):
                return
            deadline = self._deadline_for(message) if from_client else None
            if not from_client:
                self.layer_message = message
            try:
                if from_client and not self._sync:
                    await aclose_old_connections()
                if deadline is None:
                    await self.dispatch(message)
                else:
                    async with asyncio.timeout(deadline):
                        await self.dispatch(message)
            except StopConsumer:
                lifecycle.apply(Event.STOP)
            except Exception as exc:
                if not await self._handler_failed(exc, message):
                    lifecycle.apply(Event.STOP)
            finally:
                self.layer_message = None

    # -- hooks for the protocol consumers ------------------------------------------------------

    def _wrap_send(self, send: Send) -> Send:
        """Return the send the consumer uses (WebSocket consumers add their outbox here)."""
        return send

    def _deadline_for(self, message: Message) -> float | None:
        """Seconds the handler for this client message may take, or ``None`` for no limit."""
        return None

    async def _handler_failed(self, exc: Exception, message: Message) -> bool:
        """Contain a handler's failure; return ``True`` to keep the connection running.

        The base consumer logs once and ends; protocol consumers also tell the client.
        """
        self._log_failure(exc, message)
        return False

    def _log_failure(self, exc: Exception, message: Message) -> None:
        logger.error(
            "%s failed handling %r; ending this connection only",
            name_that_thing(self),
            message.get("type"),
            exc_info=exc,
        )

    async def _run_hook(self, hook: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run an overridable hook (``connect``, ``receive``...): async consumers await it."""
        return await hook(*args, **kwargs)

    # -- the API consumers use -----------------------------------------------------------------

    async def dispatch(self, message: Message) -> None:
        """Run the handler for ``message["type"]``; no handler is a ``ValueError``."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']!r}")
        await handler(message)

    async def send(self, message: Message) -> None:
        """Send an ASGI message to the client (subclasses add protocol-level helpers)."""
        await self._raw_send(message)

    @classmethod
    def as_asgi(cls, **initkwargs: Any) -> ASGIApp:
        """An ASGI application creating one consumer per connection, like ``View.as_view``.

        ``initkwargs`` become attributes of each instance; only names the class already has
        are accepted (a misspelt keyword fails here, at start-up, not at the first request).
        """
        if cls.__init__.__module__.startswith("headrace."):
            for key in initkwargs:
                if not hasattr(cls, key):
                    raise TypeError(
                        f"{cls.__name__}.as_asgi() got {key!r}, which is not an attribute "
                        f"of {cls.__name__}"
                    )

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            consumer = cls(**initkwargs)
            await consumer(scope, receive, send)

        functools.update_wrapper(app, cls, updated=())
        app.consumer_class = cls  # type: ignore[attr-defined]
        app.consumer_initkwargs = initkwargs  # type: ignore[attr-defined]
        return refuse_disallowed_hosts(app)  # ALLOWED_HOSTS, as Django checks it for HTTP


class SyncConsumer(AsyncConsumer):
    """The sync twin: handlers are plain functions run on the bounded handler pool.

    Old database connections are closed before and after every handler
    (``headrace.db.DatabaseSyncToAsync``). ``send`` blocks the handler's thread until the event
    loop has queued the message.
    """

    _sync: ClassVar[bool] = True
    _runner: Callable[..., Awaitable[Any]] | None = None

    async def _run_hook(self, hook: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a hook the way its kind needs.

        A derived twin (:func:`_sync_twin`) runs its async original here on the loop; an async
        function is awaited; a plain function runs on the handler pool.
        """
        original = getattr(hook, "__headrace_async__", None)
        if original is not None:
            return await original(self, *args, **kwargs)
        if inspect.iscoroutinefunction(hook):
            return await hook(*args, **kwargs)
        runner = self._runner
        if runner is None:
            runner = DatabaseSyncToAsync(
                _call, thread_sensitive=False, executor=sync_handler_pool()
            )
            self._runner = runner
        return await runner(hook, *args, **kwargs)

    async def dispatch(self, message: Message) -> None:
        """Run the handler for ``message["type"]`` (a plain function runs on the pool)."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']!r}")
        await self._run_hook(handler, message)

    send = _sync_twin(AsyncConsumer.send)
