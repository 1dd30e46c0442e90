"""Embedded workers: what ``runserver`` runs beside the server with the in-memory layer."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from headrace.layers import InMemoryChannelLayer, channel_layers
from headrace.worker import (
    WorkerState,
    embedded_workers,
    embedded_workers_enabled,
    run_embedded_workers,
)
from tests.progrock.asgi import application

WAIT = 5


@pytest.fixture
def memory_layer() -> Iterator[InMemoryChannelLayer]:
    layer = InMemoryChannelLayer()
    channel_layers.set("default", layer)
    yield layer
    channel_layers.reset()


async def test_embedded_workers_serve_the_routed_channels_and_asgi_delay(memory_layer) -> None:
    async with embedded_workers(application) as worker:
        assert worker.channels == ["jobs", "noop", "prog-rocker", "asgi.delay"]
        await memory_layer.send(
            "asgi.delay", {"channel": "noop", "content": {"type": "job.run"}, "delay": 0}
        )
        async with asyncio.timeout(WAIT):
            await worker.wait_settled(2)  # the delay request, then the job
        assert worker.statistics().handled == 2
    assert worker.state is WorkerState.STOPPED


async def test_an_embedded_block_that_ends_at_once_stops_its_worker(memory_layer) -> None:
    async with asyncio.timeout(WAIT):
        async with embedded_workers(application) as worker:
            pass
    assert worker.state is WorkerState.STOPPED


def test_embedded_workers_are_on_by_default_with_the_in_memory_layer(
    memory_layer, settings
) -> None:
    assert embedded_workers_enabled()
    settings.HEADRACE_EMBEDDED_WORKERS = False
    assert not embedded_workers_enabled()


def test_embedded_workers_need_a_configured_layer() -> None:
    assert not embedded_workers_enabled("missing")


def test_embedded_workers_are_off_with_a_layer_other_processes_share(settings) -> None:
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "headrace.layers.redis.RedisChannelLayer",
            "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]},  # made, never connected
        }
    }
    assert not embedded_workers_enabled()


async def test_run_embedded_workers_does_nothing_when_switched_off(settings: Any) -> None:
    settings.HEADRACE_EMBEDDED_WORKERS = False
    async with asyncio.timeout(WAIT):
        await run_embedded_workers(application)  # returns at once instead of serving


async def test_run_embedded_workers_serves_until_cancelled(memory_layer) -> None:
    task = asyncio.create_task(run_embedded_workers(application))
    await memory_layer.send("noop", {"type": "job.run"})
    async with asyncio.timeout(WAIT):
        await memory_layer.wait_delivered("noop")
    assert memory_layer.statistics().received == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
