"""Consumers driven in-process by the communicators: dispatch, lifecycle, groups, bad input."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest
from django.test import override_settings

from headrace.consumer import AsyncConsumer, SyncConsumer
from headrace.exceptions import AcceptConnection, DenyConnection, StopConsumer
from headrace.generic.websocket import (
    AsyncJsonWebsocketConsumer,
    AsyncWebsocketConsumer,
    JsonWebsocketConsumer,
    WebsocketConsumer,
)
from headrace.layers import get_channel_layer
from headrace.testing import ApplicationCommunicator, WebsocketCommunicator


@pytest.fixture(autouse=True)
async def fresh_layer() -> None:
    layer = get_channel_layer()
    assert layer is not None
    await layer.flush()


class Echo(AsyncWebsocketConsumer):
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is not None:
            await self.send(text_data=text_data.upper())
        else:
            await self.send(bytes_data=bytes_data)


class SyncEcho(WebsocketConsumer):
    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        self.send(text_data=f"{text_data}|{threading.current_thread().name}")


async def test_async_websocket_echo_text_and_bytes() -> None:
    comm = WebsocketCommunicator(Echo.as_asgi(), "/")
    assert await comm.connect() == (True, None)
    await comm.send_to(text_data="hello")
    assert await comm.receive_from() == "HELLO"
    await comm.send_to(bytes_data=b"\x00\x01")
    assert await comm.receive_from() == b"\x00\x01"
    await comm.disconnect()


async def test_sync_websocket_runs_on_the_handler_pool_not_the_loop() -> None:
    comm = WebsocketCommunicator(SyncEcho.as_asgi(), "/")
    assert (await comm.connect())[0]
    await comm.send_to(text_data="a")
    text, thread = str(await comm.receive_from()).split("|")
    assert text == "a"
    assert thread.startswith("headrace-sync")
    await comm.disconnect()


async def test_sync_handlers_of_different_connections_run_in_parallel() -> None:
    """Two connections block in their handlers at the same time: no single global thread."""
    barrier = threading.Barrier(2, timeout=5)

    class Meet(WebsocketConsumer):
        def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
            barrier.wait()  # deadlocks (and times out) if handlers were serialized
            self.send(text_data="met")

    one = WebsocketCommunicator(Meet.as_asgi(), "/")
    two = WebsocketCommunicator(Meet.as_asgi(), "/")
    assert (await one.connect())[0]
    assert (await two.connect())[0]
    await one.send_to(text_data="x")
    await two.send_to(text_data="x")
    assert await one.receive_from(timeout=5) == "met"
    assert await two.receive_from(timeout=5) == "met"
    await one.disconnect()
    await two.disconnect()


async def test_sync_handlers_of_one_connection_stay_in_order() -> None:
    class Ordered(WebsocketConsumer):
        def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
            self.send(text_data=text_data)

    comm = WebsocketCommunicator(Ordered.as_asgi(), "/")
    assert (await comm.connect())[0]
    for i in range(30):
        await comm.send_to(text_data=str(i))
    assert [await comm.receive_from() for _ in range(30)] == [str(i) for i in range(30)]
    await comm.disconnect()


async def test_sync_handler_overrides_can_call_super_as_in_channels() -> None:
    """The sync twin's handlers are plain functions: a ``def`` override may call ``super()``."""
    threads: list[str] = []

    class Overriding(WebsocketConsumer):
        def websocket_receive(self, message: Any) -> None:
            threads.append(threading.current_thread().name)
            super().websocket_receive(message)

        def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
            self.send(text_data=f"{text_data}!")

    comm = WebsocketCommunicator(Overriding.as_asgi(), "/")
    assert (await comm.connect())[0]
    await comm.send_to(text_data="hi")
    assert await comm.receive_from() == "hi!"
    await comm.disconnect()
    assert threads[0].startswith("headrace-sync")


@pytest.mark.parametrize("consumer_base", [AsyncWebsocketConsumer, WebsocketConsumer])
async def test_accept_with_subprotocol_and_headers(consumer_base: Any) -> None:
    if consumer_base is AsyncWebsocketConsumer:

        class C(AsyncWebsocketConsumer):
            async def connect(self) -> None:
                await self.accept("chat.v2", headers=[(b"x-room", b"lobby")])
    else:

        class C(WebsocketConsumer):  # type: ignore[no-redef]
            def connect(self) -> None:
                self.accept("chat.v2", headers=[(b"x-room", b"lobby")])

    comm = WebsocketCommunicator(C.as_asgi(), "/", subprotocols=["chat.v2"])
    assert await comm.connect() == (True, "chat.v2")
    assert comm.response_headers == [(b"x-room", b"lobby")]
    await comm.disconnect()


async def test_deny_and_accept_connection_signals() -> None:
    class Denied(AsyncWebsocketConsumer):
        async def connect(self) -> None:
            raise DenyConnection

    class Accepted(AsyncWebsocketConsumer):
        async def connect(self) -> None:
            raise AcceptConnection

    denied = WebsocketCommunicator(Denied.as_asgi(), "/")
    assert await denied.connect() == (False, 1000)
    await denied.disconnect(code=1006)
    accepted = WebsocketCommunicator(Accepted.as_asgi(), "/")
    assert await accepted.connect() == (True, None)
    await accepted.disconnect()


async def test_close_with_code_and_reason_and_send_close() -> None:
    class Closer(AsyncWebsocketConsumer):
        async def receive(
            self, text_data: str | None = None, bytes_data: bytes | None = None
        ) -> None:
            if text_data == "bye":
                await self.send(text_data="bye!", close=4001)
            else:
                await self.close(code=4000, reason="done")

    comm = WebsocketCommunicator(Closer.as_asgi(), "/")
    await comm.connect()
    await comm.send_to(text_data="bye")
    assert await comm.receive_from() == "bye!"
    assert await comm.receive_close() == (4001, "")
    await comm.disconnect()
    comm = WebsocketCommunicator(Closer.as_asgi(), "/")
    await comm.connect()
    await comm.send_to(text_data="x")
    assert await comm.receive_close() == (4000, "done")
    await comm.disconnect()


async def test_groups_attribute_joins_on_connect_and_leaves_on_disconnect() -> None:
    class Member(AsyncWebsocketConsumer):
        groups = ["news"]

        async def news_item(self, event: dict[str, Any]) -> None:
            await self.send(text_data=event["text"])

    layer = get_channel_layer()
    comm = WebsocketCommunicator(Member.as_asgi(), "/")
    assert (await comm.connect())[0]
    assert layer.statistics().groups == 1
    await layer.group_send("news", {"type": "news.item", "text": "extra!"})
    assert await comm.receive_from() == "extra!"
    await comm.disconnect()
    assert layer.statistics().groups == 0


async def test_sync_consumer_receives_group_messages() -> None:
    class SyncMember(WebsocketConsumer):
        groups = ["sync-news"]

        def news_item(self, event: dict[str, Any]) -> None:
            self.send(text_data=event["text"])

    layer = get_channel_layer()
    comm = WebsocketCommunicator(SyncMember.as_asgi(), "/")
    assert (await comm.connect())[0]
    await layer.group_send("sync-news", {"type": "news.item", "text": "sync extra"})
    assert await comm.receive_from() == "sync extra"
    await comm.disconnect()


async def test_websocket_send_event_is_forwarded_as_is() -> None:
    """The broadcast fast path: a pre-encoded frame sent through the layer needs no handler."""
    layer = get_channel_layer()
    comm = WebsocketCommunicator(AsyncWebsocketConsumer.as_asgi(groups=["fast"]), "/")
    assert (await comm.connect())[0]
    await layer.group_send("fast", {"type": "websocket.send", "text": '{"n": 1}'})
    assert await comm.receive_from() == '{"n": 1}'
    await comm.disconnect()


async def test_as_asgi_sets_initkwargs_and_rejects_unknown_names() -> None:
    class Greeter(AsyncWebsocketConsumer):
        greeting = "hello"

        async def connect(self) -> None:
            await self.accept()
            await self.send(text_data=self.greeting)

    app = Greeter.as_asgi(greeting="bonjour")
    assert app.consumer_class is Greeter  # type: ignore[attr-defined]
    assert app.consumer_initkwargs == {"greeting": "bonjour"}  # type: ignore[attr-defined]
    comm = WebsocketCommunicator(app, "/")
    await comm.connect()
    assert await comm.receive_from() == "bonjour"
    await comm.disconnect()
    with pytest.raises(TypeError, match="greting"):
        Greeter.as_asgi(greting="typo")


async def test_json_consumers_round_trip() -> None:
    class AsyncJ(AsyncJsonWebsocketConsumer):
        async def receive_json(self, content: Any, **kwargs: Any) -> None:
            await self.send_json({"got": content})

    class SyncJ(JsonWebsocketConsumer):
        def receive_json(self, content: Any, **kwargs: Any) -> None:
            self.send_json({"got": content})

    for cls in (AsyncJ, SyncJ):
        comm = WebsocketCommunicator(cls.as_asgi(), "/")
        await comm.connect()
        await comm.send_json_to({"a": [1, 2]})
        assert await comm.receive_json_from() == {"got": {"a": [1, 2]}}
        await comm.disconnect()


# -- bad input: each closes only its own connection, with a documented code -------------------


class JsonEcho(AsyncJsonWebsocketConsumer):
    groups = ["json-echo"]
    disconnected: list[int] = []

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if content == "boom":
            raise RuntimeError("handler blew up")
        await self.send_json(content)

    async def disconnect(self, code: int) -> None:
        JsonEcho.disconnected.append(code)


class SyncJsonEcho(JsonWebsocketConsumer):
    def receive_json(self, content: Any, **kwargs: Any) -> None:
        if content == "boom":
            raise RuntimeError("sync handler blew up")
        self.send_json(content)


async def _bystander() -> WebsocketCommunicator:
    comm = WebsocketCommunicator(JsonEcho.as_asgi(), "/")
    assert (await comm.connect())[0]
    return comm


async def _still_served(bystander: WebsocketCommunicator) -> None:
    await bystander.send_json_to([1])
    assert await bystander.receive_json_from() == [1]


@pytest.mark.parametrize("cls", [JsonEcho, SyncJsonEcho])
@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"text_data": "{not json"}, 1007),
        ({"text_data": ""}, 1007),
        ({"text_data": "[" * 100_000 + "]" * 100_000}, 1007),  # nested too deep, under 1 MiB
        ({"bytes_data": b'{"a": 1}'}, 1003),
        ({"text_data": '"boom"'}, 1011),
    ],
)
async def test_bad_frames_close_only_that_connection(
    cls: Any, frame: dict[str, Any], code: int, caplog: pytest.LogCaptureFixture
) -> None:
    bystander = await _bystander()
    comm = WebsocketCommunicator(cls.as_asgi(), "/")
    assert (await comm.connect())[0]
    with caplog.at_level(logging.WARNING, logger="headrace"):
        if "text_data" in frame and frame["text_data"] == "":
            await comm.send_input({"type": "websocket.receive", "text": ""})
        else:
            await comm.send_to(**frame)
        closed_code, _ = await comm.receive_close()
    assert closed_code == code
    assert len([r for r in caplog.records if r.name.startswith("headrace")]) == 1
    await comm.disconnect(code=code)
    await _still_served(bystander)
    await bystander.disconnect()


async def test_handler_failure_still_runs_disconnect_and_leaves_groups() -> None:
    JsonEcho.disconnected.clear()
    layer = get_channel_layer()
    comm = WebsocketCommunicator(JsonEcho.as_asgi(), "/")
    await comm.connect()
    await comm.send_json_to("boom")
    assert (await comm.receive_close())[0] == 1011
    # Layer messages to a failed connection are dropped, not dispatched.
    await layer.group_send("json-echo", {"type": "websocket.send", "text": "late"})
    await comm.disconnect(code=1011)
    assert JsonEcho.disconnected == [1011]
    bystander = await _bystander()
    await layer.group_send("json-echo", {"type": "websocket.send", "text": "only you"})
    assert await bystander.receive_from() == "only you"
    await bystander.disconnect()


async def test_unknown_message_type_closes_with_1011(caplog: pytest.LogCaptureFixture) -> None:
    layer = get_channel_layer()
    comm = WebsocketCommunicator(AsyncWebsocketConsumer.as_asgi(groups=["typo"]), "/")
    await comm.connect()
    with caplog.at_level(logging.ERROR, logger="headrace"):
        await layer.group_send("typo", {"type": "chat.mesage", "text": "x"})
        assert (await comm.receive_close())[0] == 1011
    assert "chat.mesage" in caplog.text
    await comm.disconnect(code=1011)


async def test_failure_before_accept_refuses_the_handshake() -> None:
    class Broken(AsyncWebsocketConsumer):
        async def connect(self) -> None:
            raise KeyError("no such room")

    comm = WebsocketCommunicator(Broken.as_asgi(), "/")
    assert await comm.connect() == (False, 1000)
    await comm.disconnect(code=1006)


@override_settings(HEADRACE_WEBSOCKET_MAX_MESSAGE_SIZE=8)
@pytest.mark.parametrize("payload", [{"text_data": "123456789"}, {"bytes_data": b"123456789"}])
async def test_oversize_message_closes_with_1009(payload: dict[str, Any]) -> None:
    bystander = await _bystander()
    comm = WebsocketCommunicator(Echo.as_asgi(), "/")
    await comm.connect()
    await comm.send_to(text_data="12345678")
    assert await comm.receive_from() == "12345678"
    await comm.send_to(**payload)
    assert (await comm.receive_close())[0] == 1009
    await comm.disconnect(code=1009)
    await _still_served(bystander)
    await bystander.disconnect()


@override_settings(HEADRACE_WEBSOCKET_MAX_MESSAGE_SIZE=8)
async def test_multibyte_text_is_measured_in_bytes() -> None:
    comm = WebsocketCommunicator(Echo.as_asgi(), "/")
    await comm.connect()
    await comm.send_to(text_data="ééé")  # 3 characters, 6 bytes: allowed
    assert await comm.receive_from() == "ÉÉÉ"
    await comm.send_to(text_data="éééé€")  # 5 characters, 11 bytes
    assert (await comm.receive_close())[0] == 1009
    await comm.disconnect(code=1009)


@override_settings(HEADRACE_WEBSOCKET_HANDSHAKE_TIMEOUT=0.05)
async def test_connect_that_never_answers_is_refused() -> None:
    never = asyncio.Event()

    class Stuck(AsyncWebsocketConsumer):
        async def connect(self) -> None:
            await never.wait()

    comm = WebsocketCommunicator(Stuck.as_asgi(), "/")
    assert await comm.connect() == (False, 1000)
    await comm.disconnect(code=1006)


# -- the generic consumers -------------------------------------------------------------------


async def test_async_consumer_dispatches_by_type_and_stops() -> None:
    seen: list[str] = []

    class Raw(AsyncConsumer):
        async def websocket_connect(self, message: Any) -> None:
            seen.append("connect")
            await self.send({"type": "websocket.accept"})

        async def websocket_disconnect(self, message: Any) -> None:
            seen.append("disconnect")
            raise StopConsumer

    comm = ApplicationCommunicator(Raw.as_asgi(), {"type": "websocket", "path": "/"})
    await comm.send_input({"type": "websocket.connect"})
    assert (await comm.receive_output())["type"] == "websocket.accept"
    await comm.send_input({"type": "websocket.disconnect", "code": 1000})
    await comm.wait()
    assert seen == ["connect", "disconnect"]


async def test_sync_consumer_send_from_a_thread() -> None:
    class Worker(SyncConsumer):
        def job_run(self, message: Any) -> None:
            self.send({"type": "job.done", "id": message["id"]})
            raise StopConsumer

    comm = ApplicationCommunicator(Worker.as_asgi(), {"type": "channel", "channel": "jobs"})
    await comm.send_input({"type": "job.run", "id": 7})
    assert await comm.receive_output() == {"type": "job.done", "id": 7}
    await comm.wait()


async def test_consumer_without_a_layer_alias_gets_none() -> None:
    class NoLayer(AsyncWebsocketConsumer):
        channel_layer_alias = "nonexistent"

        async def connect(self) -> None:
            await self.accept()
            await self.send(text_data=repr(self.channel_layer))

    comm = WebsocketCommunicator(NoLayer.as_asgi(), "/")
    await comm.connect()
    assert await comm.receive_from() == "None"
    await comm.disconnect()


async def test_groups_without_a_layer_is_a_clear_error() -> None:
    class NoLayer(AsyncWebsocketConsumer):
        channel_layer_alias = "nonexistent"
        groups = ["g"]

    comm = WebsocketCommunicator(NoLayer.as_asgi(), "/")
    assert await comm.connect() == (False, 1000)
    await comm.disconnect(code=1006)


# -- the broadcast fast path -----------------------------------------------------------------


async def test_shared_json_payload_is_encoded_once_per_group_send() -> None:
    encoded: list[Any] = []

    class Feed(AsyncJsonWebsocketConsumer):
        groups = ["feed"]

        @classmethod
        async def encode_json(cls, content: Any) -> str:
            encoded.append(content)
            return await super().encode_json(content)

        async def feed_item(self, event: dict[str, Any]) -> None:
            await self.send_json(event["payload"])  # shared: encoded once
            await self.send_json({"echo": event["payload"]["n"]})  # per member: not shared

    layer = get_channel_layer()
    members = [WebsocketCommunicator(Feed.as_asgi(), "/") for _ in range(3)]
    for member in members:
        assert (await member.connect())[0]
    for n in (1, 2):
        encoded.clear()
        await layer.group_send("feed", {"type": "feed.item", "payload": {"n": n, "tags": ["a"]}})
        for member in members:
            assert await member.receive_json_from() == {"n": n, "tags": ["a"]}
            assert await member.receive_json_from() == {"echo": n}
        shared = [c for c in encoded if "tags" in c]
        assert len(shared) == 1, "the shared payload is encoded once for all members"
        assert len(encoded) == 1 + len(members)
    for member in members:
        await member.disconnect()


async def test_send_json_of_a_mutated_object_is_never_stale() -> None:
    class Stateful(AsyncJsonWebsocketConsumer):
        async def receive_json(self, content: Any, **kwargs: Any) -> None:
            state = {"n": 1}
            await self.send_json(state)
            state["n"] = 2
            await self.send_json(state)

    comm = WebsocketCommunicator(Stateful.as_asgi(), "/")
    await comm.connect()
    await comm.send_json_to({})
    assert [await comm.receive_json_from() for _ in range(2)] == [{"n": 1}, {"n": 2}]
    await comm.disconnect()


# -- the outbox: a client that stops reading ---------------------------------------------------


class GatedSend:
    """An ASGI send that blocks until opened, like a server whose client stopped reading."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.sent: list[dict[str, Any]] = []
        self.all_sent = asyncio.Event()
        self.expect = 0

    async def __call__(self, message: Any) -> None:
        if message.get("text") != "fast":
            await self.gate.wait()
        self.sent.append(dict(message))
        if len(self.sent) >= self.expect:
            self.all_sent.set()


def _frame(text: str) -> dict[str, Any]:
    return {"type": "websocket.send", "text": text}


async def test_outbox_drop_oldest_keeps_the_newest_frames() -> None:
    from headrace.generic.outbox import Outbox

    send = GatedSend()
    send.expect = 4
    outbox = Outbox(send, limit=2, policy="drop-oldest")
    await outbox.send(_frame("fast"))  # written at once
    for text in ("1", "2", "3", "4"):
        await outbox.send(_frame(text))  # "1" is stuck in flight; "2" is dropped
    assert outbox.pending == 2
    assert outbox.dropped == 1
    send.gate.set()
    await asyncio.wait_for(send.all_sent.wait(), 5)
    assert [m["text"] for m in send.sent] == ["fast", "1", "3", "4"]


async def test_outbox_close_policy_abandons_the_backlog_and_closes_1013() -> None:
    from headrace.generic.outbox import Outbox

    send = GatedSend()
    send.expect = 1
    outbox = Outbox(send, limit=2, policy="close")
    for text in ("1", "2", "3", "4", "5"):
        await outbox.send(_frame(text))
    assert outbox.closed
    await outbox.send(_frame("after close"))  # discarded quietly
    send.gate.set()
    await asyncio.wait_for(send.all_sent.wait(), 5)
    assert send.sent == [{"type": "websocket.close", "code": 1013, "reason": "client too slow"}]


@override_settings(HEADRACE_WEBSOCKET_HANDSHAKE_TIMEOUT=0.05)
async def test_sync_connect_that_never_answers_is_refused() -> None:
    release = threading.Event()

    class StuckSync(WebsocketConsumer):
        def connect(self) -> None:
            release.wait(5)
            self.accept()  # too late: discarded, the handshake was already refused

    comm = WebsocketCommunicator(StuckSync.as_asgi(), "/")
    assert await comm.connect() == (False, 1000)
    release.set()
    await comm.disconnect(code=1006)
