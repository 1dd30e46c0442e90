"""Client-controlled values in log lines are quoted and escaped: no forged lines."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator

import pytest
from django.urls import re_path

from headrace.generic.websocket import AsyncWebsocketConsumer
from headrace.routing import ProtocolTypeRouter, URLRouter
from headrace.security.websocket import AllowedHostsOriginValidator
from headrace.testing import LiveServer
from headrace.utils import quoted

CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e]")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/ws/chat/", '"/ws/chat/"'),
        ("/a\nINFO forged", r'"/a\nINFO forged"'),
        ("\r\t\x00\x1b[2K\x7f", r'"\r\t\x00\x1b[2K\x7f"'),
        ('say "hi" \\ bye', r'"say \"hi\" \\ bye"'),
        ("\u202eevil\u2028line", r'"\u202eevil\u2028line"'),
        ("café ü 😀", '"café ü 😀"'),
        (b"raw\xff\n", r'"rawÿ\n"'),
        (1001, '"1001"'),
        ("x" * 250, '"' + "x" * 200 + '"...'),
    ],
)
def test_quoted_escapes_what_could_forge_or_hide_a_line(value: object, expected: str) -> None:
    assert quoted(value) == expected
    assert not CONTROL.search(quoted(value))


class Accepting(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()
        await self.close(code=4000)


@pytest.fixture
def server() -> Iterator[LiveServer]:
    """Any path is routed (even one with a newline) so CONNECT and DISCONNECT are logged."""
    app = ProtocolTypeRouter(
        {
            "websocket": AllowedHostsOriginValidator(
                URLRouter([re_path(r"^ws/[\s\S]*$", Accepting.as_asgi())])
            )
        }
    )
    with LiveServer(app) as live:
        yield live


async def _handshake(port: int, target: bytes, origin: bytes) -> bytes:
    """A hand-written handshake: real clients refuse to send such paths and origins."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET " + target + b" HTTP/1.1\r\n"
        b"Host: 127.0.0.1:" + str(port).encode() + b"\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Origin: " + origin + b"\r\n\r\n"
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    if b" 101 " in head.split(b"\r\n", 1)[0]:
        # The consumer closes with 4000: read that close frame and answer it (masked).
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"\x88\x02\x0f\xa0"
        writer.write(b"\x88\x82\x00\x00\x00\x00\x0f\xa0")
        await writer.drain()
    writer.close()
    await writer.wait_closed()
    status = head.split(b"\r\n", 1)[0]
    return status


@pytest.mark.slow
async def test_no_forged_lines_in_server_and_security_logs(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="headrace")
    good_origin = f"http://127.0.0.1:{server.port}".encode()
    forged_path = b"/ws/x%0AWARNING%20forged%20from%20path%0D%1B%5B2K%E2%80%AE"
    # Accepted: logged on CONNECT and DISCONNECT by the server.
    assert b" 101 " in await _handshake(server.port, forged_path, good_origin)
    # Refused by the origin check and logged by headrace.security. HTTP parsers refuse raw
    # ASCII controls in headers but pass bytes >= 0x80: NEL (0x85) breaks lines for
    # str.splitlines() and many log viewers.
    hostile_origin = b"http://evil.example\x85WARNING forged from origin\t\xa0"
    assert b" 403 " in await _handshake(server.port, forged_path, hostile_origin)
    await _wait_for_log(caplog, "WebSocket DISCONNECT")

    records = [r for r in caplog.records if r.name in ("headrace.server", "headrace.security")]
    messages = [r.getMessage() for r in records]
    assert any(m.startswith("WebSocket CONNECT") for m in messages), messages
    assert any(m.startswith("WebSocket DISCONNECT") for m in messages), messages
    assert any(m.startswith("refused WebSocket") for m in messages), messages
    assert any(m.startswith("WebSocket REFUSED") and "(403)" in m for m in messages), messages
    for message in messages:
        assert not CONTROL.search(message), message
        assert r"\nWARNING forged from path\r\x1b[2K\u202e" in message, message
    refusal = next(m for m in messages if m.startswith("refused WebSocket"))
    assert r'"http://evil.example\x85WARNING forged from origin\t\xa0"' in refusal
    # The formatted log as an operator reads it: one line per record, none forged.
    text = "\n".join(logging.Formatter("%(levelname)s %(message)s").format(r) for r in records)
    assert len(text.splitlines()) == len(records)
    assert not any(line.startswith("WARNING forged") for line in text.splitlines())


async def _wait_for_log(caplog: pytest.LogCaptureFixture, start: str) -> None:
    """Wait (bounded) until the server thread has logged a line starting with ``start``."""
    async with asyncio.timeout(5):
        while not any(r.getMessage().startswith(start) for r in caplog.records):
            await asyncio.sleep(0.01)
