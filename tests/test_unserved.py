"""Routed background channels nobody serves: start-up warnings, the unread-channel watch, and
the layers' ``queue_length``."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import uuid
from typing import Any

import pytest

from headrace.exceptions import ConfigurationError
from headrace.layers import BaseChannelLayer, get_channel_layer
from headrace.management.commands.runserver import Command as Runserver
from headrace.management.commands.runworker import Command as Runworker
from headrace.unserved import (
    UnreadWatch,
    runworker_command,
    unread_warning_after,
    unserved_channels,
    watch_unread_channels,
)
from tests.progrock.processes import ROOT, kill, stop, wait_for_line
from tests.redis_servers import servers

PROGROCK = "tests.progrock.asgi.application"


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# -- the pure parts ------------------------------------------------------------------------------


def test_unserved_channels_and_the_command_that_serves_them() -> None:
    assert unserved_channels(["b", "a", "asgi.delay"], ["b"]) == ["a"]
    assert runworker_command(["a", "b"]) == "python manage.py runworker a b"
    assert runworker_command(["a"], "jobs") == "python manage.py runworker a --layer jobs"


def test_unread_watch_warns_once_per_stall() -> None:
    watch = UnreadWatch(after=10)
    assert not watch.observe("jobs", 2, now=0)
    assert not watch.observe("jobs", 3, now=9)  # more waiting, none taken: still one stall
    assert watch.observe("jobs", 3, now=10)
    assert watch.waited("jobs", 10) == 10
    assert not watch.observe("jobs", 5, now=20)  # said once
    assert not watch.observe("jobs", 4, now=21)  # someone took one: a new stall starts
    assert not watch.observe("jobs", 4, now=30)
    assert watch.observe("jobs", 4, now=31)
    assert not watch.observe("jobs", 0, now=32)  # emptied
    assert not watch.observe("jobs", 1, now=33)
    assert watch.observe("jobs", 1, now=43)
    assert not watch.observe("other", 1, now=43)


def test_the_warning_delay_setting(settings: Any) -> None:
    assert unread_warning_after() == 10.0
    settings.HEADRACE_UNREAD_CHANNEL_WARNING_AFTER = 0
    assert unread_warning_after() == 0.0
    settings.HEADRACE_UNREAD_CHANNEL_WARNING_AFTER = "soon"
    with pytest.raises(ConfigurationError, match="HEADRACE_UNREAD_CHANNEL_WARNING_AFTER"):
        unread_warning_after()


# -- queue_length on every layer -----------------------------------------------------------------


async def test_queue_length_counts_unread_messages(layer: BaseChannelLayer) -> None:
    queue_length: Any = layer.queue_length  # type: ignore[attr-defined]
    assert await queue_length("jobs") == 0
    for n in range(3):
        await layer.send("jobs", {"type": "job", "n": n})
    assert await queue_length("jobs") == 3
    assert (await layer.receive("jobs"))["n"] == 0
    assert await queue_length("jobs") == 2
    mine = await layer.new_channel()
    await layer.send(mine, {"type": "direct"})
    assert await queue_length(mine) == 1
    assert await queue_length("other") == 0
    with pytest.raises(TypeError):
        await queue_length("bad name")


# -- runserver -----------------------------------------------------------------------------------


def _redis_layers(request: pytest.FixtureRequest) -> dict[str, Any]:
    return {
        "default": {
            "BACKEND": "headrace.layers.redis.RedisChannelLayer",
            "CONFIG": {
                "hosts": [servers(request.config).standalone().url],
                "prefix": f"test-{uuid.uuid4().hex[:12]}",
            },
        }
    }


def test_runserver_with_embedded_workers_serves_every_routed_channel(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.ASGI_APPLICATION = PROGROCK
    tasks = Runserver().get_background_tasks()
    assert len(tasks) == 3  # the embedded workers, task workers and schedules
    assert _warnings(caplog) == []


def test_runserver_without_embedded_workers_on_memory_says_nobody_can_serve(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.ASGI_APPLICATION = PROGROCK
    settings.HEADRACE_EMBEDDED_WORKERS = False
    Runserver().get_background_tasks()
    [warning] = _warnings(caplog)
    assert "runserver does not serve the routed background channel(s) jobs, noop, prog-rocker" in (
        warning
    )
    assert "HEADRACE_EMBEDDED_WORKERS = True" in warning


def test_runserver_on_redis_names_the_runworker_command(
    settings: Any, caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest
) -> None:
    settings.ASGI_APPLICATION = PROGROCK
    settings.CHANNEL_LAYERS = _redis_layers(request)
    tasks = Runserver().get_background_tasks()
    [warning] = _warnings(caplog)
    assert "prog-rocker" in warning
    assert warning.endswith("python manage.py runworker jobs noop prog-rocker")
    # the embedded workers (which do nothing here), task workers, schedules and the watch
    assert len(tasks) == 4
    settings.HEADRACE_UNREAD_CHANNEL_WARNING_AFTER = 0
    assert len(Runserver().get_background_tasks()) == 3


# -- the unread-channel watch on Redis -----------------------------------------------------------


class _CountingLayer:
    """The real layer, counting ``queue_length`` calls so the test knows the watch has looked."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.looks = 0
        self.looked = asyncio.Event()
        self.wanted = 0

    async def queue_length(self, channel: str) -> int:
        length: int = await self.layer.queue_length(channel)
        self.looks += 1
        if self.looks >= self.wanted:
            self.looked.set()
        return length

    async def wait_looks(self, count: int) -> None:
        self.wanted = self.looks + count
        self.looked.clear()
        await asyncio.wait_for(self.looked.wait(), 10)


async def test_watch_warns_once_about_a_channel_nobody_reads(
    settings: Any, caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest
) -> None:
    settings.CHANNEL_LAYERS = _redis_layers(request)
    layer = get_channel_layer()
    counting = _CountingLayer(layer)
    watching = asyncio.create_task(
        watch_unread_channels(counting, ["prog-rocker", "idle"], after=0, interval=0.001)
    )
    try:
        await layer.send("prog-rocker", {"type": "start"})
        await counting.wait_looks(6)  # three passes over both channels
        assert _warnings(caplog) == [
            "channel 'prog-rocker' has 1 message(s) waiting for 0 s and none was taken: "
            "is a worker running? python manage.py runworker prog-rocker"
        ]
        await layer.receive("prog-rocker")  # a reader came: the stall is over
        await counting.wait_looks(4)
        await layer.send("prog-rocker", {"type": "start"})
        await counting.wait_looks(4)
        assert len(_warnings(caplog)) == 2  # a new stall, said once again
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
        await layer.flush()
        await layer.close()


async def test_watch_reports_a_failing_layer_once_and_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken:
        calls = 0
        enough = asyncio.Event()

        async def queue_length(self, channel: str) -> int:
            Broken.calls += 1
            if Broken.calls >= 5:
                Broken.enough.set()
            raise ConnectionError("redis is down")

    watching = asyncio.create_task(watch_unread_channels(Broken(), ["a"], after=1, interval=0))
    try:
        await asyncio.wait_for(Broken.enough.wait(), 10)
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
    [warning] = _warnings(caplog)
    assert "redis is down" in warning


# -- runworker -----------------------------------------------------------------------------------


def test_runworker_names_the_routed_channels_it_leaves_to_others(
    settings: Any, caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest
) -> None:
    settings.ASGI_APPLICATION = "tests.unserved_routing.application"
    settings.CHANNEL_LAYERS = _redis_layers(request)
    Runworker().warn_unserved(["thumbnails", "asgi.delay"], "default")
    [warning] = _warnings(caplog)
    assert "runworker does not serve the routed background channel(s) emails, prog-rocker" in (
        warning
    )
    assert warning.endswith("python manage.py runworker emails prog-rocker")
    caplog.clear()
    Runworker().warn_unserved(["thumbnails", "emails", "prog-rocker"], "default")
    assert _warnings(caplog) == []


@pytest.mark.slow
def test_runworker_on_the_in_memory_layer_warns_it_cannot_see_other_processes() -> None:
    process, line = start_command_reading_warning()
    try:
        assert "cannot see messages sent by any other process" in line
        wait_for_line(process, "worker reading")
        code, rest = stop(process, signal.SIGTERM)
    finally:
        kill(process)
    assert code == 0, rest


def start_command_reading_warning() -> tuple[Any, str]:
    """runworker prog-rocker on the ProgRock settings (in-memory layer): its warning line."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.progrock.settings"}
    env.pop("HEADRACE_TEST_REDIS_URL", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    process = subprocess.Popen(
        [sys.executable, "-m", "django", "runworker", "prog-rocker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    return process, wait_for_line(process, "in-memory layer")
