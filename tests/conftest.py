"""Fixtures shared by the whole suite.

``layer`` / ``make_layer`` are parametrized over every backend in ``tests/layer_backends.py``,
with a :class:`~headrace.layers.ManualClock` (``clock``) so expiry and delay never sleep.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from headrace.layers import BaseChannelLayer, ManualClock
from tests.layer_backends import LAYER_BACKENDS

MakeLayer = Callable[..., Awaitable[BaseChannelLayer]]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=sorted(LAYER_BACKENDS))
async def make_layer(
    request: pytest.FixtureRequest, clock: ManualClock
) -> AsyncIterator[MakeLayer]:
    """An async function that makes a fresh layer of the current backend with extra CONFIG."""
    factory = LAYER_BACKENDS[request.param]
    async with contextlib.AsyncExitStack() as stack:

        async def make(**config: Any) -> BaseChannelLayer:
            generator = factory(request, clock, **config)
            layer = await anext(generator)
            stack.push_async_callback(_finish, generator)
            return layer

        yield make


async def _finish(generator: AsyncIterator[BaseChannelLayer]) -> None:
    with contextlib.suppress(StopAsyncIteration):
        await anext(generator)


@pytest.fixture
async def layer(make_layer: MakeLayer) -> BaseChannelLayer:
    """A fresh layer of the current backend with the default CONFIG."""
    return await make_layer()
