"""The database task backend in the Django admin: jobs, results and dead letters, read-only.

Nothing is edited by hand (a job's state moves only through the store, by the state table);
two actions act through the backend instead: **cancel** (waiting jobs never run, running ones
are asked to stop) and **retry** (a failed or dead-lettered job is enqueued again as a new
job). Registered when ``django.contrib.admin`` is installed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from headrace.tasks.backends.database.models import (
    TaskDeadLetter,
    TaskJob,
    TaskJobResult,
    TaskWorkerHeartbeat,
)

__all__ = [
    "TaskDeadLetterAdmin",
    "TaskJobAdmin",
    "TaskJobResultAdmin",
    "TaskWorkerHeartbeatAdmin",
]


def _when(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, tz=UTC)


def _backend_for(queue: str) -> Any:
    """The database task backend serving ``queue`` (the first ``TASKS`` entry that does)."""
    from django.conf import settings
    from django.tasks import task_backends

    from headrace.tasks.backends.database.backend import DatabaseTaskBackend

    fallback = None
    for alias in getattr(settings, "TASKS", None) or {}:
        backend = task_backends[alias]
        if isinstance(backend, DatabaseTaskBackend):
            if queue in backend.queues:
                return backend
            fallback = fallback or backend
    if fallback is None:
        raise LookupError("no TASKS entry uses the database task backend")
    return fallback


class _ReadOnly(admin.ModelAdmin):  # type: ignore[type-arg]
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="enqueued")
    def enqueued(self, obj: Any) -> datetime | None:
        return _when(obj.enqueued_at)


@admin.register(TaskJob)
class TaskJobAdmin(_ReadOnly):
    list_display = ("job_id", "task_path", "queue", "priority", "state", "enqueued", "due")
    list_filter = ("state", "queue")
    search_fields = ("job_id", "task_path", "idempotency_key")
    actions = ["cancel"]

    @admin.display(description="due")
    def due(self, obj: TaskJob) -> datetime | None:
        return _when(obj.due_at)

    @admin.action(description="Cancel the selected jobs")
    def cancel(self, request: HttpRequest, queryset: QuerySet[TaskJob]) -> None:
        done = 0
        for job in queryset:
            try:
                if _backend_for(job.queue).cancel(job.job_id):
                    done += 1
            except Exception as error:
                self.message_user(request, f"{job.job_id}: {error}", messages.ERROR)
        self.message_user(request, f"{done} job(s) cancelled or asked to stop.")


@admin.register(TaskJobResult)
class TaskJobResultAdmin(_ReadOnly):
    list_display = ("job_id", "task_path", "queue", "state", "enqueued", "finished", "expires")
    list_filter = ("state", "queue")
    search_fields = ("job_id", "task_path")
    actions = ["retry"]

    @admin.display(description="finished")
    def finished(self, obj: TaskJobResult) -> datetime | None:
        return _when(obj.finished_at)

    @admin.display(description="kept until")
    def expires(self, obj: TaskJobResult) -> datetime | None:
        return _when(obj.result_expires_at)

    @admin.action(description="Retry the selected failed jobs (as new jobs)")
    def retry(self, request: HttpRequest, queryset: QuerySet[TaskJobResult]) -> None:
        ids = []
        for result in queryset:
            if result.state == "SUCCESSFUL":
                self.message_user(
                    request, f"{result.job_id} succeeded; not retried", messages.WARNING
                )
                continue
            try:
                backend = _backend_for(result.queue)
                task = backend.resolve_task(result.task_path).using(
                    priority=result.priority, queue_name=result.queue
                )
                ids.append(
                    backend.enqueue_job(task, result.args, result.kwargs, owner=result.owner).id
                )
            except Exception as error:
                self.message_user(request, f"{result.job_id}: {error}", messages.ERROR)
        if ids:
            self.message_user(request, f"enqueued again as {', '.join(ids)}")


@admin.register(TaskDeadLetter)
class TaskDeadLetterAdmin(_ReadOnly):
    list_display = ("job_id", "task_path", "queue", "losses", "dead", "retried_as")
    list_filter = ("queue",)
    search_fields = ("job_id", "task_path")
    actions = ["retry"]

    @admin.display(description="dead since")
    def dead(self, obj: TaskDeadLetter) -> datetime | None:
        return _when(obj.dead_at)

    @admin.action(description="Retry the selected dead letters (as new jobs)")
    def retry(self, request: HttpRequest, queryset: QuerySet[TaskDeadLetter]) -> None:
        ids = []
        for letter in queryset:
            try:
                ids.append(_backend_for(letter.queue).retry_dead(letter.pk))
            except Exception as error:
                self.message_user(request, f"{letter.job_id}: {error}", messages.ERROR)
        if ids:
            self.message_user(request, f"enqueued again as {', '.join(ids)}")


@admin.register(TaskWorkerHeartbeat)
class TaskWorkerHeartbeatAdmin(_ReadOnly):
    list_display = ("worker_id", "hostname", "pid", "running", "last_seen")

    @admin.display(description="last seen")
    def last_seen(self, obj: TaskWorkerHeartbeat) -> datetime | None:
        return _when(obj.last_seen_at)
