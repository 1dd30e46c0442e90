"""Drive an ASGI application from a test without a server.

The communicators have Channels' method names. They run the application with database
connection cleanup suspended (:func:`headrace.db.suspend_connection_cleanup`), so consumers can
use the test's transaction.

A consumer handler that raises has its exception raised to the test — from ``receive_output``,
``receive_from``, ``connect``, ``get_response`` or ``wait``, as soon as the application has
stopped — instead of being logged and answered with a close 1011 or an HTTP 500 as under a
server. Pass ``raise_errors=False`` to see what a server's client would see instead (see
:mod:`headrace.failures`).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

from ..db import suspend_connection_cleanup
from ..failures import raising_errors
from ..types import ASGIApp, Message, Scope

__all__ = ["ApplicationCommunicator", "HttpCommunicator", "WebsocketCommunicator"]


class ApplicationCommunicator:
    """Runs one application instance; ``send_input`` feeds it, ``receive_output`` reads it.

    The application starts on first use, in a fresh context (nothing the test set in context
    variables leaks in), as a server would run it. With ``raise_errors`` (the default) the
    scope carries the ``headrace.raise_errors`` extension, so a consumer handler's exception is
    raised here rather than contained.
    """

    def __init__(self, application: ASGIApp, scope: Scope, *, raise_errors: bool = True) -> None:
        self.application = application
        self.scope = raising_errors(scope) if raise_errors else scope
        self._input: asyncio.Queue[Message] | None = None
        self._output: asyncio.Queue[Message] | None = None
        self._future: asyncio.Task[None] | None = None

    @property
    def input_queue(self) -> asyncio.Queue[Message]:
        if self._input is None:
            self._input = asyncio.Queue()
        return self._input

    @property
    def output_queue(self) -> asyncio.Queue[Message]:
        if self._output is None:
            self._output = asyncio.Queue()
        return self._output

    @property
    def future(self) -> asyncio.Task[None]:
        """The task running the application."""
        if self._future is None:
            self._future = asyncio.create_task(self._run(), context=contextvars.Context())
        return self._future

    async def _run(self) -> None:
        suspend_connection_cleanup()
        await self.application(self.scope, self.input_queue.get, self._put_output)

    async def _put_output(self, message: Message) -> None:
        await self.output_queue.put(message)

    def _raise_if_crashed(self) -> None:
        if self.future.done() and not self.future.cancelled():
            self.future.result()

    async def send_input(self, message: Message) -> None:
        """Give the application one message (raises if it already crashed)."""
        self._raise_if_crashed()
        await self.input_queue.put(message)

    async def receive_output(self, timeout: float = 1) -> Message:
        """The application's next message; ``TimeoutError`` (after stopping it) if none comes.

        If the application raises while this waits, its exception is raised at once.
        """
        self._raise_if_crashed()
        if not self.output_queue.empty():
            return self.output_queue.get_nowait()
        getter = asyncio.ensure_future(self.output_queue.get())
        try:
            async with asyncio.timeout(timeout):
                await asyncio.wait([getter, self.future], return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    self._raise_if_crashed()
                    return await getter  # it ended without crashing: only output is left
        except TimeoutError:
            self._raise_if_crashed()
            await self._cancel()
            raise
        finally:
            if not getter.done():
                getter.cancel()
        return getter.result()

    async def receive_nothing(self, timeout: float = 0.1) -> bool:
        """``True`` if the application sends nothing within ``timeout`` seconds."""
        self._raise_if_crashed()
        if not self.output_queue.empty():
            return False
        try:
            async with asyncio.timeout(timeout):
                message = await self.output_queue.get()
        except TimeoutError:
            return True
        # Put it back at the front so a later receive_output still sees it.
        rest = [message]
        while not self.output_queue.empty():
            rest.append(self.output_queue.get_nowait())
        for item in rest:
            self.output_queue.put_nowait(item)
        return False

    async def wait(self, timeout: float = 1) -> None:
        """Wait for the application to finish; re-raises its exception; cancels on timeout."""
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self.future)
        except asyncio.CancelledError:
            if not self.future.cancelled():
                raise
        finally:
            if not self.future.done():
                await self._cancel()

    async def _cancel(self) -> None:
        self.future.cancel()
        try:
            await self.future
        except asyncio.CancelledError:
            pass

    def stop(self, exceptions: bool = True) -> None:
        """Cancel the application if it is still running (or raise what it raised)."""
        if self._future is None:
            return
        if not self._future.done():
            self._future.cancel()
        elif exceptions and not self._future.cancelled():
            self._future.result()


class WebsocketCommunicator(ApplicationCommunicator):
    """Talks to a WebSocket application as a client would."""

    def __init__(
        self,
        application: ASGIApp,
        path: str,
        headers: Iterable[tuple[bytes, bytes]] | None = None,
        subprotocols: Iterable[str] | None = None,
        spec_version: str | None = None,
        *,
        raise_errors: bool = True,
    ) -> None:
        if not isinstance(path, str):
            raise TypeError(f"path must be a str, got {type(path).__name__}")
        parts = urlsplit(path)
        scope: Scope = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "path": unquote(parts.path),
            "raw_path": parts.path.encode(),
            "root_path": "",
            "query_string": parts.query.encode(),
            "headers": list(headers or []),
            "subprotocols": list(subprotocols or []),
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        if spec_version:
            scope["spec_version"] = spec_version
        super().__init__(application, scope, raise_errors=raise_errors)
        self.response_headers: list[tuple[bytes, bytes]] | None = None

    async def connect(self, timeout: float = 1) -> tuple[bool, Any]:
        """Open the connection: ``(True, subprotocol)`` if accepted, else ``(False, code)``."""
        await self.send_input({"type": "websocket.connect"})
        response = await self.receive_output(timeout)
        if response["type"] == "websocket.close":
            return False, response.get("code", 1000)
        if response["type"] == "websocket.http.response.start":
            return False, response["status"]
        if response["type"] != "websocket.accept":
            raise AssertionError(f"expected websocket.accept or close, got {response['type']!r}")
        self.response_headers = list(response.get("headers", []))
        return True, response.get("subprotocol")

    async def send_to(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Send one frame to the application: exactly one of ``text_data`` / ``bytes_data``."""
        if (text_data is None) == (bytes_data is None):
            raise ValueError("send_to() needs exactly one of text_data or bytes_data")
        if text_data is not None:
            if not isinstance(text_data, str):
                raise TypeError("text_data must be a str")
            await self.send_input({"type": "websocket.receive", "text": text_data})
        else:
            if not isinstance(bytes_data, bytes):
                raise TypeError("bytes_data must be bytes")
            await self.send_input({"type": "websocket.receive", "bytes": bytes_data})

    async def send_json_to(self, data: Any) -> None:
        """Send ``data`` as a JSON text frame."""
        await self.send_to(text_data=json.dumps(data))

    async def receive_from(self, timeout: float = 1) -> str | bytes:
        """The next frame the application sends (fails if it closes instead)."""
        response = await self.receive_output(timeout)
        if response["type"] != "websocket.send":
            raise AssertionError(
                f"expected websocket.send, got {response['type']!r}: {dict(response)!r}"
            )
        if response.get("text") is not None:
            text: str = response["text"]
            return text
        data: bytes = response["bytes"]
        return data

    async def receive_json_from(self, timeout: float = 1) -> Any:
        """The next frame, decoded from JSON (fails on a binary frame)."""
        payload = await self.receive_from(timeout)
        if not isinstance(payload, str):
            raise AssertionError("expected a JSON text frame, got a binary frame")
        return json.loads(payload)

    async def receive_close(self, timeout: float = 1) -> tuple[int, str]:
        """Wait for the application to close; returns ``(code, reason)``."""
        response = await self.receive_output(timeout)
        if response["type"] != "websocket.close":
            raise AssertionError(f"expected websocket.close, got {dict(response)!r}")
        return response.get("code", 1000), response.get("reason", "")

    async def disconnect(self, code: int = 1000, timeout: float = 1) -> None:
        """Tell the application the client closed, and wait for it to finish."""
        await self.send_input({"type": "websocket.disconnect", "code": code})
        await self.wait(timeout)


class HttpCommunicator(ApplicationCommunicator):
    """Sends one HTTP request to an application and collects the response."""

    def __init__(
        self,
        application: ASGIApp,
        method: str,
        path: str,
        body: bytes = b"",
        headers: Iterable[tuple[bytes, bytes]] | None = None,
        *,
        raise_errors: bool = True,
    ) -> None:
        if not isinstance(body, bytes):
            raise TypeError("body must be bytes")
        parts = urlsplit(path)
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method.upper(),
            "scheme": "http",
            "path": unquote(parts.path),
            "raw_path": parts.path.encode(),
            "root_path": "",
            "query_string": parts.query.encode(),
            "headers": list(headers or []),
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        super().__init__(application, scope, raise_errors=raise_errors)
        self.body = body
        self.sent_request = False

    async def get_response(self, timeout: float = 1) -> dict[str, Any]:
        """The response as ``{"status", "headers", "body"}`` (body chunks joined)."""
        if not self.sent_request:
            self.sent_request = True
            await self.send_input({"type": "http.request", "body": self.body})
        start: Message = await self.receive_output(timeout)
        if start["type"] != "http.response.start":
            raise AssertionError(f"expected http.response.start, got {start['type']!r}")
        chunks: list[bytes] = []
        while True:
            chunk = await self.receive_output(timeout)
            if chunk["type"] != "http.response.body":
                raise AssertionError(f"expected http.response.body, got {chunk['type']!r}")
            chunks.append(chunk.get("body", b""))
            if not chunk.get("more_body", False):
                break
        return {
            "status": start["status"],
            "headers": list(start.get("headers", [])),
            "body": b"".join(chunks),
        }
