"""Layer configuration objects, capability flags, and the system check that reads CHANNEL_LAYERS.

Every CONFIG mistake is found at start-up (``manage.py check``, ``runserver``), named by alias
and key; the callers that depend on a capability read the layer's flags.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import sys
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest
from django.core.checks import Error
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from headrace import exceptions
from headrace.checks import check_channel_layers
from headrace.layers import (
    Capabilities,
    InMemoryChannelLayer,
    LayerConfig,
    capabilities_of,
    channel_layers,
    get_channel_layer,
)
from headrace.layers.redis import RedisChannelLayer
from headrace.layers.redis.config import RedisConfig

MEMORY = "headrace.layers.InMemoryChannelLayer"
REDIS = "headrace.layers.redis.RedisChannelLayer"


@pytest.fixture(autouse=True)
def fresh_registry() -> Iterator[None]:
    channel_layers.reset()
    yield
    channel_layers.reset()


def layers_check(channel_layers_setting: object) -> list[Error]:
    with override_settings(CHANNEL_LAYERS=channel_layers_setting):
        return [m for m in check_channel_layers() if isinstance(m, Error)]


# -- configuration objects -----------------------------------------------------------------------


def test_layer_config_from_settings_keeps_typed_frozen_values() -> None:
    config = LayerConfig.from_settings(
        {"expiry": 5, "capacity": 7, "channel_capacity": {"chat.*": 2}}
    )
    assert config.expiry == 5.0
    assert isinstance(config.expiry, float)
    assert config.capacity == 7
    assert config.channel_capacity == (("chat.*", 2),)
    assert config.group_expiry == 86400.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.capacity = 9  # type: ignore[misc]
    assert LayerConfig() == LayerConfig.from_settings({})


def test_using_returns_a_checked_copy_that_still_names_the_alias() -> None:
    config = LayerConfig.from_settings({"capacity": 7}, source="CHANNEL_LAYERS['chat']['CONFIG']")
    bigger = config.using(capacity=500)
    assert (bigger.capacity, config.capacity) == (500, 7)
    assert bigger.expiry == config.expiry
    with pytest.raises(
        exceptions.ConfigurationError,
        match=re.escape("CHANNEL_LAYERS['chat']['CONFIG']['capacity'] must be a positive int"),
    ):
        config.using(capacity=-1)
    with pytest.raises(exceptions.ConfigurationError, match="expiry must be a positive"):
        LayerConfig().using(expiry=0)


def test_a_layer_is_built_from_its_configuration() -> None:
    config = LayerConfig(capacity=3, channel_capacity={"big": 10})  # type: ignore[arg-type]
    layer = InMemoryChannelLayer(config=config)
    assert layer.config is config
    assert (layer.capacity, layer.capacity_of("big"), layer.capacity_of("x")) == (3, 10, 3)
    assert InMemoryChannelLayer(capacity=4).config == LayerConfig(capacity=4)
    with pytest.raises(TypeError, match="not both"):
        InMemoryChannelLayer(config=config, capacity=4)
    with pytest.raises(TypeError, match="needs a RedisConfig"):
        RedisChannelLayer(config=config)  # type: ignore[arg-type]


def test_every_mistake_is_listed_not_only_the_first() -> None:
    with pytest.raises(exceptions.ConfigurationError) as raised:
        LayerConfig.from_settings(
            {"capacity": 0, "expiry": "soon", "colour": "blue"}, source="CONFIG"
        )
    assert raised.value.problems == (
        "CONFIG has unknown CONFIG keys: colour; the accepted keys are expiry, group_expiry, "
        "capacity, channel_capacity, max_message_size",
        "CONFIG['expiry'] must be a positive number of seconds, got 'soon'",
        "CONFIG['capacity'] must be a positive int, got 0",
    )


def test_redis_config_keys_and_copies() -> None:
    config = RedisConfig.from_settings(
        {
            "hosts": ["redis://a:1", ("b", 2), {"address": "redis://c:3", "db": 1}],
            "prefix": "chat",
            "symmetric_encryption_keys": ["k1", "k0"],
            "capacity": 50,
        },
        source="CHANNEL_LAYERS['default']['CONFIG']",
    )
    assert config.hosts[:2] == ("redis://a:1", ("b", 2))
    assert dict(config.hosts[2]) == {"address": "redis://c:3", "db": 1}  # type: ignore[arg-type]
    assert (config.prefix, config.capacity, config.symmetric_encryption_keys) == (
        "chat",
        50,
        ("k1", "k0"),
    )
    assert RedisConfig().hosts == (("localhost", 6379),)
    with pytest.raises(
        exceptions.ConfigurationError,
        match=re.escape("CHANNEL_LAYERS['default']['CONFIG']['prefix'] must be 1-64 ASCII"),
    ):
        config.using(prefix="a:b")
    with pytest.raises(exceptions.ConfigurationError, match="listed twice"):
        config.using(hosts=["redis://a:1", "redis://a:1"])
    # Building the layer from it connects to nothing (nothing listens on these hosts).
    layer = RedisChannelLayer(config=config.using(prefix="other"))
    assert (layer.prefix, layer.capacity, layer.config.hosts) == ("other", 50, config.hosts)


# -- the system check ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backend", "key", "value", "says"),
    [
        (MEMORY, "capacity", -1, "must be a positive int, got -1"),
        (MEMORY, "expiry", 0, "must be a positive number of seconds, got 0"),
        (MEMORY, "group_expiry", float("inf"), "must be a finite number of seconds"),
        (MEMORY, "channel_capacity", {"chat.*": 0}, r"\['chat\.\*'\] must be a positive int"),
        (MEMORY, "channel_capacity", [1, 2], "must be a dict of glob pattern"),
        (MEMORY, "max_message_size", "1MB", r"must be a positive int \(bytes\)"),
        (REDIS, "hosts", "redis://localhost", "must be a non-empty list"),
        (REDIS, "hosts", ["http://localhost"], r"\[0\]: Redis host URL .* must start with"),
        (REDIS, "prefix", "a b", "must be 1-64 ASCII letters"),
        (REDIS, "symmetric_encryption_keys", "secret", "must be a non-empty list of keys"),
        (REDIS, "cluster", "yes", "must be True or False"),
        (REDIS, "cluster_buckets", 0, "must be an int from 1 to 1024, got 0"),
        (REDIS, "heartbeat_interval", -1, "must be a positive number of seconds"),
        (REDIS, "block_timeout", None, "must be a positive number of seconds"),
        (REDIS, "connect_timeout", True, "must be a positive number of seconds"),
    ],
)
def test_each_bad_key_is_reported_by_alias_and_key(
    backend: str, key: str, value: object, says: str
) -> None:
    errors = layers_check(
        {
            "default": {"BACKEND": MEMORY},
            "chat": {"BACKEND": backend, "CONFIG": {key: value}},
        }
    )
    assert [error.id for error in errors] == ["headrace.E002"]
    message = errors[0].msg
    assert message.startswith(f"CHANNEL_LAYERS['chat']['CONFIG'][{key!r}]"), message
    assert re.search(says, message), message


def test_every_mistake_of_every_alias_and_test_config_is_reported() -> None:
    errors = layers_check(
        {
            "default": {
                "BACKEND": MEMORY,
                "CONFIG": {"capacity": 0, "colour": "blue"},
                "TEST_CONFIG": {"expiry": -1},
            },
            "redis": {"BACKEND": REDIS, "CONFIG": {"hosts": ["redis://a:1", "redis://a:1"]}},
            "fine": {"BACKEND": REDIS, "CONFIG": {"hosts": ["redis://nowhere:1"]}},
        }
    )
    assert [(error.id, error.msg.split(" ")[0]) for error in errors] == [
        ("headrace.E002", "CHANNEL_LAYERS['default']['CONFIG']"),
        ("headrace.E002", "CHANNEL_LAYERS['default']['CONFIG']['capacity']"),
        ("headrace.E002", "CHANNEL_LAYERS['default']['TEST_CONFIG']['expiry']"),
        ("headrace.E002", "CHANNEL_LAYERS['redis']['CONFIG']['hosts']:"),
    ]
    assert "unknown CONFIG keys: colour" in errors[0].msg


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("headrace.layers.InMemoryChannelLayer", r"\['chat'\] must be a dict, got str"),
        ({"CONFIG": {}}, r"\['chat'\] has no BACKEND"),
        ({"BACKEND": "no.such.Layer"}, r"\['chat'\]\['BACKEND'\] = 'no.such.Layer' cannot be"),
        ({"BACKEND": "headrace.layers.DEFAULT_MAX_MESSAGE_SIZE"}, "is not a class"),
    ],
)
def test_an_entry_that_cannot_give_a_layer_is_an_error(entry: object, says: str) -> None:
    errors = layers_check({"default": {"BACKEND": MEMORY}, "chat": entry})
    assert [error.id for error in errors] == ["headrace.E001"]
    assert re.search(says, errors[0].msg), errors[0].msg


def test_channel_layers_that_is_not_a_dict_is_an_error() -> None:
    errors = layers_check(["default"])
    assert [error.id for error in errors] == ["headrace.E001"]
    assert errors[0].msg == "CHANNEL_LAYERS must be a dict of alias -> settings, got list"


def test_a_good_configuration_passes_and_a_channels_backend_is_left_alone() -> None:
    assert layers_check({"default": {"BACKEND": MEMORY, "CONFIG": {"capacity": 5}}}) == []
    assert layers_check({}) == []
    channels_layer = {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"x": 1}}
    assert layers_check({"default": channels_layer}) == []  # its keys are its own business


def test_manage_py_check_fails_on_a_bad_layer_config() -> None:
    with (
        override_settings(
            CHANNEL_LAYERS={"default": {"BACKEND": MEMORY, "CONFIG": {"capacity": -1}}}
        ),
        pytest.raises(SystemCheckError) as raised,
    ):
        call_command("check")
    assert (
        "(headrace.E002) CHANNEL_LAYERS['default']['CONFIG']['capacity'] must be a positive "
        "int, got -1" in str(raised.value)
    )
    call_command("check")  # the test settings themselves are fine


def test_the_registry_names_alias_and_key_on_first_use() -> None:
    with (
        override_settings(CHANNEL_LAYERS={"default": {"BACKEND": REDIS, "CONFIG": {"prefix": ""}}}),
        pytest.raises(exceptions.ConfigurationError) as raised,
    ):
        get_channel_layer()
    assert str(raised.value) == (
        "CHANNEL_LAYERS['default']['CONFIG']['prefix'] must be 1-64 ASCII letters, digits, "
        "'.', '-' or '_', got ''"
    )


# -- a backend whose extra is not installed -------------------------------------------------------


@pytest.fixture
def without_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import redis`` fail as it does when ``headrace[redis]`` is not installed."""
    for name in list(sys.modules):
        if name.startswith("headrace.layers.redis"):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "redis", None)
    import headrace.layers

    monkeypatch.delattr(headrace.layers, "redis", raising=False)


REDIS_DEFAULT = {"default": {"BACKEND": REDIS}}
EXTRA_MESSAGE = (
    "CHANNEL_LAYERS['default']['BACKEND'] = 'headrace.layers.redis.RedisChannelLayer' needs the "
    "'redis' extra, which is not installed"
)


@pytest.mark.usefixtures("without_redis")
def test_check_names_the_extra_to_install() -> None:
    errors = layers_check(REDIS_DEFAULT)
    assert [error.id for error in errors] == ["headrace.E003"]
    assert errors[0].msg.startswith(EXTRA_MESSAGE), errors[0].msg
    assert errors[0].msg.endswith(": pip install 'headrace[redis]'")
    assert errors[0].hint == "pip install 'headrace[redis]'"
    with override_settings(CHANNEL_LAYERS=REDIS_DEFAULT), pytest.raises(SystemCheckError) as raised:
        call_command("check")
    assert "pip install 'headrace[redis]'" in str(raised.value)


@pytest.mark.usefixtures("without_redis")
def test_runserver_refuses_to_start_without_the_extra() -> None:
    with (
        override_settings(CHANNEL_LAYERS=REDIS_DEFAULT),
        pytest.raises(SystemCheckError, match=re.escape("pip install 'headrace[redis]'")),
    ):
        call_command("runserver", "127.0.0.1:0", use_reloader=False, skip_checks=False)


class _Flag(logging.Handler):
    """Sets an event when a record matching ``pattern`` is logged (from any thread)."""

    def __init__(self, pattern: str) -> None:
        super().__init__()
        self.pattern = pattern
        self.seen = threading.Event()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if self.pattern in record.getMessage():
            self.records.append(record)
            self.seen.set()


@pytest.mark.slow
def test_embedded_workers_crash_is_reported_at_start_up_not_at_shutdown() -> None:
    from headrace.routing import get_default_application
    from headrace.server import Server, ServerOptions
    from headrace.worker import run_embedded_workers

    application = get_default_application()
    flag = _Flag("must be a positive int, got -1")
    server_logger = logging.getLogger("headrace.server")
    server_logger.addHandler(flag)
    bad = {"default": {"BACKEND": MEMORY, "CONFIG": {"capacity": -1}}}
    try:
        with override_settings(CHANNEL_LAYERS=bad):
            server = Server(
                application,
                ServerOptions(port=0, log_level="warning", configure_logging=False),
                background=[lambda: run_embedded_workers(application)],
            )
            server.start_in_thread()
            try:
                assert flag.seen.wait(10), "the crash was not reported while serving"
            finally:
                server.stop()
    finally:
        server_logger.removeHandler(flag)
    assert len(flag.records) == 1  # reported once: not again at shutdown
    assert "CHANNEL_LAYERS['default']['CONFIG']['capacity']" in flag.records[0].getMessage()


# -- capability flags ------------------------------------------------------------------------------


def test_backends_declare_capabilities_and_extensions_follow_them() -> None:
    memory = InMemoryChannelLayer.capabilities
    redis = RedisChannelLayer.capabilities
    assert (memory.groups, memory.flush, memory.delay) == (True, True, True)
    assert (memory.in_process, memory.moves_due) == (True, False)
    assert (redis.in_process, redis.moves_due) == (False, True)
    assert InMemoryChannelLayer.extensions == ["groups", "flush", "delay"]
    assert Capabilities(groups=True, delay=True).extensions == ["groups", "delay"]


def test_capabilities_of_a_layer_written_for_channels_come_from_its_extensions() -> None:
    class ChannelsStyleLayer:
        extensions: ClassVar[list[str]] = ["groups", "flush"]

    assert capabilities_of(ChannelsStyleLayer()) == Capabilities(groups=True, flush=True)
    assert capabilities_of(object()) == Capabilities()
    assert capabilities_of(InMemoryChannelLayer()) is InMemoryChannelLayer.capabilities


class NoGroupsLayer(InMemoryChannelLayer):
    """A layer that has the group methods (inherited) but says it has no groups."""

    capabilities: ClassVar[Capabilities] = Capabilities(flush=True, in_process=True)


class NotInProcessLayer(InMemoryChannelLayer):
    """An in-memory subclass that says its messages reach other processes."""

    capabilities: ClassVar[Capabilities] = Capabilities(groups=True, flush=True, delay=True)


async def test_a_group_consumer_reads_the_groups_flag_not_the_methods() -> None:
    from headrace.generic.websocket import AsyncWebsocketConsumer
    from headrace.testing import WebsocketCommunicator

    class Room(AsyncWebsocketConsumer):
        groups: ClassVar[list[str]] = ["room"]

    async def connects() -> bool:
        communicator = WebsocketCommunicator(Room.as_asgi(), "/room/")
        try:
            connected, _ = await communicator.connect()
        except exceptions.InvalidChannelLayerError:  # a communicator that re-raises it
            return False
        await communicator.disconnect()
        return connected

    assert await connects()  # the in-memory layer has groups
    channel_layers.set("default", NoGroupsLayer())  # has group_add, but says: no groups
    assert not await connects()


def test_embedded_workers_follow_the_in_process_flag() -> None:
    from headrace.worker import embedded_workers_enabled

    assert embedded_workers_enabled()
    with override_settings(
        CHANNEL_LAYERS={"default": {"BACKEND": f"{__name__}.NotInProcessLayer"}}
    ):
        assert not embedded_workers_enabled()


async def test_rundelay_sweeps_only_a_layer_that_moves_due() -> None:
    from headrace.management.commands.rundelay import sweep_due_messages

    # The in-memory layer has move_due() (from the base class) but does not move due
    # messages: the sweep must return at once rather than call it.
    await asyncio.wait_for(sweep_due_messages("default", 0.01), 5)

    called = asyncio.Event()

    class Moving(InMemoryChannelLayer):
        capabilities: ClassVar[Capabilities] = Capabilities(delay=True, moves_due=True)

        async def move_due(self) -> int:
            called.set()
            return 0

    channel_layers.set("default", Moving())
    sweeping = asyncio.create_task(sweep_due_messages("default", 0.01))
    try:
        await asyncio.wait_for(called.wait(), 5)
    finally:
        sweeping.cancel()
        await asyncio.wait([sweeping])


# -- one DEFAULT_CHANNEL_LAYER, and the process helpers' home -------------------------------------


def test_default_channel_layer_is_at_the_package_top_and_defined_once() -> None:
    import headrace.consumer
    import headrace.layers
    import headrace.layers.registry

    assert headrace.DEFAULT_CHANNEL_LAYER == "default"
    assert headrace.consumer.DEFAULT_CHANNEL_LAYER is headrace.DEFAULT_CHANNEL_LAYER
    assert headrace.layers.DEFAULT_CHANNEL_LAYER is headrace.DEFAULT_CHANNEL_LAYER
    assert headrace.layers.registry.DEFAULT_CHANNEL_LAYER is headrace.DEFAULT_CHANNEL_LAYER


def test_process_helpers_live_in_headrace_process_and_old_imports_work() -> None:
    from headrace import process
    from headrace.management.commands import rundelay, runworker

    assert runworker.serve_until_signalled is process.serve_until_signalled
    assert runworker.configure_logging is process.configure_logging
    assert rundelay.serve_until_signalled is process.serve_until_signalled
