"""The channel layers the conformance suite runs against.

Each entry is a function ``factory(request, clock, **config)`` that returns a ready, empty
layer; the ``make_layer`` fixture flushes and closes it afterwards. ``request`` is pytest's
FixtureRequest, so a backend can use fixtures such as a server it starts.

A new backend is done when the suite passes with its entry added here and no test edited.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from headrace.layers import BaseChannelLayer, InMemoryChannelLayer, ManualClock
from headrace.layers.redis import RedisChannelLayer
from tests.redis_servers import servers

LayerFactory = Callable[..., BaseChannelLayer]


def memory_layer(
    request: pytest.FixtureRequest, clock: ManualClock, **config: Any
) -> BaseChannelLayer:
    return InMemoryChannelLayer(clock=clock, **config)


def redis_layer(
    request: pytest.FixtureRequest, clock: ManualClock, **config: Any
) -> BaseChannelLayer:
    """A RedisChannelLayer on the session's own redis-server, under a prefix of its own."""
    server = servers(request.config).standalone()
    return RedisChannelLayer(
        hosts=[server.url], prefix=f"test-{uuid.uuid4().hex[:12]}", clock=clock, **config
    )


def redis_hosts_layer(
    request: pytest.FixtureRequest, clock: ManualClock, **config: Any
) -> BaseChannelLayer:
    """A RedisChannelLayer sharded over three independent redis-servers."""
    hosts = [server.url for server in servers(request.config).several()]
    return RedisChannelLayer(
        hosts=hosts, prefix=f"test-{uuid.uuid4().hex[:12]}", clock=clock, **config
    )


def redis_cluster_layer(
    request: pytest.FixtureRequest, clock: ManualClock, **config: Any
) -> BaseChannelLayer:
    """A RedisChannelLayer on a three-master Redis Cluster."""
    nodes = servers(request.config).cluster()
    return RedisChannelLayer(
        hosts=[nodes[0].url],
        cluster=True,
        prefix=f"test-{uuid.uuid4().hex[:12]}",
        clock=clock,
        **config,
    )


LAYER_BACKENDS: dict[str, LayerFactory] = {
    "memory": memory_layer,
    "redis": redis_layer,
    "redis-hosts": redis_hosts_layer,
    "redis-cluster": redis_cluster_layer,
}
