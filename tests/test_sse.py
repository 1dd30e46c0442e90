"""Server-sent events: the stream format, ids and Last-Event-ID, keep-alives, groups."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from django.urls import path

from headrace.generic.sse import AsyncSseConsumer, format_event
from headrace.layers import get_channel_layer
from headrace.routing import URLRouter
from headrace.testing import ApplicationCommunicator, LiveServer


@pytest.fixture(autouse=True)
async def fresh_layer() -> None:
    await get_channel_layer().flush()


def _scope(headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {"type": "http", "method": "GET", "path": "/events/", "headers": headers or []}


class News(AsyncSseConsumer):
    groups = ["news"]
    keepalive_interval = None
    retry = 2000

    async def connect(self) -> None:
        await self.accept()
        if self.last_event_id is not None:
            await self.send_event(f"replay after {self.last_event_id}", event="replay")

    async def news_posted(self, event: dict[str, Any]) -> None:
        await self.send_event(event["title"], id=event["id"], event="news")


async def _open(
    consumer: Any, headers: list[tuple[bytes, bytes]] | None = None, *, raise_errors: bool = True
) -> ApplicationCommunicator:
    comm = ApplicationCommunicator(consumer.as_asgi(), _scope(headers), raise_errors=raise_errors)
    await comm.send_input({"type": "http.request", "body": b""})
    start = await comm.receive_output()
    assert start["type"] == "http.response.start"
    assert start["status"] == 200
    assert (b"content-type", b"text/event-stream; charset=utf-8") in start["headers"]
    return comm


async def _chunk(comm: ApplicationCommunicator) -> bytes:
    message = await comm.receive_output()
    assert message["type"] == "http.response.body"
    assert message["more_body"] is True
    body: bytes = message["body"]
    return body


def test_format_event() -> None:
    assert format_event("hi") == b"data: hi\n\n"
    assert format_event("a\nb", event="up", id=7) == b"event: up\nid: 7\ndata: a\ndata: b\n\n"
    assert format_event(retry=1500) == b"retry: 1500\n\n"
    assert format_event(comment="ping") == b": ping\n\n"
    with pytest.raises(ValueError, match="line break"):
        format_event("x", id="1\n2")
    with pytest.raises(ValueError, match="line break"):
        format_event("x", event="a\rb")


async def test_stream_opens_with_retry_and_carries_group_events() -> None:
    comm = await _open(News)
    assert await _chunk(comm) == b"retry: 2000\n\n"
    layer = get_channel_layer()
    await layer.group_send("news", {"type": "news.posted", "title": "Hello", "id": 1})
    assert await _chunk(comm) == b"event: news\nid: 1\ndata: Hello\n\n"
    await layer.group_send("news", {"type": "sse.event", "data": "raw", "id": "2"})
    assert await _chunk(comm) == b"id: 2\ndata: raw\n\n"
    await comm.send_input({"type": "http.disconnect"})
    await comm.wait()
    assert layer.statistics().groups == 0


async def test_last_event_id_lets_the_consumer_replay() -> None:
    comm = await _open(News, headers=[(b"last-event-id", b"41")])
    assert await _chunk(comm) == b"retry: 2000\n\n"
    assert await _chunk(comm) == b"event: replay\ndata: replay after 41\n\n"
    await comm.send_input({"type": "http.disconnect"})
    await comm.wait()


async def test_keepalive_comment_when_idle() -> None:
    class Quiet(AsyncSseConsumer):
        keepalive_interval = 0.01

    comm = await _open(Quiet)
    assert await _chunk(comm) == b": open\n\n"
    assert await _chunk(comm) == b": keep-alive\n\n"
    await comm.send_input({"type": "http.disconnect"})
    await comm.wait()


async def test_subscribe_and_unsubscribe_at_run_time() -> None:
    class Picky(AsyncSseConsumer):
        keepalive_interval = None

        async def connect(self) -> None:
            await self.accept()
            await self.subscribe("alpha")

        async def pick_other(self, event: dict[str, Any]) -> None:
            await self.unsubscribe("alpha")
            await self.subscribe("beta")
            await self.send_event("switched")

    comm = await _open(Picky)
    await _chunk(comm)
    layer = get_channel_layer()
    await layer.group_send("alpha", {"type": "sse.event", "data": "a1"})
    assert await _chunk(comm) == b"data: a1\n\n"
    await layer.group_send("alpha", {"type": "pick.other"})
    assert await _chunk(comm) == b"data: switched\n\n"
    await layer.group_send("alpha", {"type": "sse.event", "data": "lost"})
    await layer.group_send("beta", {"type": "sse.event", "data": "b1"})
    assert await _chunk(comm) == b"data: b1\n\n"
    await comm.send_input({"type": "http.disconnect"})
    await comm.wait()


async def test_deny_and_refuse_by_default() -> None:
    class Denied(AsyncSseConsumer):
        async def connect(self) -> None:
            await self.deny(401, b"log in first")

    class Silent(AsyncSseConsumer):
        async def connect(self) -> None:
            pass

    for consumer, status in ((Denied, 401), (Silent, 403)):
        comm = ApplicationCommunicator(consumer.as_asgi(), _scope())
        await comm.send_input({"type": "http.request", "body": b""})
        assert (await comm.receive_output())["status"] == status
        assert (await comm.receive_output()).get("more_body", False) is False
        await comm.wait()


async def test_handler_failure_ends_only_that_stream(caplog: pytest.LogCaptureFixture) -> None:
    class Fragile(AsyncSseConsumer):
        groups = ["fragile"]
        keepalive_interval = None

        async def explode(self, event: dict[str, Any]) -> None:
            raise RuntimeError("stream handler failed")

    comm = await _open(Fragile, raise_errors=False)  # as under a server
    other = await _open(Fragile, raise_errors=False)
    await _chunk(comm)
    await _chunk(other)
    layer = get_channel_layer()
    await layer.group_send("fragile", {"type": "explode"})
    for stream in (comm, other):
        end = await stream.receive_output()
        assert end["more_body"] is False
        await stream.wait()
    assert "stream handler failed" in caplog.text


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
async def test_event_stream_over_a_real_socket() -> None:
    app = URLRouter([path("events/", News.as_asgi())])
    with LiveServer(app) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /events/ HTTP/1.1\r\nHost: 127.0.0.1\r\nLast-Event-ID: 9\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")
        assert b"text/event-stream" in head
        body = b""
        while b"replay after 9" not in body:
            body += await asyncio.wait_for(reader.read(4096), 5)
        layer = get_channel_layer()
        await layer.group_send("news", {"type": "news.posted", "title": "Live", "id": 10})
        while b"data: Live" not in body:
            body += await asyncio.wait_for(reader.read(4096), 5)
        assert b"event: news\nid: 10\ndata: Live\n\n" in body
        writer.close()
        await writer.wait_closed()
