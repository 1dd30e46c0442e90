"""The CHANNEL_LAYERS registry and the in-memory layer's behaviour across loops and threads."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from asgiref.sync import async_to_sync
from django.test import override_settings

from headrace import exceptions
from headrace.layers import (
    BaseChannelLayer,
    InMemoryChannelLayer,
    channel_layers,
    get_channel_layer,
)
from headrace.layers.base import LayerStatistics


class PerLoopLayer(InMemoryChannelLayer):
    """A backend that is not process-wide, to check per-loop instances."""

    process_wide = False


@pytest.fixture(autouse=True)
def fresh_registry() -> Iterator[None]:
    channel_layers.reset()
    yield
    channel_layers.reset()


def test_default_alias_gives_the_configured_layer() -> None:
    layer = get_channel_layer()
    assert isinstance(layer, InMemoryChannelLayer)
    assert get_channel_layer("default") is layer


def test_unknown_alias_gives_none() -> None:
    assert get_channel_layer("nope") is None
    assert "nope" not in channel_layers
    assert "default" in channel_layers


def test_in_memory_layer_is_shared_by_every_loop() -> None:
    async def which() -> BaseChannelLayer | None:
        return get_channel_layer()

    assert asyncio.run(which()) is asyncio.run(which()) is get_channel_layer()


@override_settings(CHANNEL_LAYERS={"default": {"BACKEND": f"{__name__}.PerLoopLayer"}})
def test_other_layers_are_made_once_per_loop() -> None:
    async def twice() -> tuple[BaseChannelLayer | None, BaseChannelLayer | None]:
        return get_channel_layer(), get_channel_layer()

    first, again = asyncio.run(twice())
    other, _ = asyncio.run(twice())
    assert first is again
    assert first is not other
    assert get_channel_layer() is get_channel_layer()  # outside any loop: one as well


@override_settings(
    CHANNEL_LAYERS={
        "default": {
            "BACKEND": "headrace.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": 7},
            "TEST_CONFIG": {"capacity": 3},
        }
    }
)
def test_config_and_test_config() -> None:
    assert get_channel_layer().capacity == 7  # type: ignore[union-attr]
    assert channel_layers.make_test_backend("default").capacity == 3


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ({}, r"CHANNEL_LAYERS\['default'\] has no BACKEND"),
        ({"BACKEND": "no.such.Module"}, r"\['BACKEND'\] = 'no.such.Module' cannot be imported"),
        ({"BACKEND": "headrace.layers.__doc__"}, "is not a class"),
        (
            {"BACKEND": "headrace.layers.InMemoryChannelLayer", "CONFIG": {"hosts": ["x"]}},
            r"CHANNEL_LAYERS\['default'\]\['CONFIG'\] has unknown CONFIG keys: hosts",
        ),
        (
            {"BACKEND": "headrace.layers.InMemoryChannelLayer", "CONFIG": {"expiry": -5}},
            r"\['CONFIG'\]\['expiry'\] must be a positive number of seconds, got -5",
        ),
        (
            {"BACKEND": "headrace.layers.InMemoryChannelLayer", "CONFIG": ["capacity"]},
            r"\['CONFIG'\] must be a dict, got list",
        ),
        ("headrace.layers.InMemoryChannelLayer", "must be a dict, got str"),
    ],
)
def test_bad_settings_say_what_is_wrong(entry: object, says: str) -> None:
    with (
        override_settings(CHANNEL_LAYERS={"default": entry}),
        pytest.raises(exceptions.ConfigurationError, match=says) as raised,
    ):
        get_channel_layer()
    from django.core.exceptions import ImproperlyConfigured

    assert isinstance(raised.value, ImproperlyConfigured)


def test_channel_layers_must_be_a_dict() -> None:
    with (
        override_settings(CHANNEL_LAYERS=["default"]),
        pytest.raises(exceptions.ConfigurationError, match="CHANNEL_LAYERS must be a dict"),
    ):
        get_channel_layer()


def test_set_replaces_a_layer() -> None:
    replacement = InMemoryChannelLayer(capacity=2)
    channel_layers.set("default", replacement)
    assert get_channel_layer() is replacement


# -- the in-memory layer across threads and loops -----------------------------------------------


async def test_sync_code_in_another_thread_reaches_a_receiver_on_this_loop() -> None:
    """What a post_save handler does: async_to_sync(group_send) from a sync thread."""
    layer = InMemoryChannelLayer()
    channel = await layer.new_channel()
    await layer.group_add("posts", channel)
    waiting = asyncio.create_task(layer.receive(channel))
    await asyncio.sleep(0)

    def save_post() -> None:
        async_to_sync(layer.group_send)("posts", {"type": "post.saved", "id": 7})

    thread = threading.Thread(target=save_post)
    thread.start()
    assert await asyncio.wait_for(waiting, 5) == {"type": "post.saved", "id": 7}
    await asyncio.to_thread(thread.join)


async def test_hand_over_to_a_receiver_that_left_requeues_the_message() -> None:
    layer = InMemoryChannelLayer()
    waiting = asyncio.create_task(layer.receive("c"))
    await asyncio.sleep(0)

    def send_then_cancel() -> None:
        async_to_sync(layer.send)("c", {"type": "kept"})

    # The send runs on another loop, so the hand-over is scheduled onto this loop. Joining
    # the thread without yielding keeps this loop from running it until the receiver is
    # cancelled.
    thread = threading.Thread(target=send_then_cancel)
    thread.start()
    thread.join(5)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await asyncio.wait_for(layer.receive("c"), 5) == {"type": "kept"}


def test_delayed_send_from_a_finished_loop_is_still_delivered() -> None:
    layer = InMemoryChannelLayer()

    async def schedule() -> None:
        await layer.send("later", {"type": "late"}, delay=0.01)

    asyncio.run(schedule())  # that loop is closed now; its timer died with it

    async def read() -> dict[str, object]:
        return await asyncio.wait_for(layer.receive("later"), 5)

    assert asyncio.run(read()) == {"type": "late"}


async def test_group_members_share_nested_values_but_not_the_top_level() -> None:
    layer = InMemoryChannelLayer()
    await layer.group_add("g", "a")
    await layer.group_add("g", "b")
    await layer.group_send("g", {"type": "x", "payload": {"n": 1}})
    first, second = await layer.receive("a"), await layer.receive("b")
    assert first is not second
    assert first["payload"] is second["payload"]  # decoded once per group_send


async def test_statistics_value() -> None:
    layer = InMemoryChannelLayer()
    stats = layer.statistics()
    assert isinstance(stats, LayerStatistics)
    assert stats.sent == stats.received == stats.channels == 0
    with pytest.raises(AttributeError):
        stats.sent = 5  # type: ignore[misc]


async def test_idle_channels_are_swept(monkeypatch: pytest.MonkeyPatch) -> None:
    from headrace.layers import ManualClock

    clock = ManualClock()
    layer = InMemoryChannelLayer(clock=clock, expiry=1)
    for number in range(50):
        await layer.send(f"idle.{number}", {"type": "x"})
    assert layer.statistics().channels == 50
    clock.advance(10)
    await layer.send("trigger", {"type": "x"})  # a send sweeps at most every few seconds
    stats = layer.statistics()
    assert stats.channels == 1
    assert stats.expired == 50
