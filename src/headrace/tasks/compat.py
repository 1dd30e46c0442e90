"""Celery's shapes over headrace tasks, so Celery code ports by changing its import lines.

::

    # from celery import shared_task
    from headrace.tasks.compat import shared_task

    @shared_task(bind=True, autoretry_for=(Exception,), retry_backoff=True, max_retries=5)
    def notify_author(self, post_id):
        ...
        self.request.id, self.request.retries      # as in Celery
        raise self.retry(exc=error, countdown=30)  # as in Celery

    notify_author.delay(post.id)                   # returns at once
    result = notify_author.apply_async(args=[post.id], countdown=10)
    result.id, result.status, result.get(timeout=5)

Periodic tasks: ``CELERY_BEAT_SCHEDULE`` is read as it is (beside
``HEADRACE_TASKS_SCHEDULE``, see :mod:`headrace.tasks.beat`); import ``crontab`` from here
instead of ``celery.schedules``.

What differs: the task runs on a headrace backend from ``TASKS`` (Django's framework, so
``notify_author.task.enqueue(...)`` works too); the task's name is its import path
(``name=`` is accepted and ignored); only JSON arguments are accepted; ``get()`` raises the
task's exception class when it can be imported (else
:class:`~headrace.tasks.exceptions.HeadraceTaskError`), with the worker's traceback as its message.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from inspect import iscoroutinefunction
from typing import Any, Final

from django.tasks import DEFAULT_TASK_BACKEND_ALIAS, DEFAULT_TASK_QUEUE_NAME
from django.utils.module_loading import import_string

from headrace.tasks.base import Task, check_option_names
from headrace.tasks.context import TaskContext
from headrace.tasks.exceptions import HeadraceTaskError, Retry
from headrace.tasks.schedules import crontab
from headrace.tasks.states import JobState

__all__ = ["AsyncResult", "CeleryTask", "Request", "crontab", "shared_task"]

logger = logging.getLogger("headrace.tasks")

# Celery options that change nothing here: accepted so that decorators port unchanged.
_IGNORED: Final = ("name", "ignore_result", "acks_late", "track_started", "typing", "serializer")
_CELERY_STATUS: Final = {
    JobState.READY: "PENDING",
    JobState.RUNNING: "STARTED",
    JobState.SUCCESSFUL: "SUCCESS",
    JobState.FAILED: "FAILURE",
    JobState.CANCELLED: "REVOKED",
}


class Request:
    """``self.request`` inside a bound task: ``id``, ``retries``, ``args``, ``kwargs``."""

    def __init__(self, context: TaskContext | None) -> None:
        result = context.task_result if context is not None else None
        self.id: str | None = result.id if result is not None else None
        self.retries: int = context.retries if context is not None else 0
        self.args: list[Any] = list(result.args) if result is not None else []
        self.kwargs: dict[str, Any] = dict(result.kwargs) if result is not None else {}
        self.called_directly = context is None


class _Bound:
    """The ``self`` a ``bind=True`` task receives."""

    def __init__(self, wrapper: CeleryTask, context: TaskContext | None) -> None:
        self._wrapper = wrapper
        self.context = context
        self.request = Request(context)

    def retry(
        self,
        exc: BaseException | None = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        eta: datetime | None = None,
        **ignored: Any,
    ) -> Retry:
        """Raise :class:`Retry` (Celery's ``raise self.retry(...)`` works too)."""
        if eta is not None and countdown is None and self.context is not None:
            countdown = max(0.0, eta.timestamp() - self.context.control.clock.time())
        raise Retry(exc=exc, countdown=countdown, max_retries=max_retries)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wrapper, name)


class AsyncResult:
    """Celery's result handle for one job: ``id``, ``status``, ``get()``, ``ready()``..."""

    def __init__(self, job_id: str, task: Task) -> None:
        self.id = job_id
        self._task = task

    @property
    def task_id(self) -> str:
        return self.id

    def _result(self) -> Any:
        return self._task.get_backend().get_result(self.id)

    @property
    def status(self) -> str:
        """``PENDING``, ``STARTED``, ``RETRY`` (waiting after a failed attempt), ``SUCCESS``,
        ``FAILURE`` or ``REVOKED`` (cancelled)."""
        result = self._result()
        if result.state is JobState.READY and result.errors:
            return "RETRY"
        return _CELERY_STATUS[result.state]

    state = status

    def ready(self) -> bool:
        return bool(self._result().is_finished)

    def successful(self) -> bool:
        return self._result().state is JobState.SUCCESSFUL

    def failed(self) -> bool:
        return self._result().state in (JobState.FAILED, JobState.CANCELLED)

    @property
    def result(self) -> Any:
        """The return value once successful, else None."""
        result = self._result()
        return result.return_value if result.state is JobState.SUCCESSFUL else None

    def get(self, timeout: float | None = None, propagate: bool = True) -> Any:
        """Wait (blocking) until the job finished; its return value, or raise its error."""
        backend: Any = self._task.get_backend()
        backend.wait_finished_sync(self.id, timeout)
        result = self._result()
        if result.state is JobState.SUCCESSFUL:
            return result.return_value
        if not propagate:
            return None
        raise _rebuild(result.errors[-1] if result.errors else None)

    def revoke(self, terminate: bool = False) -> None:
        """Cancel the job (``terminate`` is implied for async jobs; see ``cancel()``)."""
        backend: Any = self._task.get_backend()
        backend.cancel(self.id)

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id}>"


def _rebuild(error: Any) -> BaseException:
    if error is None:
        return HeadraceTaskError("the task failed")
    message = error.traceback.strip().splitlines()[-1] if error.traceback else ""
    try:
        cls = import_string(error.exception_class_path)
        if isinstance(cls, type) and issubclass(cls, Exception):
            return cls(message)
    except Exception as failure:  # not importable here, or its __init__ wants other arguments
        logger.debug("raising %s as HeadraceTaskError: %s", error.exception_class_path, failure)
    return HeadraceTaskError(f"{error.exception_class_path}: {message}")


class CeleryTask:
    """What :func:`shared_task` returns: callable, with ``delay`` and ``apply_async``.

    ``.task`` is the underlying headrace :class:`~headrace.tasks.Task` (Django's API).
    """

    def __init__(self, func: Callable[..., Any], task: Task, bind: bool) -> None:
        self.func = func
        self.task = task
        self.bind = bind
        self.name = task.module_path
        functools.update_wrapper(self, func)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function here and now, as Celery does."""
        if self.bind:
            return self.func(_Bound(self, None), *args, **kwargs)
        return self.func(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.task, name)  # max_retries, queue_name, ...

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        *,
        countdown: float | None = None,
        eta: datetime | None = None,
        expires: float | datetime | None = None,
        task_id: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
    ) -> AsyncResult:
        """Enqueue with Celery's per-call options; returns at once."""
        task = self.task
        if queue is not None or priority is not None:
            task = task.using(queue_name=queue, priority=priority)
        backend: Any = task.get_backend()
        result = backend.enqueue_job(
            task,
            list(args or ()),
            dict(kwargs or {}),
            job_id=task_id,
            countdown=countdown,
            eta=eta,
            expires=expires,
        )
        return AsyncResult(result.id, task)


def shared_task(*fargs: Any, **options: Any) -> Any:
    """Celery's decorator: ``@shared_task`` or ``@shared_task(bind=True, **options)``.

    Options: Celery's retry and timing names (see :class:`~headrace.tasks.Task`), ``queue``,
    ``priority``, ``backend`` (a ``TASKS`` alias); ``name``, ``ignore_result``, ``acks_late``,
    ``track_started``, ``typing`` and ``serializer`` are accepted and ignored. Anything else is
    a :class:`TypeError` at decoration.
    """
    if fargs and callable(fargs[0]) and len(fargs) == 1 and not options:
        return _make(fargs[0], {})
    if fargs:
        raise TypeError("use @shared_task or @shared_task(option=value, ...)")
    return lambda func: _make(func, options)


def _make(func: Callable[..., Any], options: dict[str, Any]) -> CeleryTask:
    options = dict(options)
    bind = bool(options.pop("bind", False))
    for name in _IGNORED:
        options.pop(name, None)
    queue = options.pop("queue", DEFAULT_TASK_QUEUE_NAME)
    priority = options.pop("priority", 0)
    backend = options.pop("backend", DEFAULT_TASK_BACKEND_ALIAS)
    if "autoretry_for" in options and isinstance(options["autoretry_for"], list):
        options["autoretry_for"] = tuple(options["autoretry_for"])
    check_option_names(options)
    if bind:
        target = _bound_entry(func)
        holder: dict[str, CeleryTask] = {}
        target.__headrace_bind__ = holder  # type: ignore[attr-defined]
    else:
        target = func
    from django.tasks import task_backends

    task_class = task_backends[backend].task_class
    task: Any = task_class(
        func=target,
        priority=priority,
        queue_name=queue,
        backend=backend,
        takes_context=bind,
        **options,
    )
    wrapper = CeleryTask(func, task, bind)
    if bind:
        holder["task"] = wrapper
    return wrapper


def _bound_entry(func: Callable[..., Any]) -> Callable[..., Any]:
    """The function Django runs for a ``bind=True`` task: it takes the context first, and
    calls ``func`` with a Celery-style ``self``. It carries ``func``'s module and name, so the
    stored job names the decorated object."""

    def holder_of(entry: Any) -> CeleryTask:
        return entry.__headrace_bind__["task"]  # type: ignore[no-any-return]

    if iscoroutinefunction(func):

        async def entry(context: TaskContext, *args: Any, **kwargs: Any) -> Any:
            return await func(_Bound(holder_of(entry), context), *args, **kwargs)

    else:

        def entry(context: TaskContext, *args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
            return func(_Bound(holder_of(entry), context), *args, **kwargs)

    for name in ("__module__", "__name__", "__qualname__", "__doc__"):
        setattr(entry, name, getattr(func, name))
    entry._headrace_signature_of = func  # type: ignore[attr-defined]
    return entry
