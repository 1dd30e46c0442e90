"""What ``manage.py tasks stats|list|dead|retry|cancel|purge`` does, as plain functions.

The command only parses its arguments and prints what these return. They work on a backend
that keeps its queues where every process can see them and offers the inspection methods of
:class:`Inspectable` (the Redis backend does); ``cancel`` works on every headrace backend.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from django.tasks.exceptions import TaskResultDoesNotExist

from headrace.exceptions import ConfigurationError
from headrace.tasks.backends.base import HeadraceTaskBackend
from headrace.tasks.jobs import Job

__all__ = [
    "STATES",
    "Inspectable",
    "JobLine",
    "cancel_job",
    "dead_letters",
    "format_jobs",
    "format_stats",
    "inspectable",
    "list_jobs",
    "purge_queue",
    "retry_dead_letters",
]

#: The states ``tasks list --state`` accepts (``running`` = leased to a worker).
STATES = ("ready", "delayed", "running", "dead", "finished")


@runtime_checkable
class Inspectable(Protocol):
    """The inspection methods a backend offers to ``manage.py tasks``."""

    queues: Any

    def queue_statistics(self, queue: str) -> Any: ...

    def job_ids(self, queue: str, state: str) -> list[str]: ...

    def get_job(self, job_id: str) -> Job | None: ...

    def retry_dead(self, job_id: str) -> str: ...

    def purge(self, queue: str) -> int: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class JobLine:
    """One job as ``tasks list`` and ``tasks dead`` show it."""

    id: str
    queue: str
    state: str
    task: str
    attempts: int
    when: float | None  #: due (waiting), started (running) or finished
    error: str  #: the last line of the last error ("" if none)


def inspectable(backend: object, alias: str) -> Inspectable:
    """``backend`` as :class:`Inspectable`, or ConfigurationError saying why it is not."""
    if not isinstance(backend, Inspectable):
        raise ConfigurationError(
            f"TASKS[{alias!r}] ({type(backend).__name__}) keeps no queues another process can "
            "inspect; 'tasks stats|list|dead|retry|purge' work with the Redis backend"
        )
    return backend


def _queues(backend: Inspectable, queue: str | None) -> list[str]:
    known = sorted(backend.queues)
    if queue is None:
        return known
    if queue not in known:
        raise ConfigurationError(f"no queue {queue!r} (the backend's QUEUES: {', '.join(known)})")
    return [queue]


def format_stats(backend: Inspectable, queue: str | None = None) -> str:
    """A table: per queue, jobs ready, delayed, running, dead, finished and the counters."""
    rows = [backend.queue_statistics(name) for name in _queues(backend, queue)]
    header = ("queue", "ready", "delayed", "running", "dead", "finished")
    counters = sorted({name for row in rows for name in row.counters})
    table = [
        (*header, *counters),
        *[
            (
                row.queue,
                row.ready,
                row.delayed,
                row.running,
                row.dead,
                row.finished,
                *(row.counters.get(name, 0) for name in counters),
            )
            for row in rows
        ],
    ]
    return _table(table)


def _line(job: Job, state: str) -> JobLine:
    if job.is_finished:
        when = job.finished_at
    elif job.state.value == "RUNNING":
        when = job.started_at
    else:
        when = job.due_at
    last = job.errors[-1].traceback.strip().splitlines()[-1] if job.errors else ""
    return JobLine(
        id=job.id,
        queue=job.queue,
        state=state,
        task=job.task_path,
        attempts=len(job.worker_ids),
        when=when,
        error=last,
    )


def list_jobs(
    backend: Inspectable, state: str | None = None, queue: str | None = None
) -> list[JobLine]:
    """The jobs in ``state`` (all states if None) of ``queue`` (all queues if None)."""
    if state is not None and state not in STATES:
        raise ConfigurationError(f"--state must be one of {', '.join(STATES)}, got {state!r}")
    lines: list[JobLine] = []
    for name in _queues(backend, queue):
        for each in (state,) if state is not None else STATES:
            for job_id in backend.job_ids(name, each):
                job = backend.get_job(job_id)
                if job is not None:
                    lines.append(_line(job, each))
    return lines


def dead_letters(backend: Inspectable, queue: str | None = None) -> list[JobLine]:
    return list_jobs(backend, "dead", queue)


def format_jobs(lines: Sequence[JobLine]) -> str:
    if not lines:
        return "no jobs\n"
    rows: list[tuple[Any, ...]] = [
        ("id", "queue", "state", "task", "attempts", "when (UTC)", "last error")
    ]
    for line in lines:
        when = (
            ""
            if line.when is None
            else datetime.fromtimestamp(line.when, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
        )
        rows.append(
            (line.id, line.queue, line.state, line.task, line.attempts, when, line.error[:100])
        )
    return _table(rows)


def retry_dead_letters(
    backend: Inspectable, ids: Iterable[str] = (), *, all_dead: bool = False
) -> dict[str, str]:
    """Enqueue dead letters again (each as a new job); returns {dead id: new id}."""
    chosen = list(ids)
    if all_dead:
        chosen += [line.id for line in dead_letters(backend)]
    if not chosen:
        raise ConfigurationError("name a dead letter's id, or give --all-dead")
    return {job_id: backend.retry_dead(job_id) for job_id in dict.fromkeys(chosen)}


def cancel_job(backend: HeadraceTaskBackend, job_id: str) -> str:
    """Cancel a job; what happened, in words."""
    before = backend.get_job(job_id)
    if before is None:
        raise ConfigurationError(f"no task {job_id!r}")
    if before.is_finished:
        return f"task {job_id} is {before.state.value}: nothing to cancel"
    try:
        cancelled = backend.cancel(job_id)
    except TaskResultDoesNotExist:
        raise ConfigurationError(f"no task {job_id!r}") from None
    job = backend.get_job(job_id)
    state = job.state.value if job is not None else "gone"
    if not cancelled:
        return f"task {job_id} is {state}: nothing to cancel"
    if state == "RUNNING":
        return f"task {job_id} is running: its worker was asked to stop it"
    return f"task {job_id} cancelled"


def purge_queue(backend: Inspectable, queue: str) -> int:
    """Delete every job of ``queue``; how many were deleted."""
    return backend.purge(_queues(backend, queue)[0])


def _table(rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        + "\n"
        for row in cells
    )
