"""Workers over Redis, as separate ``runworker`` processes on a redis-server the tests start.

- Three worker processes share 10,000 messages on one normal channel: each id is handled by
  exactly one of them, none twice, none lost.
- SIGTERM while a handler is in hand: it finishes, the process exits 0, and a message sent
  after the signal stays in Redis for the next worker.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from headrace.layers.redis import RedisChannelLayer
from tests.progrock.processes import kill, start_command, stop
from tests.redis_servers import servers

WAIT = 60


@pytest.fixture
def redis_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """Environment for worker processes: our redis-server, a fresh prefix, a jobs directory."""
    server = servers(request.config).standalone()
    return {
        "HEADRACE_TEST_REDIS_URL": server.url,
        "HEADRACE_TEST_REDIS_PREFIX": f"test-{uuid.uuid4().hex[:12]}",
        "HEADRACE_JOBS_DIR": str(tmp_path),
    }


@pytest.fixture
async def layer(redis_env: dict[str, str]) -> AsyncIterator[RedisChannelLayer]:
    layer = RedisChannelLayer(
        hosts=[redis_env["HEADRACE_TEST_REDIS_URL"]],
        prefix=redis_env["HEADRACE_TEST_REDIS_PREFIX"],
        channel_capacity={"jobs": 20_000},
    )
    yield layer
    await layer.flush()
    await layer.close()


@pytest.fixture
def workers(redis_env: dict[str, str]) -> Iterator[Any]:
    """Start runworker processes on the test's Redis; kill any left at the end."""
    started: list[Any] = []

    def start(*args: str) -> Any:
        process = start_command("runworker", *args, env=redis_env)
        started.append(process)
        return process

    yield start
    for process in started:
        kill(process)


def read_ids(directory: Path, suffix: str) -> dict[str, list[int]]:
    return {
        path.stem: [int(line) for line in path.read_text().split()]
        for path in directory.glob(f"*.{suffix}")
    }


async def wait_for_ids(directory: Path, suffix: str, count: int) -> dict[str, list[int]]:
    """Bounded polling of the files the worker processes write (other processes: no hook
    reaches them, and a report per message would load the run it measures)."""
    async with asyncio.timeout(WAIT):
        while True:
            found = read_ids(directory, suffix)
            if sum(map(len, found.values())) >= count:
                return found
            await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_three_workers_handle_each_message_exactly_once(
    layer: RedisChannelLayer, workers: Any, tmp_path: Path
) -> None:
    processes = [workers("jobs", "--concurrency", "50") for _ in range(3)]
    total = 10_000
    for start in range(0, total, 500):
        await asyncio.gather(
            *(layer.send("jobs", {"type": "job.run", "id": n}) for n in range(start, start + 500))
        )
    handled = await wait_for_ids(tmp_path, "ids", total)
    for process in processes:
        code, rest = stop(process, signal.SIGTERM)
        assert code == 0, rest
    handled = read_ids(tmp_path, "ids")
    every = [n for ids in handled.values() for n in ids]
    assert len(every) == total  # none twice...
    assert set(every) == set(range(total))  # ...and none lost
    assert len(handled) == 3  # competing readers: every process took a share


@pytest.mark.slow
async def test_sigterm_finishes_the_handler_in_hand_and_takes_no_more(
    layer: RedisChannelLayer, workers: Any, tmp_path: Path
) -> None:
    process = workers("jobs", "--concurrency", "1", "--no-delay")
    slow = {"type": "job.slow", "id": 1, "seconds": 0.5, "report_to": "reports"}
    await layer.send("jobs", slow)
    assert await asyncio.wait_for(layer.receive("reports"), WAIT) == {
        "type": "job.started",
        "id": 1,
    }
    await layer.send("jobs", {"type": "job.run", "id": 2})
    code, rest = await asyncio.to_thread(stop, process, signal.SIGTERM)
    assert code == 0, rest
    assert [ids for ids in read_ids(tmp_path, "ids").values()] == [[1]]
    assert await layer.receive("jobs") == {"type": "job.run", "id": 2}


@pytest.mark.slow
async def test_rundelay_delivers_what_a_dead_process_scheduled(
    layer: RedisChannelLayer, redis_env: dict[str, str]
) -> None:
    doomed = RedisChannelLayer(
        hosts=[redis_env["HEADRACE_TEST_REDIS_URL"]],
        prefix=redis_env["HEADRACE_TEST_REDIS_PREFIX"],
    )
    await doomed.send("orphans", {"type": "orphan", "n": 1}, delay=0.5)
    await doomed.close()  # gone before the due time: no process times this message now
    process = start_command("rundelay", "--sweep-interval", "0.1", env=redis_env)
    try:
        # A reader of a normal channel moves nothing itself, and no reading process's
        # heartbeat comes within this wait: only rundelay's sweep can deliver it.
        assert await asyncio.wait_for(layer.receive("orphans"), 5) == {"type": "orphan", "n": 1}
        code, rest = await asyncio.to_thread(stop, process, signal.SIGTERM)
        assert code == 0, rest
    finally:
        kill(process)
