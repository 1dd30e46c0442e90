"""``manage.py runworker`` and ``rundelay``: arguments, errors, and a real process that stops
cleanly on SIGTERM and SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import uuid
from collections.abc import Awaitable, Callable

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from headrace.layers import ManualClock, get_channel_layer
from headrace.layers.redis import RedisChannelLayer
from headrace.management.commands.rundelay import sweep_due_messages
from tests.progrock.processes import start_command_reading, stop
from tests.redis_servers import free_port, servers

WAIT = 5  # seconds a test waits for something that should happen at once


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_runworker_stops_cleanly_on_a_signal(signum: int) -> None:
    process, reading = start_command_reading("runworker", "prog-rocker", "--concurrency", "4")
    assert "(concurrency 4, uvloop event loop)" in reading  # uvloop is installed: the default
    code, rest = stop(process, signum)
    assert code == 0, rest
    assert "stopping" in rest
    assert "worker stopped" in rest


@pytest.mark.slow
def test_runworker_runs_on_the_standard_loop_when_asked() -> None:
    process, reading = start_command_reading("runworker", "prog-rocker", "--loop", "asyncio")
    assert "asyncio event loop" in reading
    code, rest = stop(process, signal.SIGTERM)
    assert code == 0, rest


def test_runworker_refuses_an_unknown_event_loop() -> None:
    with pytest.raises(CommandError, match="invalid choice: 'trio'"):
        call_command("runworker", "prog-rocker", "--loop", "trio")


@pytest.mark.slow
def test_rundelay_runs_and_stops_cleanly() -> None:
    process, reading = start_command_reading("rundelay")
    assert "uvloop event loop" in reading
    code, rest = stop(process, signal.SIGTERM)
    assert code == 0, rest


@override_settings(ASGI_APPLICATION="tests.progrock.asgi.application")
def test_runworker_refuses_an_unrouted_channel() -> None:
    with pytest.raises(CommandError, match="no route for channel 'nowhere'"):
        call_command("runworker", "nowhere")


def test_runworker_refuses_an_unknown_layer() -> None:
    with pytest.raises(CommandError, match="no channel layer 'elsewhere'"):
        call_command("runworker", "asgi.delay", "--layer", "elsewhere")


def test_rundelay_refuses_an_unknown_layer() -> None:
    with pytest.raises(CommandError, match="no channel layer 'elsewhere'"):
        call_command("rundelay", "--layer", "elsewhere")


@pytest.mark.parametrize("interval", ["0", "-1", "nan", "inf"])
def test_rundelay_refuses_a_sweep_interval_that_is_not_positive(interval: str) -> None:
    with pytest.raises(
        CommandError, match=f"--sweep-interval must be a positive .* not {interval}"
    ):
        call_command("rundelay", "--sweep-interval", interval)


def test_runworker_reports_a_broken_layer_setting(settings) -> None:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "no.such.Layer"}}
    with pytest.raises(CommandError, match="cannot be imported"):
        call_command("runworker", "asgi.delay")


def test_runworker_needs_a_channel() -> None:
    with pytest.raises(CommandError, match="channels"):
        call_command("runworker")


class CountedSweeps:
    """Wraps a layer's ``move_due``: counts the calls, fails the first few on purpose."""

    def __init__(self, move_due: Callable[[], Awaitable[int]], fail: int = 0) -> None:
        self.move_due = move_due
        self.fail = fail
        self.calls = 0
        self.called = asyncio.Event()

    async def __call__(self) -> int:
        self.calls += 1
        self.called.set()
        if self.fail:
            self.fail -= 1
            raise RuntimeError("a bug in the sweep")
        return await self.move_due()

    async def wait_calls(self, clock: ManualClock, count: int) -> None:
        """Move the clock past each pause until ``count`` sweeps have run."""
        async with asyncio.timeout(WAIT):
            while self.calls < count:
                self.called.clear()
                await clock.wait_armed()  # the sweeper sleeps: a pause or the interval
                clock.advance(2.5)  # past any of them
                await self.called.wait()


async def test_rundelay_sweeper_reports_an_unreachable_redis_once_and_keeps_trying(
    settings, caplog
) -> None:
    port = free_port()  # nothing listens here
    settings.CHANNEL_LAYERS = {
        "gone": {
            "BACKEND": "headrace.layers.redis.RedisChannelLayer",
            "CONFIG": {"hosts": [f"redis://127.0.0.1:{port}/0"], "connect_timeout": 0.05},
        }
    }
    layer = get_channel_layer("gone")
    assert isinstance(layer, RedisChannelLayer)
    counted = CountedSweeps(layer.move_due)
    layer.move_due = counted  # type: ignore[method-assign]
    caplog.set_level(logging.INFO, logger="headrace.delay")
    clock = ManualClock()
    sweeper = asyncio.create_task(sweep_due_messages("gone", 0.01, clock=clock))
    try:
        await counted.wait_calls(clock, 3)
        assert not sweeper.done()  # still sweeping
    finally:
        sweeper.cancel()
        await asyncio.gather(sweeper, return_exceptions=True)
        await layer.close()
    warnings = [r.getMessage() for r in caplog.records if r.name == "headrace.delay"]
    assert len(warnings) == 1, warnings  # once per outage, not once per attempt
    assert "sweeping due delayed messages failed (LayerConnectionError:" in warnings[0]
    assert f"127.0.0.1:{port}" in warnings[0]


async def test_rundelay_sweeper_that_raises_is_logged_and_runs_again(
    settings, caplog, request: pytest.FixtureRequest
) -> None:
    settings.CHANNEL_LAYERS = {
        "sweep": {
            "BACKEND": "headrace.layers.redis.RedisChannelLayer",
            "CONFIG": {
                "hosts": [servers(request.config).standalone().url],
                "prefix": f"test-{uuid.uuid4().hex[:12]}",
            },
        }
    }
    layer = get_channel_layer("sweep")
    assert isinstance(layer, RedisChannelLayer)
    counted = CountedSweeps(layer.move_due, fail=2)
    layer.move_due = counted  # type: ignore[method-assign]
    clock = ManualClock()
    sweeper = asyncio.create_task(sweep_due_messages("sweep", 0.01, clock=clock))
    try:
        await counted.wait_calls(clock, 4)  # two failures, then sweeping again
        assert not sweeper.done()
    finally:
        sweeper.cancel()
        await asyncio.gather(sweeper, return_exceptions=True)
        await layer.close()
    errors = [r for r in caplog.records if r.name == "headrace.delay" and r.levelname == "ERROR"]
    assert len(errors) == 1  # once per outage, with its traceback
    assert "the delayed-message sweeper failed (RuntimeError: a bug in the sweep)" in (
        errors[0].getMessage()
    )
    assert errors[0].exc_info is not None
