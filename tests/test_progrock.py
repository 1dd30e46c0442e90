"""ProgRock end to end: a real WebSocket client, a live uvicorn server, the prog-rocker worker
re-scheduling itself through ``asgi.delay``.

In memory, the workers run embedded in the server's process (what ``runserver`` does). The
Redis version, with the worker in a separate ``runworker`` process, is in
``test_progrock_redis.py``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.asyncio.client import connect

from headrace.layers import InMemoryChannelLayer, channel_layers
from headrace.server import Server, ServerOptions
from headrace.worker import run_embedded_workers
from tests.progrock.asgi import application

WAIT = 10


@pytest.fixture
def memory_layer() -> Iterator[InMemoryChannelLayer]:
    layer = InMemoryChannelLayer()
    channel_layers.set("default", layer)
    yield layer
    channel_layers.reset()


@pytest.fixture
def embedded_server(memory_layer: InMemoryChannelLayer) -> Iterator[Server]:
    """uvicorn serving ProgRock, with its workers embedded (as ``runserver`` runs them)."""
    options = ServerOptions(port=0, log_level="warning", access_log=False, configure_logging=False)
    server = Server(application, options, background=[lambda: run_embedded_workers(application)])
    server.start_in_thread()
    yield server
    server.stop()


async def rock_out(ws_url: str) -> tuple[float, list[dict[str, Any]]]:
    """Click "Rock Out": every message the page gets until complete, and how long it took."""
    received: list[dict[str, Any]] = []
    async with connect(f"{ws_url}/prog/", proxy=None, open_timeout=WAIT) as ws:
        assert json.loads(await ws.recv()) == {"accept": True}
        started = time.monotonic()
        await ws.send(json.dumps({"action": "start"}))
        async with asyncio.timeout(WAIT):
            while True:
                data = json.loads(await ws.recv())
                received.append(data)
                if data.get("complete"):
                    return time.monotonic() - started, received


def expected_updates(step: int) -> list[dict[str, Any]]:
    return [{"progress": p} for p in range(0, 100, step)] + [{"complete": True, "progress": 100}]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("delay_ms", "step"),
    [
        (20, 3),  # the seed's +3, every 20 ms: the whole sequence quickly
        (200, 34),  # the seed's 200 ms interval, in bigger steps: 3 re-schedules
    ],
)
async def test_progrock_in_memory(
    embedded_server: Server, settings: Any, delay_ms: int, step: int
) -> None:
    settings.PROGROCK_DELAY_MS = delay_ms
    settings.PROGROCK_STEP = step
    took, received = await rock_out(embedded_server.ws_url)
    assert received == expected_updates(step)
    # The delay server never delivers early, so the job cannot end before every re-schedule's
    # interval has passed (a causal lower bound, not a benchmark).
    assert took >= (len(received) - 1) * delay_ms / 1000


@pytest.mark.slow
async def test_two_pages_rock_out_at_once(embedded_server: Server, settings: Any) -> None:
    settings.PROGROCK_DELAY_MS = 10
    settings.PROGROCK_STEP = 10
    first, second = await asyncio.gather(
        rock_out(embedded_server.ws_url), rock_out(embedded_server.ws_url)
    )
    assert first[1] == second[1] == expected_updates(10)
