"""headrace.compat.v1: the seed's Channels 1 ProgRock code runs with its import lines changed.

The code is in tests/progrock_v1/ (pasted from the seed; see the header of its consumers.py for
the lines the seed's text lost). The layer runs on a manual clock, so the seed's 200 ms steps
take no time: the test moves the clock once each delayed step is scheduled.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from headrace.compat.v1 import (
    V1_TYPE,
    Channel,
    Group,
    include,
    route,
    v1_application,
)
from headrace.exceptions import ConfigurationError
from headrace.layers import InMemoryChannelLayer, ManualClock, channel_layers, get_channel_layer
from headrace.testing import WebsocketCommunicator
from headrace.worker import Worker
from tests.progrock_v1.routing import channel_routing

EXPECTED = [{"progress": p} for p in range(0, 100, 3)] + [{"complete": True, "progress": 100}]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def layer(clock: ManualClock) -> AsyncIterator[InMemoryChannelLayer]:
    """The default layer of the process, on a manual clock (compat.v1 looks it up by alias)."""
    layer = InMemoryChannelLayer(clock=clock)
    channel_layers.set("default", layer)
    assert get_channel_layer() is layer
    yield layer
    await layer.flush()
    channel_layers.reset()


@pytest.fixture
async def worker(layer: InMemoryChannelLayer) -> AsyncIterator[Worker]:
    """A worker for prog-rocker and asgi.delay, as runworker (or runserver) would run."""
    worker = Worker(v1_application(channel_routing), ["prog-rocker", "asgi.delay"], layer=layer)
    running = asyncio.create_task(worker.run())
    yield worker
    worker.stop()
    await asyncio.wait_for(running, 10)


async def _next_step(layer: InMemoryChannelLayer, clock: ManualClock) -> None:
    """Once the worker has scheduled its next step (200 ms ahead), move the clock there."""
    await asyncio.wait_for(clock.wait_armed(), 10)
    assert layer.statistics().delayed_pending == 1
    clock.advance(0.2005)


async def test_the_seed_worker_body_runs_unchanged(
    layer: InMemoryChannelLayer, clock: ManualClock, worker: Worker
) -> None:
    reply = await layer.new_channel()
    await sync_to_async(Channel("prog-rocker").send)({"reply_channel": reply, "action": "start"})
    received = []
    while not received or "complete" not in received[-1]:
        message = await asyncio.wait_for(layer.receive(reply), 10)
        assert message["type"] == "websocket.send"
        received.append(json.loads(message["text"]))
        if "complete" not in received[-1]:
            await _next_step(layer, clock)
    assert received == EXPECTED
    assert worker.statistics().failed == 0


async def test_the_seed_progrock_over_a_websocket(
    layer: InMemoryChannelLayer, clock: ManualClock, worker: Worker
) -> None:
    comm = WebsocketCommunicator(v1_application(channel_routing), "/prog/")
    assert await comm.connect() == (True, None)  # ws_connect's text reply accepts
    assert await comm.receive_json_from() == {"accept": True}
    await comm.send_json_to({"action": "start"})
    received = []
    while not received or "complete" not in received[-1]:
        received.append(await comm.receive_json_from(timeout=10))
        if "complete" not in received[-1]:
            await _next_step(layer, clock)
    assert received == EXPECTED
    await comm.disconnect()


# -- the pieces ----------------------------------------------------------------------------------


async def test_group_add_send_discard(layer: InMemoryChannelLayer) -> None:
    one, two = await layer.new_channel(), await layer.new_channel()
    group = Group("watchers")
    await sync_to_async(group.add)(Channel(one))
    await sync_to_async(group.add)(two)
    await sync_to_async(group.send)({"text": "hello"})
    for name in (one, two):
        assert await layer.receive(name) == {"type": "websocket.send", "text": "hello"}
    await sync_to_async(group.discard)(two)
    await sync_to_async(group.send)({"text": "again"}, immediately=True)
    assert await layer.receive(one) == {"type": "websocket.send", "text": "again"}
    assert await layer.queue_length(two) == 0


async def test_typeless_messages_get_a_type_the_consumer_never_sees(
    layer: InMemoryChannelLayer,
) -> None:
    await sync_to_async(Channel("jobs").send)({"n": 1})
    assert await layer.receive("jobs") == {"type": V1_TYPE, "n": 1}
    await sync_to_async(Channel("jobs").send)({"type": "job.run", "n": 2})
    assert await layer.receive("jobs") == {"type": "job.run", "n": 2}  # typed: as sent
    reply = await layer.new_channel()
    await sync_to_async(Channel(reply).send)({"close": True})
    assert await layer.receive(reply) == {"type": "v1.reply", "close": True}
    delayed = {"channel": "jobs", "content": {"n": 3}, "delay": 0}
    await sync_to_async(Channel("asgi.delay").send)(delayed)
    assert (await layer.receive("asgi.delay"))["content"] == {"type": V1_TYPE, "n": 3}


async def test_function_consumers_get_path_kwargs_and_can_refuse(
    layer: InMemoryChannelLayer,
) -> None:
    seen: list[Any] = []

    def connect(message: Any, room: str) -> None:
        seen.append((room, message["path"], message.content["order"]))
        if room == "closed":
            message.reply_channel.send({"close": True})
        else:
            message.reply_channel.send({"accept": True})

    async def receive(message: Any, room: str) -> None:
        await layer.send(message.reply_channel.name, {"type": "websocket.send", "text": room})

    def disconnect(message: Any, room: str) -> None:
        seen.append(("gone", message["code"]))

    routing = [
        include(
            [
                route("websocket.connect", connect, path=r"^(?P<room>\w+)/$"),
                route("websocket.receive", receive, path=r"^(?P<room>\w+)/$"),
                route("websocket.disconnect", disconnect, path=r"^(?P<room>\w+)/$"),
            ],
            path=r"^/rooms/",
        )
    ]
    app = v1_application(routing)
    comm = WebsocketCommunicator(app, "/rooms/lobby/")
    assert await comm.connect() == (True, None)
    await comm.send_to(text_data="hi")
    assert await comm.receive_from() == "lobby"
    await comm.disconnect(code=1001)
    assert seen == [("lobby", "/rooms/lobby/", 0), ("gone", 1001)]
    refused = WebsocketCommunicator(app, "/rooms/closed/")
    assert await refused.connect() == (False, 1000)
    await refused.disconnect()


async def test_a_failing_function_consumer(
    layer: InMemoryChannelLayer, caplog: pytest.LogCaptureFixture
) -> None:
    def receive(message: Any) -> None:
        raise LookupError("v1 handler failed")

    app = v1_application([route("websocket.receive", receive)])
    comm = WebsocketCommunicator(app, "/")  # no connect route: accepted at once
    assert (await comm.connect())[0]
    await comm.send_to(text_data="x")
    with pytest.raises(LookupError, match="v1 handler failed"):
        await comm.receive_from()
    served = WebsocketCommunicator(app, "/", raise_errors=False)
    assert (await served.connect())[0]
    with caplog.at_level(logging.ERROR):
        await served.send_to(text_data="x")
        assert (await served.receive_close())[0] == 1011
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1
    await served.disconnect(code=1011)


def test_what_is_not_supported_says_what_to_write_instead() -> None:
    with pytest.raises(ConfigurationError, match="Django views"):
        route("http.request", print)
    with pytest.raises(ConfigurationError, match="only path="):
        route("websocket.connect", print, method="GET")
    with pytest.raises(ConfigurationError, match="path= is for WebSocket routes"):
        v1_application([route("jobs", print, path="^/x/")])
    with pytest.raises(ConfigurationError, match="cannot include"):
        v1_application([include("tests.nowhere.routing")])
