"""The tasks bench/tasks.py runs (module-level, as Django's tasks must be)."""

from __future__ import annotations

import asyncio
import time

from headrace.tasks import task

#: Set by :func:`stamp_start`; re-armed by the benchmark before each sample.
started: asyncio.Event = asyncio.Event()
started_at: float = 0.0


@task()
async def noop_async() -> None:
    pass


@task()
def noop_sync() -> None:
    pass


@task()
async def stamp_start() -> None:
    global started_at
    started_at = time.perf_counter()
    started.set()
