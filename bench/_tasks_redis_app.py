"""The tasks bench/tasks_redis.py runs on headrace: each counts itself done in Redis (the
peers' tasks in bench/_task_peers.py do the same one INCR, so every system does equal work)."""

from __future__ import annotations

import os
import time
from typing import Any

import redis

from headrace.tasks import task

_client: Any = None
_async_client: Any = None


def counter() -> Any:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["HEADRACE_BENCH_REDIS"])
    return _client


def async_counter() -> Any:
    """An asyncio client (the worker process has one event loop)."""
    global _async_client
    if _async_client is None:
        import redis.asyncio

        _async_client = redis.asyncio.Redis.from_url(os.environ["HEADRACE_BENCH_REDIS"])
    return _async_client


@task()
async def noop_async() -> None:
    counter().incr("bench:done")  # a sync round trip: redis.asyncio costs more CPU


@task()
def noop_sync() -> None:
    counter().incr("bench:done")


@task()
async def stamp(due: float) -> None:
    """Record how late after its due time (wall clock) the job started, in ms."""
    await async_counter().rpush("bench:late", (time.time() - due) * 1000)
