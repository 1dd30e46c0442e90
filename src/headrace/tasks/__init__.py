"""Durable background tasks on Django's own task framework (``django.tasks``).

headrace ships task backends (``headrace.tasks.backends.memory.MemoryTaskBackend`` now) whose
task class also takes Celery's option names. Use Django's decorator or this module's
:func:`task`, which is the same with its option names checked up front::

    from headrace.tasks import task

    @task(autoretry_for=(ConnectionError,), retry_backoff=True, takes_context=True)
    def resize(context, image_id: int) -> None: ...

    result = resize.enqueue(42)

See ``docs/reference/tasks.md`` for every option and setting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.tasks import DEFAULT_TASK_BACKEND_ALIAS, DEFAULT_TASK_QUEUE_NAME
from django.tasks import task as django_task
from django.tasks.base import DEFAULT_TASK_PRIORITY

from headrace.tasks.base import Task, check_option_names
from headrace.tasks.context import TaskContext, progress_group
from headrace.tasks.exceptions import (
    HeadraceTaskError,
    InvalidTransition,
    MaxRetriesExceeded,
    Retry,
    TaskCancelled,
    TaskExpired,
    TaskTimeout,
    UnknownTask,
)
from headrace.tasks.policy import RetryPolicy, backoff_delay
from headrace.tasks.results import (
    TaskResult,
    enqueued_by,
    finished_message,
    job_owner,
    job_progress,
)
from headrace.tasks.states import JobState

__all__ = [
    "HeadraceTaskError",
    "InvalidTransition",
    "JobState",
    "MaxRetriesExceeded",
    "Retry",
    "RetryPolicy",
    "Task",
    "TaskCancelled",
    "TaskContext",
    "TaskExpired",
    "TaskResult",
    "TaskTimeout",
    "UnknownTask",
    "backoff_delay",
    "enqueued_by",
    "finished_message",
    "job_owner",
    "job_progress",
    "progress_group",
    "task",
]


def task(
    function: Callable[..., Any] | None = None,
    *,
    priority: int = DEFAULT_TASK_PRIORITY,
    queue_name: str = DEFAULT_TASK_QUEUE_NAME,
    backend: str = DEFAULT_TASK_BACKEND_ALIAS,
    takes_context: bool = False,
    **options: Any,
) -> Any:
    """Django's ``@task`` with Celery's options (see :class:`Task`); an unknown option name
    raises :class:`TypeError` with the closest known name."""
    check_option_names(options)
    decorate: Any = django_task
    return decorate(
        function,
        priority=priority,
        queue_name=queue_name,
        backend=backend,
        takes_context=takes_context,
        **options,
    )
