"""The server's background tasks are supervised: one that dies is logged and runs again."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Iterator

import pytest

from headrace.layers import InMemoryChannelLayer, channel_layers
from headrace.server import Server, ServerOptions
from headrace.worker import Worker, run_embedded_workers
from tests.progrock.asgi import application

WAIT = 5  # seconds a test waits for something that should happen at once


async def no_requests(scope: object, receive: object, send: object) -> None:
    raise AssertionError("no requests in this test")


@pytest.fixture
def serve() -> Iterator[list[Server]]:
    servers: list[Server] = []
    yield servers
    for server in servers:
        server.stop()


def test_a_background_task_that_raises_is_logged_and_run_again(
    serve: list[Server], caplog: pytest.LogCaptureFixture
) -> None:
    runs = 0
    second_run = threading.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("the background task broke")
        second_run.set()
        await asyncio.Event().wait()

    caplog.set_level(logging.INFO, logger="headrace.server")
    server = Server(
        no_requests,  # type: ignore[arg-type]
        ServerOptions(port=0, log_level="warning", configure_logging=False),
        background=[flaky],
    )
    serve.append(server)
    server.start_in_thread()
    assert second_run.wait(WAIT)  # after the backoff pause (0.05 s), not never
    errors = [r for r in caplog.records if r.name == "headrace.server" and r.levelname == "ERROR"]
    assert len(errors) == 1
    assert "flaky" in errors[0].getMessage()
    assert "RuntimeError: the background task broke" in errors[0].getMessage()
    assert errors[0].exc_info is not None  # with its traceback


async def test_embedded_workers_that_fail_are_started_again(
    serve: list[Server], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    layer = InMemoryChannelLayer()
    channel_layers.set("default", layer)
    fill = Worker._fill
    failures = 1

    def broken_once(self: Worker) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise RuntimeError("the worker broke")
        fill(self)

    monkeypatch.setattr(Worker, "_fill", broken_once)
    caplog.set_level(logging.INFO, logger="headrace.server")
    server = Server(
        no_requests,  # type: ignore[arg-type]
        ServerOptions(port=0, log_level="warning", configure_logging=False),
        background=[functools.partial(run_embedded_workers, application)],
    )
    serve.append(server)
    try:
        await asyncio.to_thread(server.start_in_thread)
        await layer.send("noop", {"type": "job.run"})
        async with asyncio.timeout(WAIT):
            await layer.wait_delivered("noop")  # taken by the second worker
        assert layer.statistics().received == 1
    finally:
        await asyncio.to_thread(server.stop)
        channel_layers.reset()
    errors = [r for r in caplog.records if r.name == "headrace.server" and r.levelname == "ERROR"]
    assert len(errors) == 1
    assert "run_embedded_workers" in errors[0].getMessage()
    assert "RuntimeError: the worker broke" in errors[0].getMessage()
