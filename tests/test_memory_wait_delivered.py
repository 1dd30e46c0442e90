"""The in-memory layer's ``wait_delivered()``: what tests wait on instead of polling."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from headrace.exceptions import InvalidChannelName
from headrace.layers import InMemoryChannelLayer

WAIT = 5  # seconds a test waits for something that should happen at once


async def test_returns_at_once_when_nothing_is_queued() -> None:
    layer = InMemoryChannelLayer()
    async with asyncio.timeout(WAIT):
        await layer.wait_delivered()
        await layer.wait_delivered("anything")


async def test_waits_until_the_named_channels_are_read() -> None:
    layer = InMemoryChannelLayer()
    await layer.send("a", {"type": "x"})
    await layer.send("unread", {"type": "x"})
    waiting = asyncio.create_task(layer.wait_delivered("a"))
    await asyncio.sleep(0)
    assert not waiting.done()
    assert await layer.receive("a") == {"type": "x"}
    async with asyncio.timeout(WAIT):
        await waiting  # "unread" is not its business
    everything = asyncio.create_task(layer.wait_delivered())
    await asyncio.sleep(0)
    assert not everything.done()
    await layer.flush()  # flushed counts as gone
    async with asyncio.timeout(WAIT):
        await everything


async def test_a_message_handed_to_a_waiting_reader_counts_once_its_receive_returns() -> None:
    layer = InMemoryChannelLayer()
    got: list[dict[str, Any]] = []

    async def read() -> None:
        got.append(await layer.receive("c"))

    reader = asyncio.create_task(read())
    await asyncio.sleep(0)  # the reader waits in the layer
    await layer.send("c", {"type": "x"})  # handed straight to it: nothing is queued
    async with asyncio.timeout(WAIT):
        await layer.wait_delivered("c")
    assert got == [{"type": "x"}]  # the reader has it, not merely the layer's hand-over
    await reader


async def test_a_hand_over_taken_back_by_a_cancel_is_queued_again() -> None:
    layer = InMemoryChannelLayer()
    reader = asyncio.create_task(layer.receive("c"))
    await asyncio.sleep(0)
    await layer.send("c", {"type": "x"})
    reader.cancel()  # cancelled as the message arrived: the layer puts it back
    with pytest.raises(asyncio.CancelledError):
        await reader
    waiting = asyncio.create_task(layer.wait_delivered("c"))
    await asyncio.sleep(0)
    assert not waiting.done()
    assert await layer.receive("c") == {"type": "x"}
    async with asyncio.timeout(WAIT):
        await waiting


async def test_waits_from_another_thread_and_loop() -> None:
    layer = InMemoryChannelLayer()
    await layer.send("c", {"type": "x"})
    started = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def wait_elsewhere() -> None:
        waiting = asyncio.create_task(layer.wait_delivered("c"))
        await asyncio.sleep(0)
        loop.call_soon_threadsafe(started.set)
        await asyncio.wait_for(waiting, WAIT)

    other = asyncio.create_task(asyncio.to_thread(asyncio.run, wait_elsewhere()))
    await asyncio.wait_for(started.wait(), WAIT)
    assert not other.done()
    assert await layer.receive("c") == {"type": "x"}
    await asyncio.wait_for(other, WAIT)


async def test_a_bad_channel_name_is_refused() -> None:
    with pytest.raises(InvalidChannelName):
        await InMemoryChannelLayer().wait_delivered("bad name")
