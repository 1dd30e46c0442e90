"""The declared public API: a name that appears or disappears by accident fails here.

When you add or remove a public name on purpose, change this list in the same commit (and say
so in CHANGELOG.md).
"""

from __future__ import annotations

import importlib

import pytest

PUBLIC_API: dict[str, set[str]] = {
    "headrace": {"__version__"},
    "headrace.exceptions": {
        "AcceptConnection",
        "ChannelFull",
        "ChannelLayerError",
        "ConfigurationError",
        "DenyConnection",
        "HeadraceError",
        "InvalidChannelLayerError",
        "InvalidChannelName",
        "InvalidDelay",
        "InvalidGroupName",
        "InvalidMessage",
        "InvalidName",
        "LayerConnectionError",
        "MessageTooLarge",
        "RequestAborted",
        "RequestTimeout",
        "StopConsumer",
    },
    "headrace.layers": {
        "DEFAULT_CHANNEL_LAYER",
        "DEFAULT_MAX_MESSAGE_SIZE",
        "BaseChannelLayer",
        "ChannelLayerManager",
        "Clock",
        "InMemoryChannelLayer",
        "LayerStatistics",
        "ManualClock",
        "SystemClock",
        "channel_layers",
        "get_channel_layer",
    },
    "headrace.layers.base": {"DEFAULT_MAX_MESSAGE_SIZE", "BaseChannelLayer", "LayerStatistics"},
    "headrace.layers.clock": {"Clock", "ManualClock", "SystemClock", "TimerHandle"},
    "headrace.layers.codec": {"decode", "encode"},
    "headrace.layers.groups": {"Membership"},
    "headrace.layers.memory": {"InMemoryChannelLayer"},
    "headrace.layers.registry": {
        "DEFAULT_CHANNEL_LAYER",
        "ChannelLayerManager",
        "channel_layers",
        "get_channel_layer",
    },
    "headrace.layers.rules": {
        "MAX_NAME_LENGTH",
        "CapacityTable",
        "check_channel_name",
        "check_group_name",
        "check_message",
        "check_size",
        "due_time",
        "is_process_channel",
        "non_local_name",
        "positive_seconds",
    },
    "headrace.layers.schedule": {"DelaySchedule"},
}


@pytest.mark.parametrize("module_name", sorted(PUBLIC_API))
def test_declared_public_names(module_name: str) -> None:
    module = importlib.import_module(module_name)
    declared = set(module.__all__)
    assert declared == PUBLIC_API[module_name], (
        f"{module_name}.__all__ changed: added {sorted(declared - PUBLIC_API[module_name])}, "
        f"removed {sorted(PUBLIC_API[module_name] - declared)}"
    )
    for name in declared:
        assert hasattr(module, name), f"{module_name}.__all__ names {name!r}, which is missing"
