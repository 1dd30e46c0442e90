"""Bounded versions of bench/chaos.py's fast scenarios, against a real server.

The same hostile-origin and forged-host matrix the bench runs (``bench.chaos.HOSTILE_ORIGINS``,
``FORGED_HOSTS``), 200 simultaneous connects instead of the bench's 1,000, and the
``task-kills`` scenario with 300 tasks and two kills instead of 20,000 and 36. The Redis-kill
and runworker scenarios take tens of seconds and stay in the bench.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from bench.chaos import (
    FORGED_HOSTS,
    HOSTILE_ORIGINS,
    Redis,
    close_all,
    hostile_matrix,
    open_many,
    scenario_task_kills,
)

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


@pytest.mark.slow
def test_killed_task_workers_lose_no_task_and_every_rerun_carries_worker_lost(
    tmp_path: Path,
) -> None:
    redis = Redis(tmp_path)  # the bench's own private redis-server
    redis.start()
    try:
        result = scenario_task_kills(
            redis.url, tmp_path, jobs=300, kill_every=2, kill_for=4, lease=1.0, drain_timeout=60
        )
    finally:
        redis.stop()
    assert result["drained"]
    assert result["workers_killed"] == 2
    assert result["lost"] == 0
    assert result["successful"] + result["dead_lettered"] == 300
    assert result["successful_without_a_recorded_run"] == 0
    # The first kill comes while half the work is still queued: it finds jobs in hand.
    assert result["tasks_cut_off_at_each_kill"][0] > 0
    assert result["ran_more_than_once"] > 0
    assert result["ran_more_than_once_with_worker_lost"] == result["ran_more_than_once"]
    assert result["extra_runs_without_a_worker_lost_error"] == 0
    assert result["worker_lost_errors"] == result["counters"]["lost"]
    assert result["worker_logs"]["tracebacks"] == 0
