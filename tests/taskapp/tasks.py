"""Module-level tasks for the task tests. ``CALLS`` records what ran, on which thread/loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from django.tasks import task as django_task

from headrace.tasks import TaskCancelled, task

CALLS: list[tuple[str, Any]] = []
#: Events tests use to hold a job in the middle of running.
GATES: dict[str, threading.Event] = {}
ASYNC_GATES: dict[str, asyncio.Event] = {}


@django_task
def add(a: int, b: int) -> int:
    CALLS.append(("add", (a, b)))
    return a + b


@task(priority=0)
def record(label: str) -> str:
    CALLS.append(("record", label))
    return label


@django_task
async def where_async() -> int:
    loop = asyncio.get_running_loop()
    CALLS.append(("where_async", (threading.get_ident(), id(loop))))
    return 1


@django_task
def where_sync() -> int:
    CALLS.append(("where_sync", threading.get_ident()))
    return 1


@django_task
def boom(message: str) -> None:
    raise ValueError(message)


@task(autoretry_for=(ConnectionError,), retry_backoff=True, retry_backoff_max=3, max_retries=4)
def flaky(succeed_on: int) -> int:
    CALLS.append(("flaky", succeed_on))
    if sum(1 for name, _ in CALLS if name == "flaky") < succeed_on:
        raise ConnectionError("try again")
    return succeed_on


@task(
    autoretry_for=(Exception,),
    dont_autoretry_for=(KeyError,),
    max_retries=5,
    default_retry_delay=7,
)
def picky(kind: str) -> None:
    CALLS.append(("picky", kind))
    raise KeyError(kind) if kind == "key" else RuntimeError(kind)


@task(takes_context=True, max_retries=2, default_retry_delay=30)
def asks_to_retry(context: Any, countdown: float | None) -> int:
    CALLS.append(("asks_to_retry", context.attempt))
    if context.attempt < 3:
        context.retry(exc=RuntimeError(f"attempt {context.attempt}"), countdown=countdown)
    return context.attempt


@task(takes_context=True)
async def held_async(context: Any, gate: str) -> str:
    CALLS.append(("held_async", context.task_result.id))
    await ASYNC_GATES[gate].wait()
    return "done"


@task(takes_context=True, autoretry_for=(Exception,), default_retry_delay=0)
def held_sync(context: Any, gate: str) -> str:
    CALLS.append(("held_sync", context.task_result.id))
    GATES[gate].wait(10)
    if context.cancel_requested:
        raise TaskCancelled("saw the cancel")
    return "done"


@task(timeout=5, takes_context=True)
async def slow_async(context: Any, gate: str) -> str:
    CALLS.append(("slow_async", gate))
    await ASYNC_GATES[gate].wait()
    return "done"


@task(expires=60)
def expiring() -> str:
    return "ran"


@task(key="the-one-report")
async def report(gate: str) -> str:
    await ASYNC_GATES[gate].wait()
    return "report"


@task(result_ttl=100)
def short_lived() -> int:
    return 7


@task(takes_context=True)
async def progressing(context: Any, gate: str) -> str:
    context.progress(1, 3, stage="one")
    context.progress(2, 3, stage="two")
    context.progress(3, 3, stage="three")
    await ASYNC_GATES[gate].wait()
    return "done"


@django_task(queue_name="emails")
def in_emails() -> str:
    CALLS.append(("in_emails", None))
    return "email"


@task
def returns_a_set() -> Any:
    return {1, 2}


@task(priority=5)
def urgent(label: str) -> str:
    CALLS.append(("record", label))
    return label


@django_task(autoretry_for=(OSError,), max_retries=1, default_retry_delay=0)
def django_decorated_flaky() -> None:
    CALLS.append(("django_decorated_flaky", None))
    raise OSError("still down")


@task(timeout=5, takes_context=True)
def slow_sync(context: Any, gate: str) -> str:
    CALLS.append(("slow_sync", gate))
    GATES[gate].wait(10)
    return f"cancel_requested={context.cancel_requested}"


@task(takes_context=True)
def progressing_sync(context: Any, gate: str) -> str:
    context.progress(1, 2, stage="sync")
    GATES[gate].wait(10)
    return "done"


@django_task
def held_plain_sync(gate: str) -> None:
    CALLS.append(("held_plain_sync", threading.get_ident()))
    GATES[gate].wait(10)


@django_task
def exits() -> None:
    raise SystemExit(3)
