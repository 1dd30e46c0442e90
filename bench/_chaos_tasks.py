"""The task of bench/chaos.py's ``task-kills`` scenario: it records each run of itself in
Redis, at its start and at its end, with the pid of the worker process running it.

``<number> <pid>`` goes to the list :data:`STARTED` first thing (so a kill after it shows as a
second start) and to :data:`FINISHED` after the pause, just before the worker acknowledges.
The lists live on the server the jobs live on (``CHAOS_REDIS_URL``), outside the backend's
keys, so the bench counts every run exactly, whichever worker made it and however it ended.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import redis

from headrace.tasks import task

STARTED = "chaos-record:started"
FINISHED = "chaos-record:finished"

_client: Any = None


def recorder() -> Any:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["CHAOS_REDIS_URL"])
    return _client


@task()
async def record(number: int, pause: float) -> int:
    """Record a start, work ``pause`` seconds (so that kills find jobs in hand), record an end."""
    mark = f"{number} {os.getpid()}"
    recorder().rpush(STARTED, mark)
    await asyncio.sleep(pause)
    recorder().rpush(FINISHED, mark)
    return number
