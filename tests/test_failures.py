"""A consumer handler's exception reaches the test driving it; a server logs it once instead.

Under headrace's communicators and asgiref's ``ApplicationCommunicator`` the exception is raised
from the call the test is waiting in (no timeout); over a real server the failure is logged once
and only that connection ends (see :mod:`headrace.failures`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request
from typing import Any

import pytest
from asgiref.testing import ApplicationCommunicator as AsgirefCommunicator
from django.urls import path
from websockets.exceptions import ConnectionClosed

from headrace.failures import RAISE_ERRORS_EXTENSION, errors_reach_caller
from headrace.generic.http import AsyncHttpConsumer
from headrace.generic.websocket import (
    AsyncJsonWebsocketConsumer,
    AsyncWebsocketConsumer,
    JsonWebsocketConsumer,
    WebsocketConsumer,
)
from headrace.layers import get_channel_layer
from headrace.routing import ProtocolTypeRouter, URLRouter
from headrace.testing import HttpCommunicator, LiveServer, WebsocketCommunicator
from tests.conftest_consumers import ws_connect


class Kaput(Exception):
    """What every consumer below raises (never caught by anything but the test)."""


class AsyncText(AsyncWebsocketConsumer):
    groups = ["failing-text"]

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data == "boom":
            raise Kaput("async text handler")
        await self.send(text_data=f"echo:{text_data}")

    async def chat_message(self, event: dict[str, Any]) -> None:
        raise Kaput("async layer handler")


class SyncText(WebsocketConsumer):
    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data == "boom":
            raise Kaput("sync text handler")
        self.send(text_data=f"echo:{text_data}")


class AsyncJson(AsyncJsonWebsocketConsumer):
    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if content == "boom":
            raise Kaput("async json handler")
        await self.send_json({"echo": content})


class SyncJson(JsonWebsocketConsumer):
    def receive_json(self, content: Any, **kwargs: Any) -> None:
        if content == "boom":
            raise Kaput("sync json handler")
        self.send_json({"echo": content})


class FailingPage(AsyncHttpConsumer):
    async def handle(self, body: bytes) -> None:
        if body == b"boom" or self.scope["path"].endswith("/boom/"):
            raise Kaput("http handler")
        await self.send_response(200, b"fine")


WEBSOCKET_CONSUMERS = [AsyncText, SyncText, AsyncJson, SyncJson]


def _boom_frame(consumer: type) -> str:
    return json.dumps("boom") if "Json" in consumer.__name__ else "boom"


# -- headrace's communicators ------------------------------------------------------------------


@pytest.mark.parametrize("consumer", WEBSOCKET_CONSUMERS)
async def test_websocket_handler_error_is_raised_from_receive_from(consumer: Any) -> None:
    comm = WebsocketCommunicator(consumer.as_asgi(), "/")
    assert (await comm.connect())[0]
    await comm.send_to(text_data=_boom_frame(consumer))
    with pytest.raises(Kaput, match="handler"):
        await comm.receive_from(timeout=30)  # raised when the consumer stops, not after 30 s
    with pytest.raises(Kaput):
        await comm.wait()


async def test_json_handler_error_is_raised_from_receive_json_from() -> None:
    comm = WebsocketCommunicator(AsyncJson.as_asgi(), "/")
    await comm.connect()
    await comm.send_json_to("boom")
    with pytest.raises(Kaput, match="async json handler"):
        await comm.receive_json_from(timeout=30)


async def test_layer_message_handler_error_is_raised_to_the_test() -> None:
    comm = WebsocketCommunicator(AsyncText.as_asgi(), "/")
    await comm.connect()
    await get_channel_layer().group_send("failing-text", {"type": "chat.message"})
    with pytest.raises(Kaput, match="async layer handler"):
        await comm.receive_from(timeout=30)


async def test_connect_error_is_raised_from_connect() -> None:
    class Refuses(AsyncWebsocketConsumer):
        async def connect(self) -> None:
            raise Kaput("in connect")

    with pytest.raises(Kaput, match="in connect"):
        await WebsocketCommunicator(Refuses.as_asgi(), "/").connect(timeout=30)


@pytest.mark.parametrize("routed", [False, True])
async def test_http_handler_error_is_raised_from_get_response(
    routed: bool, caplog: pytest.LogCaptureFixture
) -> None:
    app: Any = FailingPage.as_asgi()
    if routed:
        app = ProtocolTypeRouter({"http": URLRouter([path("page/", app)])})
    comm = HttpCommunicator(app, "POST", "/page/", body=b"boom")
    with pytest.raises(Kaput, match="http handler"):
        await comm.get_response(timeout=30)
    assert "http handler" not in caplog.text  # the test has it; nothing else reports it


async def test_bad_frames_are_still_answered_with_their_close_code() -> None:
    comm = WebsocketCommunicator(AsyncJson.as_asgi(), "/")
    await comm.connect()
    await comm.send_to(text_data="{not json")
    assert (await comm.receive_close())[0] == 1007
    await comm.disconnect(code=1007)


async def test_raise_errors_false_shows_what_a_client_gets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    comm = WebsocketCommunicator(AsyncText.as_asgi(), "/", raise_errors=False)
    await comm.connect()
    await comm.send_to(text_data="boom")
    assert (await comm.receive_close())[0] == 1011
    await comm.disconnect(code=1011)
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1
    response = await HttpCommunicator(
        FailingPage.as_asgi(), "POST", "/", body=b"boom", raise_errors=False
    ).get_response()
    assert response["status"] == 500


# -- asgiref's (and so Channels') ApplicationCommunicator -------------------------------------


def _websocket_scope() -> dict[str, Any]:
    return {"type": "websocket", "path": "/", "headers": [], "subprotocols": []}


@pytest.mark.parametrize("consumer", WEBSOCKET_CONSUMERS)
async def test_asgiref_communicator_gets_the_websocket_handler_error(consumer: Any) -> None:
    comm = AsgirefCommunicator(consumer.as_asgi(), _websocket_scope())
    await comm.send_input({"type": "websocket.connect"})
    assert (await comm.receive_output())["type"] == "websocket.accept"
    await comm.send_input({"type": "websocket.receive", "text": _boom_frame(consumer)})
    with pytest.raises(Kaput, match="handler"):
        await comm.wait(timeout=30)
    with pytest.raises(Kaput, match="handler"):
        await comm.receive_output()


async def test_asgiref_communicator_gets_the_http_handler_error() -> None:
    comm = AsgirefCommunicator(FailingPage.as_asgi(), {"type": "http", "path": "/boom/"})
    await comm.send_input({"type": "http.request", "body": b""})
    with pytest.raises(Kaput, match="http handler"):
        await comm.wait(timeout=30)
    with pytest.raises(Kaput, match="http handler"):
        await comm.receive_output()


def test_who_gets_the_error() -> None:
    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def server_receive() -> Any: ...

    async def server_send(message: Any) -> None: ...

    assert errors_reach_caller({"extensions": {RAISE_ERRORS_EXTENSION: {}}}, *(None,) * 2)  # type: ignore[arg-type]
    assert errors_reach_caller({}, queue.get, queue.put)
    # A server: its own callables, or a queue for input only (as Daphne does).
    assert not errors_reach_caller({}, server_receive, server_send)
    assert not errors_reach_caller({}, queue.get, server_send)
    assert not errors_reach_caller({"extensions": {"websocket.http.response": {}}}, *(None,) * 2)  # type: ignore[arg-type]


# -- a real server ----------------------------------------------------------------------------


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.slow
async def test_over_a_real_server_it_is_logged_once_and_ends_only_that_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = ProtocolTypeRouter(
        {
            "websocket": URLRouter([path("ws/", AsyncText.as_asgi())]),
            "http": URLRouter([path("page/<str:what>/", FailingPage.as_asgi())]),
        }
    )
    with caplog.at_level(logging.INFO), LiveServer(app) as server:
        async with ws_connect(f"{server.ws_url}/ws/") as bystander:
            async with ws_connect(f"{server.ws_url}/ws/") as ws:
                await ws.send("boom")
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == 1011
            await bystander.send("still here")
            assert await bystander.recv() == "echo:still here"
        assert await asyncio.to_thread(_status, f"{server.url}/page/boom/") == 500
        assert await asyncio.to_thread(_status, f"{server.url}/page/fine/") == 200
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.exc_info[1].args[0] for r in errors if r.exc_info and r.exc_info[1]] == [
        "async text handler",
        "http handler",
    ]
    assert len(errors) == 2, [r.getMessage() for r in errors]
    assert "Exception in ASGI application" not in caplog.text
