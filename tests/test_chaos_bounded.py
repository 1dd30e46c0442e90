"""Bounded versions of bench/chaos.py's fast scenarios, against a real server.

The same hostile-origin and forged-host matrix the bench runs (``bench.chaos.HOSTILE_ORIGINS``,
``FORGED_HOSTS``), and 200 simultaneous connects instead of the bench's 1,000. The Redis-kill
and runworker scenarios take tens of seconds and stay in the bench.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from bench.chaos import FORGED_HOSTS, HOSTILE_ORIGINS, close_all, hostile_matrix, open_many

from headrace.testing import LiveServer


@pytest.fixture
def server(transactional_db: None) -> Iterator[LiveServer]:
    """The test project's application (chat app, AllowedHostsOriginValidator) on uvicorn."""
    with LiveServer() as live:
        yield live


@pytest.mark.slow
async def test_no_forged_origin_or_host_is_accepted(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    result = await hostile_matrix(server.port, "/ws/chat/origins/")
    assert result["forged_origins"] == len(HOSTILE_ORIGINS) > 60
    assert result["forged_hosts"] == len(FORGED_HOSTS) > 10
    assert result["accepted"] == []
    assert result["forged_origins_accepted"] == result["forged_hosts_accepted"] == 0
    assert result["good_origin_accepted"] is True  # the matrix can tell accepted from refused
    assert set(result["statuses"]) <= {"400", "403"}  # every refusal answered, none hung
    # Each refusal is one line of ours, not also an error from the server.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    refusals = [r for r in caplog.records if r.name == "headrace.security"]
    assert len(refusals) == result["statuses"]["403"]


@pytest.mark.slow
async def test_200_simultaneous_connects_all_open(server: LiveServer) -> None:
    url = f"{server.ws_url}/ws/chat/crowd/"
    opened, errors, _seconds = await open_many(url, server.url, 200)
    try:
        assert errors == {}
        assert len(opened) == 200
    finally:
        await close_all(opened)
