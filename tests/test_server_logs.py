"""What a real uvicorn server logs about WebSocket connections, and how it ends a client that
never reads: real sockets, real ``websockets`` clients, ``caplog``."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.test import override_settings
from websockets.exceptions import InvalidStatus

from headrace.generic.websocket import AsyncWebsocketConsumer
from headrace.security.websocket import OriginValidator
from headrace.testing import LiveServer
from headrace.types import ASGIApp, Receive, Scope, Send
from tests.conftest_consumers import ws_connect


class Echo(AsyncWebsocketConsumer):
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send(text_data=text_data)


class BrokenConnect(AsyncWebsocketConsumer):
    """A connect() that raises before setting what disconnect() uses (the tutorial shape)."""

    async def connect(self) -> None:
        raise KeyError("no such room")
        self.room = "never set"  # pragma: no cover

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.room, self.channel_name)


class Flood(AsyncWebsocketConsumer):
    """On any frame, sends ``frames`` frames of 64 KiB as fast as the outbox takes them."""

    frames = 200

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        chunk = "x" * 65536
        for _ in range(self.frames):
            await self.send(text_data=chunk)


class Served:
    """The test application: routes by path and notes (thread-safely) when each app returns."""

    def __init__(self, routes: dict[str, ASGIApp]) -> None:
        self.routes = routes
        self.finished: dict[str, threading.Event] = {path: threading.Event() for path in routes}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.routes[scope["path"]](scope, receive, send)
        finally:
            self.finished[scope["path"]].set()

    async def wait_finished(self, path: str) -> None:
        assert await asyncio.to_thread(self.finished[path].wait, 10), f"{path} never finished"


APP = Served(
    {
        "/echo/": Echo.as_asgi(),
        "/broken/": BrokenConnect.as_asgi(),
        "/guarded/": OriginValidator(Echo.as_asgi(), ["http://allowed.example"]),
        "/flood/": Flood.as_asgi(),
    }
)


@pytest.fixture
def server() -> Iterator[LiveServer]:
    for event in APP.finished.values():
        event.clear()
    with LiveServer(APP) as live:
        yield live


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture, server: LiveServer) -> pytest.LogCaptureFixture:
    """Everything at INFO and above, including uvicorn's own lines (the live server sets
    uvicorn's loggers to WARNING when it starts, so this comes after it)."""
    caplog.set_level(logging.INFO)
    for name in ("uvicorn.error", "headrace"):
        caplog.set_level(logging.INFO, logger=name)
    return caplog


async def _settle(server: LiveServer) -> None:
    """One full, well-behaved connection: the server has moved past earlier connections."""
    async with ws_connect(f"{server.ws_url}/echo/") as ws:
        await ws.send("settle")
        assert await ws.recv() == "settle"
    await APP.wait_finished("/echo/")


def _info_lines(logs: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in logs.records if r.levelno == logging.INFO]


@pytest.mark.slow
async def test_one_info_line_per_websocket_connection(
    server: LiveServer, logs: pytest.LogCaptureFixture
) -> None:
    async with ws_connect(f"{server.ws_url}/echo/") as ws:
        await ws.send("hello")
        assert await ws.recv() == "hello"
    await APP.wait_finished("/echo/")
    lines = _info_lines(logs)
    assert len(lines) == 1, lines
    assert lines[0].startswith('WebSocket CONNECT "/echo/" from "127.0.0.1:')


@pytest.mark.slow
async def test_a_connect_that_raises_is_logged_once_as_refused_with_403(
    server: LiveServer, logs: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with ws_connect(f"{server.ws_url}/broken/"):
            pass
    assert refused.value.response.status_code == 403
    await APP.wait_finished("/broken/")
    await _settle(server)
    messages = [r.getMessage() for r in logs.records]
    tracebacks = [r for r in logs.records if r.exc_info]
    assert len(tracebacks) == 1, messages  # disconnect() is not run after a failed connect
    assert tracebacks[0].getMessage() == (
        'BrokenConnect failed in connect() on WebSocket "/broken/"; refused it (HTTP 403)'
    )
    assert not [m for m in messages if "1011" in m]
    assert [m for m in messages if m.startswith('WebSocket REFUSED "/broken/"')] != []


@pytest.mark.slow
async def test_an_origin_refusal_completes_the_handshake_with_403(
    server: LiveServer, logs: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with ws_connect(f"{server.ws_url}/guarded/", origin="http://evil.example"):
            pass
    assert refused.value.response.status_code == 403
    await APP.wait_finished("/guarded/")
    await _settle(server)
    messages = [r.getMessage() for r in logs.records]
    assert not [r for r in logs.records if r.name.startswith("uvicorn")], messages
    assert not [r for r in logs.records if r.levelno >= logging.ERROR], messages
    assert [m for m in messages if m.startswith('WebSocket REFUSED "/guarded/"')] != []
    assert [m for m in messages if 'Origin "http://evil.example" not allowed' in m] != []


# -- a client that never reads ------------------------------------------------------------------


def _raw_client(port: int, path: str) -> socket.socket:
    """A WebSocket client on a plain socket with a tiny receive buffer; it reads the 101
    response and nothing else unless the test asks."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)  # byte by byte: leave the first frames in the socket
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


def _send_text(sock: socket.socket, text: str) -> None:
    payload = text.encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)


def _read_until_closed(sock: socket.socket) -> tuple[int | None, bool]:
    """Read frames until the server's close frame (its code) or the end of the stream."""
    buffer = b""

    def need(n: int) -> bool:
        nonlocal buffer
        while len(buffer) < n:
            try:
                chunk = sock.recv(1 << 20)
            except ConnectionResetError:
                return False
            if not chunk:
                return False
            buffer += chunk
        return True

    while True:
        if not need(2):
            return None, True
        opcode, length = buffer[0] & 0x0F, buffer[1] & 0x7F
        header = 2
        if length == 126:
            if not need(4):
                return None, True
            (length,) = struct.unpack("!H", buffer[2:4])
            header = 4
        elif length == 127:
            if not need(10):
                return None, True
            (length,) = struct.unpack("!Q", buffer[2:10])
            header = 10
        if not need(header + length):
            return None, True
        payload = buffer[header : header + length]
        buffer = buffer[header + length :]
        if opcode == 0x8:
            return struct.unpack("!H", payload[:2])[0], False


class _Watch(logging.Handler):
    """Sets an event when a record matching ``wanted`` is emitted (on any thread)."""

    def __init__(self, wanted: Callable[[str], bool]) -> None:
        super().__init__()
        self.wanted = wanted
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.wanted(record.getMessage()):
            self.seen.set()


@pytest.fixture
def watch_outbox() -> Iterator[Callable[[Callable[[str], bool]], _Watch]]:
    handlers: list[_Watch] = []
    outbox_logger = logging.getLogger("headrace.websocket")

    def watch(wanted: Callable[[str], bool]) -> _Watch:
        handler = _Watch(wanted)
        handlers.append(handler)
        outbox_logger.addHandler(handler)
        return handler

    yield watch
    for handler in handlers:
        outbox_logger.removeHandler(handler)


def _no_double_close(logs: pytest.LogCaptureFixture) -> None:
    text = "\n".join(r.getMessage() for r in logs.records)
    assert "Unexpected ASGI message" not in text
    assert not [r for r in logs.records if r.levelno >= logging.ERROR], text


@pytest.mark.slow
@override_settings(HEADRACE_WEBSOCKET_SEND_TIMEOUT=0.3, HEADRACE_WEBSOCKET_OUTBOX_SIZE=1000)
async def test_a_client_that_never_reads_is_closed_then_aborted(
    server: LiveServer, logs: pytest.LogCaptureFixture, watch_outbox: Any
) -> None:
    """200 frames of 64 KiB fill every buffer; the outbox (1000 frames) never overflows, so it
    is the send timeout that notices. The 1013 close cannot be written either: aborted."""
    sock = _raw_client(server.port, "/flood/")
    try:
        _send_text(sock, "go")
        await APP.wait_finished("/flood/")  # the consumer ended without the client reading
        messages = [r.getMessage() for r in logs.records]
        assert "client has read nothing for 0.3 s; closing its connection with 1013" in messages
        assert "could not write the close within 0.3 s; aborting" in messages
        _no_double_close(logs)
        code, ended = await asyncio.to_thread(_read_until_closed, sock)
        assert (code, ended) == (None, True)  # no close frame: the connection was dropped
    finally:
        sock.close()


@pytest.mark.slow
@override_settings(HEADRACE_WEBSOCKET_SEND_TIMEOUT=2.0, HEADRACE_WEBSOCKET_OUTBOX_SIZE=1000)
async def test_a_client_that_reads_again_in_time_gets_the_1013_close_once(
    server: LiveServer, logs: pytest.LogCaptureFixture, watch_outbox: Any
) -> None:
    stalled = watch_outbox(lambda message: message.startswith("client has read nothing"))
    sock = _raw_client(server.port, "/flood/")
    try:
        _send_text(sock, "go")
        assert await asyncio.to_thread(stalled.seen.wait, 10)
        code, ended = await asyncio.to_thread(_read_until_closed, sock)  # reads again at once
        assert (code, ended) == (1013, False)
        await APP.wait_finished("/flood/")
        _no_double_close(logs)
        assert not [r for r in logs.records if "aborting" in r.getMessage()]
    finally:
        sock.close()
