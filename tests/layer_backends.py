"""The channel layers the conformance suite runs against.

Each entry is an async generator function ``factory(request, clock, **config)`` that yields
a ready, empty layer and cleans it up afterwards. ``request`` is pytest's FixtureRequest, so a
backend can use fixtures such as a server it starts (``request.getfixturevalue(...)``).

A new backend is done when the suite passes with its entry added here and no test edited.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from headrace.layers import BaseChannelLayer, InMemoryChannelLayer, ManualClock

LayerFactory = Callable[..., AsyncIterator[BaseChannelLayer]]


async def memory_layer(
    request: pytest.FixtureRequest, clock: ManualClock, **config: Any
) -> AsyncIterator[BaseChannelLayer]:
    layer = InMemoryChannelLayer(clock=clock, **config)
    try:
        yield layer
    finally:
        await layer.flush()
        await layer.close()


LAYER_BACKENDS: dict[str, LayerFactory] = {
    "memory": memory_layer,
}
