"""Request bodies are bounded: 413 while the body is arriving, never after buffering it all."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from django.test import override_settings
from django.urls import path

from headrace.generic.http import AsyncHttpConsumer
from headrace.routing import ProtocolTypeRouter, URLRouter
from headrace.testing import ApplicationCommunicator, HttpCommunicator, LiveServer

LIMIT = 1000


class Upload(AsyncHttpConsumer):
    """Answers with the size of the body it was handed; records what it saw."""

    handled: ClassVar[list[int]] = []
    buffered: ClassVar[list[int]] = []
    disconnected: ClassVar[list[bool]] = []

    async def http_request(self, message: dict[str, Any]) -> None:
        try:
            await super().http_request(message)
        finally:
            Upload.buffered.append(sum(len(chunk) for chunk in self.body))

    async def handle(self, body: bytes) -> None:
        Upload.handled.append(len(body))
        await self.send_response(200, str(len(body)).encode())

    async def disconnect(self) -> None:
        Upload.disconnected.append(True)


class Streaming(Upload):
    max_body_size = None  # streams the body itself, so opts out


class Small(Upload):
    max_body_size = 10


@pytest.fixture(autouse=True)
def _records() -> Iterator[None]:
    for record in (Upload.handled, Upload.buffered, Upload.disconnected):
        record.clear()
    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=LIMIT):
        yield


def _scope(length: int | None = None) -> dict[str, Any]:
    headers = [(b"content-length", str(length).encode())] if length is not None else []
    return {"type": "http", "method": "POST", "path": "/up/", "headers": headers}


async def test_a_body_within_the_limit_reaches_handle() -> None:
    response = await HttpCommunicator(
        Upload.as_asgi(), "POST", "/", body=b"x" * LIMIT
    ).get_response()
    assert (response["status"], response["body"]) == (200, str(LIMIT).encode())


async def test_chunks_past_the_limit_are_answered_413_before_the_body_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    comm = ApplicationCommunicator(Upload.as_asgi(), _scope())
    await comm.send_input({"type": "http.request", "body": b"x" * 600, "more_body": True})
    assert await comm.receive_nothing()
    await comm.send_input({"type": "http.request", "body": b"x" * 600, "more_body": True})
    # The request is still open (more_body=True), yet the answer is already there.
    start = await comm.receive_output()
    assert start["status"] == 413
    body = await comm.receive_output()
    assert b"the limit is 1000 bytes" in body["body"]
    await comm.wait()  # the consumer stopped: it reads nothing more
    assert Upload.handled == []
    assert Upload.buffered == [600, 0]  # the refused chunk was never kept, the rest dropped
    assert Upload.disconnected == [True]
    assert [r.getMessage() for r in caplog.records if r.name == "headrace.http"] == [
        'refused HTTP "POST" "/up/": request body over the 1000-byte limit'
    ]


async def test_a_declared_content_length_over_the_limit_is_refused_at_once() -> None:
    comm = ApplicationCommunicator(Upload.as_asgi(), _scope(length=10 * LIMIT))
    await comm.send_input({"type": "http.request", "body": b"", "more_body": True})
    assert (await comm.receive_output())["status"] == 413
    assert Upload.handled == []


async def test_the_limit_follows_data_upload_max_memory_size() -> None:
    body = b"x" * 5000
    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=5000):
        assert (await HttpCommunicator(Upload.as_asgi(), "POST", "/", body=body).get_response())[
            "status"
        ] == 200
    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=None):  # Django's "no limit"
        assert (
            await HttpCommunicator(Upload.as_asgi(), "POST", "/", body=body * 10).get_response()
        )["status"] == 200
    assert (await HttpCommunicator(Upload.as_asgi(), "POST", "/", body=body).get_response())[
        "status"
    ] == 413


async def test_consumers_set_their_own_limit_or_opt_out() -> None:
    big = b"x" * (3 * LIMIT)
    assert (await HttpCommunicator(Small.as_asgi(), "POST", "/", body=b"x" * 11).get_response())[
        "status"
    ] == 413
    assert (await HttpCommunicator(Streaming.as_asgi(), "POST", "/", body=big).get_response())[
        "body"
    ] == str(len(big)).encode()


# -- a real server, a client sending a large body in chunks ---------------------------------


@pytest.fixture
def server() -> Iterator[LiveServer]:
    app = ProtocolTypeRouter(
        {"http": URLRouter([path("up/", Upload.as_asgi()), path("stream/", Streaming.as_asgi())])}
    )
    with LiveServer(app) as live:
        yield live


async def _post_chunked(port: int, target: str, chunks: int, *, finish: bool) -> bytes:
    """POST ``chunks`` chunks of 64 KiB with chunked transfer encoding; send the final (empty)
    chunk that ends the request only if ``finish``. Returns the response's status line."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    )
    chunk = f"{CHUNK:x}\r\n".encode() + b"x" * CHUNK + b"\r\n"
    for _ in range(chunks):
        writer.write(chunk)
        await writer.drain()
    if finish:
        writer.write(b"0\r\n\r\n")
        await writer.drain()
    try:
        return await asyncio.wait_for(reader.readline(), 5)
    finally:
        writer.close()


CHUNK = 64 * 1024


@pytest.mark.slow
async def test_a_real_server_answers_413_while_the_client_is_still_sending(
    server: LiveServer,
) -> None:
    # 256 KiB sent of a body that has not ended: the server must answer now, not wait for
    # the rest (the old code buffered until the end, so this timed out).
    status = await _post_chunked(server.port, "/up/", 4, finish=False)
    assert status.startswith(b"HTTP/1.1 413")
    assert Upload.handled == []
    # The server never held more than the limit: the refused chunk was not kept.
    assert max(Upload.buffered) <= LIMIT


@pytest.mark.slow
async def test_a_streaming_consumer_still_gets_a_large_body_from_a_real_server(
    server: LiveServer,
) -> None:
    status = await _post_chunked(server.port, "/stream/", 8, finish=True)
    assert status.startswith(b"HTTP/1.1 200")
    assert Upload.handled == [8 * CHUNK]
