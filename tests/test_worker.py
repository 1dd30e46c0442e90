"""The worker on the in-memory layer: bounded concurrency, no hoarding, failures, graceful stop."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from headrace.consumer import AsyncConsumer, SyncConsumer
from headrace.delay import DELAY_CHANNEL
from headrace.exceptions import ConfigurationError
from headrace.layers import InMemoryChannelLayer, ManualClock, channel_layers
from headrace.routing import ChannelNameRouter, ProtocolTypeRouter
from headrace.server import log_websocket_connections
from headrace.worker import Worker, WorkerState, routed_channels

WAIT = 5  # seconds a test waits for something that should happen at once


class Recorder:
    """What the test consumers saw, and gates that hold their handlers."""

    def __init__(self) -> None:
        self.started: list[tuple[str, Any]] = []
        self.finished: list[Any] = []
        self.release = asyncio.Event()
        self.changed = asyncio.Event()
        self.thread_release = threading.Event()
        self.loop = asyncio.get_running_loop()

    def note(self, kind: str, value: Any) -> None:
        self.started.append((kind, value))
        self.changed.set()

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        """Until ``condition()`` holds: the test consumers set ``changed`` at each note.

        (The worker's own counters are waited on with its ``wait_...()`` hooks.)
        """
        async with asyncio.timeout(WAIT):
            while not condition():
                self.changed.clear()
                await self.changed.wait()


rec: Recorder


class Blocking(AsyncConsumer):
    async def job_run(self, message: dict[str, Any]) -> None:
        rec.note("async", message["n"])
        await rec.release.wait()
        rec.finished.append(message["n"])
        rec.changed.set()

    async def job_fail(self, message: dict[str, Any]) -> None:
        raise RuntimeError("boom")


class SyncBlocking(SyncConsumer):
    def job_run(self, message: dict[str, Any]) -> None:
        loop = rec.loop
        loop.call_soon_threadsafe(rec.note, "sync", message["n"])
        rec.thread_release.wait(WAIT)
        loop.call_soon_threadsafe(rec.finished.append, message["n"])
        loop.call_soon_threadsafe(rec.changed.set)


async def plain_app(scope: Any, receive: Callable[[], Awaitable[Any]], send: Any) -> None:
    message = await receive()
    rec.note("plain", (scope["channel"], message["n"]))


application = ProtocolTypeRouter(
    {
        "channel": ChannelNameRouter(
            {
                "jobs": Blocking.as_asgi(),
                "other": Blocking.as_asgi(),
                "sync-jobs": SyncBlocking.as_asgi(),
                "plain": plain_app,
            }
        )
    }
)


@pytest.fixture
async def layer() -> AsyncIterator[InMemoryChannelLayer]:
    """A fresh in-memory layer as the process's 'default' alias (consumers see it too)."""
    global rec
    rec = Recorder()
    fresh = InMemoryChannelLayer(capacity=1000)
    channel_layers.set("default", fresh)
    try:
        yield fresh
    finally:
        rec.release.set()
        rec.thread_release.set()
        await fresh.flush()
        channel_layers.reset()


@pytest.fixture
async def start() -> AsyncIterator[Callable[..., Awaitable[Worker]]]:
    """Start workers on the test's loop; stop them (and check they stopped) at the end."""
    running: list[tuple[Worker, asyncio.Task[None]]] = []

    async def start(channels: list[str], **options: Any) -> Worker:
        options.setdefault("shutdown_timeout", WAIT)
        worker = Worker(application, channels, **options)
        task = asyncio.create_task(worker.run())
        running.append((worker, task))
        async with asyncio.timeout(WAIT):
            await worker.wait_running()
        return worker

    yield start
    for worker, task in running:
        rec.release.set()
        rec.thread_release.set()
        worker.stop()
        async with asyncio.timeout(WAIT):
            await task
        assert worker.state is WorkerState.STOPPED


async def send_jobs(layer: InMemoryChannelLayer, channel: str, count: int) -> None:
    for n in range(count):
        await layer.send(channel, {"type": "job.run", "n": n})


async def test_async_handlers_run_concurrently_up_to_the_bound(layer, start) -> None:
    worker = await start(["jobs"], concurrency=3)
    await send_jobs(layer, "jobs", 5)
    await rec.wait_for(lambda: len(rec.started) == 3)
    # Three in hand, and the other two are still in the layer for other workers.
    assert worker.statistics().running == 3
    assert worker.statistics().received == 3
    assert await layer.receive("jobs") == {"type": "job.run", "n": 3}
    rec.release.set()
    async with asyncio.timeout(WAIT):
        await worker.wait_settled(4)
    assert worker.statistics().handled == 4
    assert sorted(rec.finished) == [0, 1, 2, 4]


async def test_sync_handlers_are_bounded_by_the_thread_limit(layer, start) -> None:
    worker = await start(["sync-jobs"], concurrency=10, sync_limit=2)
    await send_jobs(layer, "sync-jobs", 4)
    await rec.wait_for(lambda: len(rec.started) == 2)
    assert worker.statistics().received == 2
    rec.thread_release.set()
    await rec.wait_for(lambda: len(rec.finished) == 4)
    assert [kind for kind, _ in rec.started] == ["sync"] * 4


async def test_a_waiting_channel_does_not_starve_another_at_concurrency_one(layer, start) -> None:
    await start(["jobs", "plain"], concurrency=1)
    await layer.send("plain", {"type": "anything", "n": 7})
    await rec.wait_for(lambda: ("plain", ("plain", 7)) in rec.started)
    await layer.send("jobs", {"type": "job.run", "n": 1})
    await rec.wait_for(lambda: ("async", 1) in rec.started)
    # At the bound, the worker no longer waits on "plain": a message there stays in the layer.
    await layer.send("plain", {"type": "anything", "n": 8})
    assert await layer.receive("plain") == {"type": "anything", "n": 8}


async def test_a_raising_handler_is_logged_with_channel_and_type(layer, start, caplog) -> None:
    caplog.set_level(logging.ERROR)
    worker = await start(["jobs"])
    await layer.send("jobs", {"type": "job.fail"})
    await layer.send("jobs", {"type": "no.such.handler"})
    await layer.send("jobs", {"no": "type"})
    await layer.send("jobs", {"type": "job.run", "n": 1})
    rec.release.set()
    async with asyncio.timeout(WAIT):
        await worker.wait_settled(4)
    assert rec.finished == [1]
    stats = worker.statistics()
    assert (stats.failed, stats.dropped, stats.handled) == (2, 1, 1)
    worker_lines = [r.getMessage() for r in caplog.records if r.name == "headrace.worker"]
    assert any("'jobs'" in line and "'job.fail'" in line for line in worker_lines)
    assert any("'jobs'" in line and "'no.such.handler'" in line for line in worker_lines)
    assert any("'jobs'" in line and "without a 'type'" in line for line in worker_lines)


async def test_a_plain_asgi_function_that_raises_is_logged(layer, start, caplog) -> None:
    worker = await start(["plain"])
    await layer.send("plain", {"type": "x"})  # no "n": KeyError in the app
    await layer.send("plain", {"type": "x", "n": 2})
    async with asyncio.timeout(WAIT):
        await worker.wait_settled(2)
    assert rec.started == [("plain", ("plain", 2))]
    assert worker.statistics().failed == 1
    assert any(
        "'plain'" in r.getMessage() and "'x'" in r.getMessage() and r.exc_info
        for r in caplog.records
    )


async def test_stop_finishes_handlers_in_hand_and_takes_no_more(layer) -> None:
    worker = Worker(application, ["jobs"], concurrency=2, shutdown_timeout=WAIT)
    task = asyncio.create_task(worker.run())
    await send_jobs(layer, "jobs", 3)
    await rec.wait_for(lambda: len(rec.started) == 2)
    worker.stop()
    assert worker.state is WorkerState.STOPPING
    await asyncio.sleep(0)
    assert not task.done()  # waiting for the two in hand
    rec.release.set()
    async with asyncio.timeout(WAIT):
        await task
    assert sorted(rec.finished) == [0, 1]
    assert worker.state is WorkerState.STOPPED
    assert await layer.receive("jobs") == {"type": "job.run", "n": 2}  # never taken


async def test_stop_cancels_handlers_that_outlive_the_timeout(layer, caplog) -> None:
    worker = Worker(application, ["jobs"], shutdown_timeout=0)
    task = asyncio.create_task(worker.run())
    await send_jobs(layer, "jobs", 1)
    await rec.wait_for(lambda: len(rec.started) == 1)
    worker.stop()
    async with asyncio.timeout(WAIT):
        await task
    assert worker.statistics().cancelled == 1
    assert rec.finished == []
    assert any("did not finish" in r.getMessage() for r in caplog.records)


async def test_stop_now_cancels_at_once(layer) -> None:
    worker = Worker(application, ["jobs"], shutdown_timeout=WAIT)
    task = asyncio.create_task(worker.run())
    await send_jobs(layer, "jobs", 1)
    await rec.wait_for(lambda: len(rec.started) == 1)
    worker.stop(now=True)
    async with asyncio.timeout(WAIT):
        await task
    assert worker.statistics().cancelled == 1


async def test_stop_from_another_thread(layer) -> None:
    worker = Worker(application, ["jobs"])
    task = asyncio.create_task(worker.run())
    assert await asyncio.to_thread(worker.wait_started, WAIT)
    await asyncio.to_thread(worker.stop)
    async with asyncio.timeout(WAIT):
        await task
    assert worker.state is WorkerState.STOPPED


async def test_stop_before_run_makes_run_return_at_once(layer) -> None:
    worker = Worker(application, ["jobs"])
    worker.stop()
    async with asyncio.timeout(WAIT):
        await worker.run()
    assert worker.state is WorkerState.STOPPED


class FlakyLayer(InMemoryChannelLayer):
    """A real in-memory layer whose receives fail like a lost connection while ``down``."""

    def __init__(self, *, down: bool = True) -> None:
        super().__init__()
        self.down = down
        self.attempts = 0

    async def receive(self, channel: str) -> dict[str, Any]:
        self.attempts += 1
        if self.down:
            raise ConnectionError("connection reset")
        return await super().receive(channel)


async def test_an_outage_is_retried_on_the_clock_and_logged_once(layer, caplog) -> None:
    clock = ManualClock()
    flaky = FlakyLayer()
    worker = Worker(application, ["plain"], layer=flaky, clock=clock, concurrency=5)
    task = asyncio.create_task(worker.run())
    async with asyncio.timeout(WAIT):
        await clock.wait_armed()  # every receive failed; one of them sleeps the pause
        first_round = flaky.attempts
        assert first_round == 5  # one receive per free slot
        # The five retry together, once per pause, and the pause doubles per round:
        # 0.05 s, then 0.1 s (each ±10 %), not one step per failed receive.
        clock.advance(0.056)
        await clock.wait_armed()
        assert flaky.attempts >= first_round + 1
        second_round = flaky.attempts
        clock.advance(0.089)
        await asyncio.sleep(0)
        assert flaky.attempts == second_round
        clock.advance(0.022)
        await clock.wait_armed()
        assert flaky.attempts > second_round

        flaky.down = False
        await flaky.send("plain", {"type": "x", "n": 1})
        clock.advance(1)
        await rec.wait_for(lambda: len(rec.started) == 1)
    assert worker.statistics().outages == 1
    worker.stop()
    async with asyncio.timeout(WAIT):
        await task
    worker_lines = [r for r in caplog.records if r.name == "headrace.worker"]
    failures = [r.getMessage() for r in worker_lines if "failed" in r.getMessage()]
    assert failures == [
        "receiving on 'plain' failed (ConnectionError: connection reset); retrying with backoff"
    ]
    assert any("receiving on 'plain' works again" in r.getMessage() for r in worker_lines)


async def test_forwarding_delay_requests_rides_out_an_outage(layer, caplog) -> None:
    class FailingSends(InMemoryChannelLayer):
        failures = 2

        async def send(self, channel: str, message: dict[str, Any], **when: Any) -> None:
            if channel != DELAY_CHANNEL and self.failures:
                self.failures -= 1
                raise ConnectionError("write failed")
            await super().send(channel, message, **when)

    clock = ManualClock()
    failing = FailingSends()
    worker = Worker(None, [DELAY_CHANNEL], layer=failing, clock=clock)
    task = asyncio.create_task(worker.run())
    await failing.send(DELAY_CHANNEL, {"channel": "out", "content": {"n": 1}, "delay": 0})
    async with asyncio.timeout(WAIT):
        for _ in range(2):
            await clock.wait_armed()
            clock.advance(1)
        await worker.wait_settled(1)
        assert await failing.receive("out") == {"n": 1}
    assert worker.statistics().handled == 1
    assert worker.statistics().outages == 1
    worker.stop()
    async with asyncio.timeout(WAIT):
        await task
    failures = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert failures == [
        "forwarding a delay request failed (ConnectionError: write failed); retrying with backoff"
    ]


# -- waits --------------------------------------------------------------------------------------


async def test_wait_idle_waits_for_queued_messages_too(layer, start) -> None:
    worker = await start(["jobs"], concurrency=1)
    await send_jobs(layer, "jobs", 3)
    await rec.wait_for(lambda: len(rec.started) == 1)
    idle = asyncio.create_task(worker.wait_idle())
    await asyncio.sleep(0)
    assert not idle.done()  # one in hand
    rec.release.set()
    async with asyncio.timeout(WAIT):
        await idle  # not when the first is done: two more were queued for it
    assert worker.statistics().handled == 3
    assert sorted(rec.finished) == [0, 1, 2]


async def test_wait_idle_ignores_channels_the_worker_does_not_read(layer, start) -> None:
    worker = await start(["plain"])
    await layer.send("elsewhere", {"type": "x"})
    await layer.send("plain", {"type": "x", "n": 1})
    async with asyncio.timeout(WAIT):
        await worker.wait_idle()
    assert rec.started == [("plain", ("plain", 1))]


async def test_wait_running_settled_and_stopped(layer) -> None:
    worker = Worker(application, ["plain"])
    task = asyncio.create_task(worker.run())
    async with asyncio.timeout(WAIT):
        await worker.wait_running()
        assert worker.state is WorkerState.RUNNING
        for n in range(3):
            await layer.send("plain", {"type": "x", "n": n})
        await worker.wait_settled(3)
        assert worker.statistics().handled == 3
        worker.stop()
        await worker.wait_stopped()
    assert worker.state is WorkerState.STOPPED
    await task


def test_configuration_errors_are_clear() -> None:
    with pytest.raises(ConfigurationError, match=r"no route for channel .nope..*routes: jobs"):
        Worker(application, ["nope"])
    with pytest.raises(ConfigurationError, match="process-specific"):
        Worker(application, ["jobs!abc"])
    with pytest.raises(ConfigurationError, match="concurrency"):
        Worker(application, ["jobs"], concurrency=0)
    with pytest.raises(ConfigurationError, match="at least one channel"):
        Worker(application, [])
    with pytest.raises(ConfigurationError, match="needs an application"):
        Worker(None, ["jobs"])
    with pytest.raises(ConfigurationError, match="cannot serve channel"):
        Worker(application, ["bad name"])
    Worker(None, ["asgi.delay"])  # the delay channel needs no route


async def test_a_worker_runs_once(layer, start) -> None:
    worker = await start(["jobs"])
    with pytest.raises(RuntimeError, match="expected state NEW, got RUNNING"):
        await worker.run()


def test_routed_channels_are_found_through_routers_and_middleware() -> None:
    class Middleware:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

    assert routed_channels(application) == ["jobs", "other", "plain", "sync-jobs"]
    assert routed_channels(Middleware(application)) == ["jobs", "other", "plain", "sync-jobs"]
    assert routed_channels(log_websocket_connections(application)) == routed_channels(application)
    assert routed_channels(ProtocolTypeRouter({"websocket": plain_app})) == []
    assert routed_channels(plain_app) == []
