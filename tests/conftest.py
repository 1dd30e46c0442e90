"""Fixtures shared by the whole suite.

``layer`` / ``make_layer`` are parametrized over every backend in ``tests/layer_backends.py``,
with a :class:`~headrace.layers.ManualClock` (``clock``) so expiry and delay never sleep.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
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
    made: list[BaseChannelLayer] = []

    async def make(**config: Any) -> BaseChannelLayer:
        layer = factory(request, clock, **config)
        made.append(layer)
        return layer

    yield make
    for layer in made:
        await layer.flush()
        await layer.close()


@pytest.fixture
async def layer(make_layer: MakeLayer) -> BaseChannelLayer:
    """A fresh layer of the current backend with the default CONFIG."""
    return await make_layer()


@pytest.fixture(autouse=True, scope="session")
def _database_reachable_from_handler_threads(django_db_blocker: Any) -> Iterator[None]:
    """Let consumers close old database connections in any test, as they do in production.

    Consumers (ours and Channels') call ``close_old_connections`` on the ORM's shared thread.
    A test that used the database leaves that thread holding a connection, and in a later test
    that did not ask for the database pytest-django's blocker would turn the routine cleanup
    into an error in whichever handler ran it. Tests that need tables still ask for ``db`` or
    ``transactional_db``; without them there are no tables, so stray queries still fail.
    """
    with django_db_blocker.unblock():
        yield
