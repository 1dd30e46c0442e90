"""headrace.testing: communicators and the live-server test case."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
from websockets.sync.client import connect

from headrace.generic.http import AsyncHttpConsumer
from headrace.generic.websocket import AsyncWebsocketConsumer
from headrace.testing import (
    ApplicationCommunicator,
    ChannelsLiveServerTestCase,
    HttpCommunicator,
    WebsocketCommunicator,
)


class Streamer(AsyncHttpConsumer):
    async def handle(self, body: bytes) -> None:
        await self.send_headers(headers={b"content-type": b"text/plain"})
        await self.send_body(b"you sent: ", more_body=True)
        await self.send_body(body)


async def test_http_communicator_joins_streamed_body() -> None:
    response = await HttpCommunicator(
        Streamer.as_asgi(), "POST", "/x?y=1", body=b"abc"
    ).get_response()
    assert response == {
        "status": 200,
        "headers": [(b"content-type", b"text/plain")],
        "body": b"you sent: abc",
    }


async def test_http_consumer_failure_answers_500_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(AsyncHttpConsumer):
        async def handle(self, body: bytes) -> None:
            raise RuntimeError("kaput")

    comm = HttpCommunicator(Broken.as_asgi(), "GET", "/", raise_errors=False)
    response = await comm.get_response()
    assert response["status"] == 500
    assert "kaput" in caplog.text


async def test_http_consumer_collects_chunked_request_body() -> None:
    comm = ApplicationCommunicator(Streamer.as_asgi(), {"type": "http", "path": "/"})
    await comm.send_input({"type": "http.request", "body": b"one ", "more_body": True})
    await comm.send_input({"type": "http.request", "body": b"two", "more_body": False})
    await comm.receive_output()
    assert (await comm.receive_output())["body"] == b"you sent: "
    assert (await comm.receive_output())["body"] == b"one two"
    await comm.wait()


async def test_receive_nothing_and_then_something() -> None:
    class Quiet(AsyncWebsocketConsumer):
        async def receive(
            self, text_data: str | None = None, bytes_data: bytes | None = None
        ) -> None:
            await self.send(text_data="now")

    comm = WebsocketCommunicator(Quiet.as_asgi(), "/?q=1")
    assert comm.scope["query_string"] == b"q=1"
    await comm.connect()
    assert await comm.receive_nothing(timeout=0.01) is True
    await comm.send_to(text_data="speak")
    assert await comm.receive_from() == "now"
    await comm.disconnect()


async def test_wait_reraises_the_application_error() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise LookupError("from the app")

    with pytest.raises(LookupError, match="from the app"):
        await ApplicationCommunicator(app, {"type": "http"}).wait()


async def test_send_to_needs_exactly_one_payload() -> None:
    comm = WebsocketCommunicator(AsyncWebsocketConsumer.as_asgi(), "/")
    with pytest.raises(ValueError, match="exactly one"):
        await comm.send_to()
    with pytest.raises(ValueError, match="exactly one"):
        await comm.send_to(text_data="a", bytes_data=b"b")
    comm.stop()


@pytest.mark.slow
class TestLiveServerTestCase(ChannelsLiveServerTestCase):
    """The Channels-style live test case: uvicorn on a free port for the class."""

    def test_http_static_and_websocket(self) -> None:
        with urllib.request.urlopen(self.live_server_url + "/", timeout=5) as response:
            assert response.read() == b"chat index"
        with urllib.request.urlopen(
            self.live_server_url + "/static/chatapp/chat.css", timeout=5
        ) as response:
            assert b"teal" in response.read()
        origin = self.live_server_url
        url = self.live_server_ws_url + "/ws/chat/live/"
        with (
            connect(url, origin=origin, proxy=None) as one,
            connect(  # type: ignore[arg-type]
                url,
                origin=origin,
                proxy=None,  # type: ignore[arg-type]
            ) as two,
        ):
            one.send(json.dumps({"message": "from the test case"}))
            assert json.loads(two.recv(timeout=5)) == {"message": "from the test case"}
