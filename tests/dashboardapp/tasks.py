"""Tasks the dashboard tests enqueue (importable by path, as a worker needs)."""

from __future__ import annotations

import threading

from headrace.tasks import task

#: Names ``flaky`` has failed for once (it succeeds the next time).
_seen: set[str] = set()
_seen_lock = threading.Lock()


@task()
def add(a: int, b: int) -> int:
    return a + b


@task()
def explode(reason: str) -> None:
    raise RuntimeError(f"exploded on purpose: {reason}")


@task()
def flaky(name: str) -> str:
    """Fails the first time it runs for ``name``, succeeds afterwards."""
    with _seen_lock:
        first = name not in _seen
        _seen.add(name)
    if first:
        raise ValueError(f"first run of {name} fails")
    return f"{name} ran again"


@task(max_retries=1, autoretry_for=(KeyError,), retry_backoff=False, default_retry_delay=0)
def retried_once(name: str) -> None:
    raise KeyError(name)


#: Set when ``hang`` starts (from the worker's loop; the test waits on it from a thread).
HANGING = threading.Event()


@task()
async def hang() -> None:
    """Runs until its worker cancels it (a worker stopped with ``now=True``)."""
    import asyncio

    HANGING.set()
    await asyncio.Event().wait()
