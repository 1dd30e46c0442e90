"""Results: Django's :class:`~django.tasks.TaskResult`, plus cancel, wait, owner and progress.

headrace backends return :class:`TaskResult`, a thin subclass of Django's dataclass (so
``isinstance(result, django.tasks.TaskResult)`` holds and every Django attribute behaves as
documented). It adds:

- ``result.cancel()`` / ``await result.acancel()``: a waiting job never runs, a running async
  job is cancelled, a running sync job sees ``context.cancel_requested``; a cancelled job is
  never retried. Its Django ``status`` is ``FAILED`` with a ``TaskCancelled`` error; ``state``
  says ``CANCELLED``.
- ``await result.wait(timeout=None)``: until the job has finished; the result is refreshed.
- ``state`` (:class:`~headrace.tasks.states.JobState`), ``owner`` and ``progress``, read with
  :func:`job_owner` and :func:`job_progress` (these also accept any other result: ``None``).

``with enqueued_by(user): task.enqueue(...)`` records who enqueued a job; the progress stream's
permission hook compares it with the user asking.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from django.tasks import TaskResult as DjangoTaskResult
from django.tasks import TaskResultStatus
from django.tasks.base import TaskError

from headrace.tasks.jobs import Job, JobError, writable_twin
from headrace.tasks.states import JobState

__all__ = [
    "TaskResult",
    "build_result",
    "current_owner",
    "enqueued_by",
    "finished_message",
    "job_finished_message",
    "job_owner",
    "job_progress",
]

if TYPE_CHECKING:
    _ResultBase = DjangoTaskResult[..., Any]
else:
    _ResultBase = DjangoTaskResult

_REFRESHED = (
    "errors",
    "_return_value",
    "finished_at",
    "started_at",
    "last_attempted_at",
    "status",
    "enqueued_at",
    "worker_ids",
    "state",
    "owner",
    "progress",
    "cancel_requested",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskResult(_ResultBase):  # type: ignore[misc]  # frozen at run time
    state: JobState = JobState.READY
    owner: str | None = None
    progress: Mapping[str, Any] | None = None
    cancel_requested: bool = False

    def _take(self, fresh: DjangoTaskResult[..., Any]) -> None:
        for name in _REFRESHED:
            object.__setattr__(self, name, getattr(fresh, name))

    def _backend(self) -> Any:
        return self.task.get_backend()

    def refresh(self) -> None:
        """Reload from the store (Django's ``refresh``, also reloading what headrace adds)."""
        self._take(self._backend().get_result(self.id))

    async def arefresh(self) -> None:
        self._take(await self._backend().aget_result(self.id))

    def cancel(self) -> bool:
        """Cancel the job; True when it will end ``CANCELLED`` (False: it had finished)."""
        cancelled: bool = self._backend().cancel(self.id)
        self.refresh()
        return cancelled

    async def acancel(self) -> bool:
        cancelled: bool = await self._backend().acancel(self.id)
        await self.arefresh()
        return cancelled

    async def wait(self, timeout: float | None = None) -> TaskResult:
        """Wait until the job has finished and refresh; :class:`TimeoutError` after
        ``timeout`` seconds."""
        await self._backend().wait_finished(self.id, timeout)
        await self.arefresh()
        return self


#: How each field of a :class:`TaskResult` is read off a stored job ``j`` (see _make_builder).
_FROM_JOB: Final = {
    "task": "task",
    "id": "j.id",
    "status": "STATUS[j.state]",
    "enqueued_at": "stamp(j.enqueued_at, UTC)",
    "started_at": "None if j.started_at is None else stamp(j.started_at, UTC)",
    "finished_at": "None if j.finished_at is None else stamp(j.finished_at, UTC)",
    "last_attempted_at": (
        "None if j.last_attempted_at is None else stamp(j.last_attempted_at, UTC)"
    ),
    "args": "list(j.args)",
    "kwargs": "dict(j.kwargs)",
    "backend": "backend",
    "errors": "[error(e) for e in j.errors] if j.errors else []",
    "worker_ids": "list(j.worker_ids)",
    "_return_value": "j.return_value if j.state is SUCCESSFUL else None",
    "state": "j.state",
    "owner": "j.owner",
    "progress": "j.progress",
    "cancel_requested": "j.cancel_requested",
}


def _error(error: JobError) -> TaskError:
    return TaskError(exception_class_path=error.exception_class_path, traceback=error.traceback)


def _make_builder() -> Callable[[Job, Any, str], TaskResult]:
    # Stores hold only JSON, so a result built from a stored job skips Django's
    # ``__post_init__`` (which normalizes the arguments): one generated function reads the
    # job into a writable twin of TaskResult and then makes it a TaskResult.
    names = tuple(f.name for f in fields(TaskResult))
    if set(names) != _FROM_JOB.keys():  # pragma: no cover - Django's TaskResult changed
        raise TypeError(f"TaskResult's fields changed: {sorted(set(names) ^ _FROM_JOB.keys())}")
    namespace: dict[str, Any] = {
        "TaskResult": TaskResult,
        "Twin": writable_twin(TaskResult),
        "new": object.__new__,
        "stamp": datetime.fromtimestamp,
        "UTC": UTC,
        "STATUS": {state: state.status for state in JobState},
        "SUCCESSFUL": JobState.SUCCESSFUL,
        "error": _error,
    }
    lines = ["def build(j, task, backend):", "    r = new(Twin)"]
    lines += [f"    r.{name} = {_FROM_JOB[name]}" for name in names]
    exec("\n".join([*lines, "    r.__class__ = TaskResult", "    return r"]), namespace)
    builder: Callable[[Job, Any, str], TaskResult] = namespace["build"]
    return builder


#: ``build_result(job, task, backend_alias)``: the :class:`TaskResult` of a stored job.
build_result = _make_builder()

_owner: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "headrace_task_owner", default=None
)


@contextlib.contextmanager
def enqueued_by(user: Any) -> Iterator[None]:
    """Record ``user`` (a user object, or a primary key) as the owner of jobs enqueued inside.

    An anonymous user or ``None`` records no owner.
    """
    if user is None or getattr(user, "is_authenticated", True) is False:
        owner = None
    else:
        pk = getattr(user, "pk", user)
        owner = None if pk is None else str(pk)
    token = _owner.set(owner)
    try:
        yield
    finally:
        _owner.reset(token)


def current_owner() -> str | None:
    """The owner :func:`enqueued_by` set for this context, or None."""
    return _owner.get()


def job_owner(result: DjangoTaskResult[..., Any]) -> str | None:
    """The primary key (as a str) of the user who enqueued the job, or None."""
    return getattr(result, "owner", None)


def job_progress(result: DjangoTaskResult[..., Any]) -> Mapping[str, Any] | None:
    """The job's last progress (``{"done": ..., "total": ..., "info": {...}}``), or None."""
    return getattr(result, "progress", None)


def finished_message(result: DjangoTaskResult[..., Any]) -> dict[str, Any] | None:
    """The group message that announces how a finished job ended, or None while it runs:

    ``{"type": "task.finished", "id", "return_value"}``, or ``"task.failed"`` /
    ``"task.cancelled"`` with ``"error": {"exception_class", "traceback"}`` (the last error).
    A stream that starts after the job finished can send it to catch up.
    """
    state = getattr(result, "state", None)
    if state is None:  # a result from another backend: Django's statuses only
        finished = result.is_finished
        cancelled = False
    else:
        finished = state.is_finished
        cancelled = state is JobState.CANCELLED
    if not finished:
        return None
    last = result.errors[-1] if result.errors else None
    successful = result.status == TaskResultStatus.SUCCESSFUL
    value = result.return_value if successful else None
    return _ending(result.id, successful, cancelled, value, last)


def job_finished_message(job: Job) -> dict[str, Any] | None:
    """:func:`finished_message` read straight from a stored job (no result built)."""
    state = job.state
    if not state.is_finished:
        return None
    last = job.errors[-1] if job.errors else None
    successful = state is JobState.SUCCESSFUL
    return _ending(job.id, successful, state is JobState.CANCELLED, job.return_value, last)


def _ending(
    job_id: str, successful: bool, cancelled: bool, return_value: Any, last: Any
) -> dict[str, Any]:
    if successful:
        return {"type": "task.finished", "id": job_id, "return_value": return_value}
    error = (
        None
        if last is None
        else {"exception_class": last.exception_class_path, "traceback": last.traceback}
    )
    return {"type": "task.cancelled" if cancelled else "task.failed", "id": job_id, "error": error}
