"""The delay server: the old ``asgi.delay`` format, checked and forwarded (manual clock)."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest

from headrace.delay import DELAY_CHANNEL, DelayRequest, forward_delay_request, parse_delay_request
from headrace.exceptions import InvalidChannelName, InvalidDelay, InvalidMessage
from headrace.layers import InMemoryChannelLayer, ManualClock
from headrace.worker import Worker, WorkerState

WAIT = 5


def test_a_request_in_the_old_format_is_parsed() -> None:
    request = parse_delay_request(
        {"channel": "prog-rocker", "content": {"action": "go"}, "delay": 200}
    )
    assert request == DelayRequest(channel="prog-rocker", content={"action": "go"}, delay=0.2)
    assert parse_delay_request(
        {"type": "asgi.delay", "channel": "a!b", "content": {}, "delay": 0.5}
    ) == DelayRequest(channel="a!b", content={}, delay=0.0005)


@pytest.mark.parametrize(
    ("message", "error", "says"),
    [
        ("text", InvalidMessage, "must be a dict, got str"),
        ({"channel": "a", "content": {}}, InvalidMessage, "lacks 'delay'"),
        ({"content": {}, "delay": 1}, InvalidMessage, "lacks 'channel'"),
        ({"channel": "a", "content": {}, "delay": 1, "dealy": 2}, InvalidMessage, "unknown keys"),
        ({"channel": "a", "content": [1], "delay": 1}, InvalidMessage, "'content' must be a dict"),
        ({"channel": "a b", "content": {}, "delay": 1}, InvalidChannelName, "'a b'"),
        ({"channel": 5, "content": {}, "delay": 1}, InvalidChannelName, "must be a str"),
        ({"channel": "asgi.delay", "content": {}, "delay": 1}, InvalidMessage, "itself"),
        ({"channel": "a", "content": {}, "delay": "200"}, InvalidDelay, "number of millis"),
        ({"channel": "a", "content": {}, "delay": True}, InvalidDelay, "number of millis"),
        ({"channel": "a", "content": {}, "delay": -1}, InvalidDelay, "non-negative"),
        ({"channel": "a", "content": {}, "delay": math.nan}, InvalidDelay, "finite"),
        ({"channel": "a", "content": {}, "delay": math.inf}, InvalidDelay, "finite"),
    ],
)
def test_a_bad_request_says_what_is_wrong(message: object, error: type, says: str) -> None:
    with pytest.raises(error, match=says):
        parse_delay_request(message)


@pytest.fixture
async def layer(clock: ManualClock) -> AsyncIterator[InMemoryChannelLayer]:
    fresh = InMemoryChannelLayer(clock=clock)
    yield fresh
    await fresh.flush()
    await fresh.close()


async def receive_now(layer: InMemoryChannelLayer, channel: str) -> dict[str, Any] | None:
    """The next message on ``channel`` if one is there, else None (never waits on time)."""
    task = asyncio.ensure_future(layer.receive(channel))
    for _ in range(5):
        await asyncio.sleep(0)
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return None


async def test_forwarding_delivers_the_content_after_the_delay(layer, clock) -> None:
    content = {"type": "prog.rock", "progress": 3}
    assert await forward_delay_request(
        layer, {"channel": "prog-rocker", "content": content, "delay": 200}
    )
    clock.advance(0.199)
    assert await receive_now(layer, "prog-rocker") is None
    clock.advance(0.002)  # (not 0.001: the epoch-second clock is a float)
    assert await receive_now(layer, "prog-rocker") == content


async def test_forwarding_a_bad_request_logs_and_drops_it(layer, caplog) -> None:
    assert not await forward_delay_request(layer, {"channel": "x", "delay": 5})
    assert not await forward_delay_request(
        layer, {"channel": "x", "content": {"v": {1, 2}}, "delay": 5}
    )
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "lacks 'content'" in messages[0]
    assert "asgi.delay" in messages[1]
    assert layer.statistics().delayed == 0


async def test_a_worker_on_asgi_delay_forwards_and_survives_bad_requests(layer, clock) -> None:
    worker = Worker(None, [DELAY_CHANNEL], layer=layer)
    task = asyncio.create_task(worker.run())
    await layer.send(DELAY_CHANNEL, {"channel": "out", "content": {"n": 1}, "delay": 1000})
    await layer.send(DELAY_CHANNEL, {"channel": "out", "content": {"n": 2}, "delay": "soon"})
    await layer.send(DELAY_CHANNEL, {"channel": "out", "content": {"n": 3}, "delay": 10})
    async with asyncio.timeout(WAIT):
        await worker.wait_settled(3)
    assert worker.statistics().dropped == 1
    clock.advance(0.01)
    assert await receive_now(layer, "out") == {"n": 3}
    assert await receive_now(layer, "out") is None
    clock.advance(0.991)
    assert await receive_now(layer, "out") == {"n": 1}
    worker.stop()
    async with asyncio.timeout(WAIT):
        await task
    assert worker.state is WorkerState.STOPPED


async def test_several_delay_servers_deliver_each_request_once(layer, clock) -> None:
    workers = [Worker(None, [DELAY_CHANNEL], layer=layer, concurrency=2) for _ in range(3)]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    for n in range(60):
        await layer.send(DELAY_CHANNEL, {"channel": "out", "content": {"n": n}, "delay": 50})
    async with asyncio.timeout(WAIT):
        await asyncio.gather(*(w.wait_idle() for w in workers))
    assert sum(w.statistics().handled for w in workers) == 60
    clock.advance(0.05)
    got = []
    while (message := await receive_now(layer, "out")) is not None:
        got.append(message["n"])
    assert sorted(got) == list(range(60))
    for worker in workers:
        worker.stop()
    async with asyncio.timeout(WAIT):
        await asyncio.gather(*tasks)
