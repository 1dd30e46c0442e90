"""Tasks the Redis task tests run in worker processes: each records what it did in Redis.

The worker processes get the recording server from ``HEADRACE_TEST_REDIS`` (the same server
the jobs live on); every key starts with the ``mark`` the test passes, so tests never share.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import redis

from headrace.tasks import task

_client: Any = None


def recorder() -> Any:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["HEADRACE_TEST_REDIS"])
    return _client


@task()
async def record_id(mark: str, number: int, pause: float = 0.0) -> int:
    """Record ``number`` as seen (at the start: a kill after it makes a duplicate)."""
    recorder().rpush(f"{mark}:seen", number)
    if pause:
        await asyncio.sleep(pause)
    return number


@task()
def hold(mark: str) -> int:
    """Record this worker's pid, wait for a release token for it, record the pid again."""
    pid = os.getpid()
    recorder().rpush(f"{mark}:started", pid)
    recorder().blpop([f"{mark}:release:{pid}"], timeout=60)
    recorder().rpush(f"{mark}:finished", pid)
    return pid


@task()
async def hold_async(mark: str) -> int:
    """Like :func:`hold` on the worker's loop (a stop can cancel it)."""
    recorder().rpush(f"{mark}:started", os.getpid())
    while not recorder().lpop(f"{mark}:release"):
        await asyncio.sleep(0.02)
    return os.getpid()


@task()
def die(mark: str) -> None:
    """Kill the worker process running it, as a crash in a C extension would."""
    recorder().rpush(f"{mark}:died", os.getpid())
    os._exit(1)
