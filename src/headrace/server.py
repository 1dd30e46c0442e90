"""The interface server: uvicorn, configured with headrace's limits.

headrace writes no HTTP or WebSocket protocol code; uvicorn does that. This module turns
:class:`headrace.settings.Limits` into uvicorn options (message size -> 1009 on the wire, ping
interval and timeout), logs WebSocket connects and disconnects, and runs *background*
coroutines beside the server — the seam ``runserver`` uses to run workers in the same process.
A background coroutine that raises is logged with its traceback and run again after the shared
backoff (:func:`headrace.backoff.supervise`): it is never left dead while the server serves.

:class:`Server` runs in the foreground (``run``) or on a thread with its own event loop
(``start_in_thread``), which is what the live-server test helpers use. Either way the loop is
the one uvicorn's ``loop`` option picks — by default uvloop when it is installed (it comes
with ``uvicorn[standard]``), as ``uvicorn mysite.asgi:application`` would run.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import uvicorn

from .backoff import Backoff, supervise
from .layers.clock import Clock
from .process import cancel_and_wait
from .settings import Limits, limits
from .types import ASGIApp, Message, Receive, Scope, Send
from .utils import quoted
from .uvicorn_protocol import websocket_protocol

__all__ = [
    "BackgroundFactory",
    "Server",
    "ServerOptions",
    "log_websocket_connections",
    "uvicorn_config",
]

logger = logging.getLogger("headrace.server")

#: A zero-argument callable returning a coroutine to run for the server's lifetime (called
#: again, after a backoff pause, when the coroutine raised).
BackgroundFactory = Callable[[], Coroutine[Any, Any, None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerOptions:
    """How to serve: address, logging, limits (``None`` = from settings), extra uvicorn args."""

    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"
    access_log: bool = True
    configure_logging: bool = True
    limits: Limits | None = None
    uvicorn_options: dict[str, Any] = field(default_factory=dict)

    def using(self, **changes: Any) -> ServerOptions:
        """A copy with ``changes`` applied."""
        return replace(self, **changes)


def uvicorn_config(app: ASGIApp, options: ServerOptions) -> uvicorn.Config:
    """The ``uvicorn.Config`` headrace serves ``app`` with."""
    lim = options.limits or limits()
    kwargs: dict[str, Any] = {
        "host": options.host,
        "port": options.port,
        "lifespan": "off",
        "log_level": options.log_level,
        "access_log": options.access_log,
        "ws_max_size": lim.websocket_max_message_size,
        "ws_ping_interval": lim.websocket_ping_interval,
        "ws_ping_timeout": lim.websocket_ping_timeout,
    }
    protocol = websocket_protocol()  # uvicorn's, plus the abort extension (slow clients)
    if protocol is not None:
        kwargs["ws"] = protocol
    if not options.configure_logging:
        kwargs["log_config"] = None
    kwargs.update(options.uvicorn_options)
    return uvicorn.Config(app, **kwargs)


class _NoHandshakeLines(logging.Filter):
    """Drop the INFO lines uvicorn (and the ``websockets`` protocol under it, which logs to
    ``uvicorn.error``) write per WebSocket connection: the wrapper below logs each one once."""

    _LINES = ("connection open", "connection closed", "connection rejected (%d %s)")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not isinstance(record.msg, str):
            return True
        return not (record.msg.startswith('%s - "WebSocket %s"') or record.msg in self._LINES)


def log_websocket_connections(app: ASGIApp) -> ASGIApp:
    """Wrap ``app`` to log one INFO line per WebSocket connection: its accept or refusal.

    The disconnect is logged at DEBUG; uvicorn's own handshake line is filtered out. The path
    and client address are quoted (:func:`headrace.utils.quoted`): a client chooses them (a
    ``%0A`` in the path, ``X-Forwarded-For`` behind a proxy) and must not be able to write
    lines of its own into the log.
    """
    uvicorn_logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _NoHandshakeLines) for f in uvicorn_logger.filters):
        uvicorn_logger.addFilter(_NoHandshakeLines())

    async def logged(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await app(scope, receive, send)
            return
        client = scope.get("client") or ("?", 0)
        where = f"{quoted(scope.get('path', '?'))} from {quoted(f'{client[0]}:{client[1]}')}"
        answered = False

        async def logging_send(message: Message) -> None:
            nonlocal answered
            kind = message["type"]
            if not answered and kind == "websocket.accept":
                answered = True
                logger.info("WebSocket CONNECT %s", where)
            elif not answered and kind in ("websocket.close", "websocket.http.response.start"):
                answered = True  # a close before accept is answered with HTTP 403
                logger.info("WebSocket REFUSED %s (%s)", where, message.get("status", 403))
            await send(message)

        async def logging_receive() -> Message:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                logger.debug("WebSocket DISCONNECT %s (code %s)", where, message.get("code"))
            return message

        await app(scope, logging_receive, logging_send)

    return logged


class Server:
    """uvicorn serving ``app``, plus background coroutines that live as long as it does.

    ``clock`` times the backoff before a failed background coroutine runs again (tests pass a
    :class:`~headrace.layers.ManualClock`).
    """

    def __init__(
        self,
        app: ASGIApp,
        options: ServerOptions | None = None,
        *,
        background: Sequence[BackgroundFactory] = (),
        clock: Clock | None = None,
    ) -> None:
        self.options = options or ServerOptions()
        self.app = app
        self.background = list(background)
        self.clock = clock
        self.config = uvicorn_config(app, self.options)
        self._uvicorn = uvicorn.Server(self.config)
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._started = threading.Event()
        self._failure: BaseException | None = None
        self.port = self.options.port

    @property
    def url(self) -> str:
        return f"http://{self.options.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.options.host}:{self.port}"

    async def serve(self) -> None:
        """Serve until :meth:`stop` (or a signal, when running on the main thread)."""
        tasks = [asyncio.create_task(self._supervised(factory)) for factory in self.background]
        try:
            sockets = [self._socket] if self._socket is not None else None
            await self._uvicorn.serve(sockets=sockets)
        finally:
            await cancel_and_wait(tasks, logger)

    async def _supervised(self, factory: BackgroundFactory) -> None:
        func = getattr(factory, "func", factory)  # a functools.partial: name what it calls
        what = f"background task {getattr(func, '__qualname__', None) or func!r}"
        backoff = Backoff(what, logger=logger, clock=self.clock)
        await supervise(what, factory, logger=logger, backoff=backoff)

    def run(self) -> None:
        """Serve in the foreground (blocks)."""
        asyncio.run(self.serve(), loop_factory=self.config.get_loop_factory())

    def start_in_thread(self, timeout: float = 10.0) -> None:
        """Bind (port 0 picks a free port), serve on a daemon thread, return once listening."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.options.host, self.options.port))
        self._socket = sock
        self.port = sock.getsockname()[1]
        self._uvicorn.config.port = self.port
        self._thread = threading.Thread(
            target=self._thread_main, name="headrace-server", daemon=True
        )
        self._thread.start()
        if not self._started.wait(timeout):
            self.stop()
            raise RuntimeError(f"the server did not start within {timeout} s")
        if self._failure is not None:
            raise RuntimeError("the server failed to start") from self._failure

    def _thread_main(self) -> None:
        async def main() -> None:
            serving = asyncio.create_task(self.serve())
            while not self._uvicorn.started and not serving.done():
                await asyncio.sleep(0.005)
            self._started.set()
            await serving

        try:
            asyncio.run(main(), loop_factory=self.config.get_loop_factory())
        except BaseException as exc:
            self._failure = exc
            self._started.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the server to stop, and wait for its thread (if any) to finish."""
        self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
