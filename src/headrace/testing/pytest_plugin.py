"""pytest fixtures: add ``pytest_plugins = ["headrace.testing.pytest_plugin"]`` to a conftest.

``headrace_live_server`` is a :class:`~headrace.testing.live.LiveServer` running
``ASGI_APPLICATION`` for one test, with the database in transactional mode so the server sees
what the test writes (it needs pytest-django).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .live import LiveServer

__all__ = ["headrace_live_server"]


@pytest.fixture
def headrace_live_server(transactional_db: None) -> Iterator[LiveServer]:
    """A live uvicorn server for this test: ``.url`` and ``.ws_url``."""
    with LiveServer() as server:
        yield server
