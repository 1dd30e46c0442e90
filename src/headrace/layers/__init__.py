"""Channel layers: named FIFO channels and groups shared by consumers, workers and servers.

``get_channel_layer()`` returns the layer configured in ``settings.CHANNEL_LAYERS``. The
backends are :class:`InMemoryChannelLayer` (this process only, nothing to install) and
``headrace.layers.redis.RedisChannelLayer`` (several processes and machines).
"""

from __future__ import annotations

from headrace.layers.base import DEFAULT_MAX_MESSAGE_SIZE, BaseChannelLayer, LayerStatistics
from headrace.layers.clock import Clock, ManualClock, SystemClock
from headrace.layers.config import Capabilities, LayerConfig, capabilities_of
from headrace.layers.memory import InMemoryChannelLayer
from headrace.layers.registry import (
    DEFAULT_CHANNEL_LAYER,
    ChannelLayerManager,
    channel_layers,
    get_channel_layer,
)

__all__ = [
    "DEFAULT_CHANNEL_LAYER",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "BaseChannelLayer",
    "Capabilities",
    "ChannelLayerManager",
    "Clock",
    "InMemoryChannelLayer",
    "LayerConfig",
    "LayerStatistics",
    "ManualClock",
    "SystemClock",
    "capabilities_of",
    "channel_layers",
    "get_channel_layer",
]
