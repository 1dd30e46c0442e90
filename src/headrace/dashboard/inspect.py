"""What the dashboard and ``/metrics`` ask of a task backend: one small, backend-neutral API.

A task backend answers these questions through a :class:`TaskInspector`: its queues (ready,
delayed, running and dead counts, the oldest waiting job's age), its workers (with their last
heartbeat), its jobs (listed by state, task name or id), its counters and histograms, and the
three actions a person may take on a job (retry, cancel, purge).

:func:`inspector_for` finds the inspector of a backend: a backend that has an ``inspector()``
method (the Redis and database backends, whose counters live in the store, cluster-wide)
gives its own; the in-memory backend gets :class:`headrace.dashboard.memory.MemoryInspector`,
whose counters live in the process and die with it.

Every value here is a frozen snapshot, safe to hand to another thread or to JSON.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, runtime_checkable

from headrace.exceptions import ConfigurationError
from headrace.tasks.jobs import Job
from headrace.tasks.states import JobState

__all__ = [
    "COUNTER_NAMES",
    "HISTOGRAM_BUCKETS",
    "HISTOGRAM_NAMES",
    "Counters",
    "Histogram",
    "JobPage",
    "JobQuery",
    "QueueStatistics",
    "TaskInspector",
    "WorkerInfo",
    "inspector_for",
]

#: The task counters every inspector keeps, by (task path, queue); exported as
#: ``headrace_task_<name>_total``.
COUNTER_NAMES: Final = (
    "enqueued",
    "started",
    "succeeded",
    "failed",
    "retried",
    "redelivered",
    "dead",
    "cancelled",
)
#: The histograms (seconds), by (task path, queue): ``headrace_task_<name>_seconds``.
HISTOGRAM_NAMES: Final = ("runtime", "queue_wait")
#: Upper bounds of the histogram buckets, in seconds (a last ``+Inf`` bucket is implied).
HISTOGRAM_BUCKETS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueStatistics:
    """One queue, now."""

    name: str
    ready: int  #: due and waiting for a worker
    delayed: int  #: waiting for their due time (countdown, eta, retry backoff)
    running: int
    dead: int  #: dead-lettered (lost by workers too many times)
    oldest_ready_age: float | None  #: seconds the longest-waiting due job has waited


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerInfo:
    """One task worker, as the backend last heard of it."""

    id: str
    host: str
    pid: int
    queues: tuple[str, ...]
    concurrency: int
    in_hand: int  #: jobs it is running
    last_heartbeat: float  #: seconds since the epoch
    up: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Histogram:
    """Cumulative bucket counts (one per :data:`HISTOGRAM_BUCKETS` bound, then ``+Inf``)."""

    buckets: tuple[int, ...]
    sum: float

    @property
    def count(self) -> int:
        return self.buckets[-1]


@dataclass(frozen=True, slots=True, kw_only=True)
class Counters:
    """Counters since the backend's store began (cluster-wide for a shared store)."""

    #: (counter name, task path, queue) -> count; names from :data:`COUNTER_NAMES`
    counts: Mapping[tuple[str, str, str], int] = field(default_factory=dict)
    #: (histogram name, task path, queue) -> histogram; names from :data:`HISTOGRAM_NAMES`
    histograms: Mapping[tuple[str, str, str], Histogram] = field(default_factory=dict)

    def total(self, name: str, queue: str | None = None) -> int:
        """The sum of one counter over every task (and queue, unless one is given)."""
        return sum(
            value
            for (n, _, q), value in self.counts.items()
            if n == name and (queue is None or q == queue)
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class JobQuery:
    """Which jobs to list: all filters optional, newest first."""

    state: JobState | None = None
    task: str = ""  #: a part of the task's dotted path (case-insensitive)
    queue: str = ""
    search: str = ""  #: a part of the job id
    limit: int = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class JobPage:
    jobs: Sequence[Job]
    total: int  #: jobs that matched (``jobs`` holds at most ``limit`` of them)


@runtime_checkable
class TaskInspector(Protocol):
    """Read a task backend's state and act on its jobs (see the module docstring)."""

    def queues(self) -> list[QueueStatistics]: ...

    def workers(self) -> list[WorkerInfo]: ...

    def jobs(self, query: JobQuery) -> JobPage: ...

    def job(self, job_id: str) -> Job | None: ...

    def counters(self) -> Counters: ...

    def retry(self, job_id: str) -> str:
        """Enqueue a finished job again (same task, arguments, queue and priority); the new
        job's id. :class:`ValueError` if the job is still waiting or running."""
        ...

    def cancel(self, job_id: str) -> bool:
        """What :meth:`headrace.tasks.TaskResult.cancel` does."""
        ...

    def purge(self, job_id: str) -> bool:
        """Forget a finished job now (before its ``result_ttl``); False if it was already
        gone. :class:`ValueError` if it is still waiting or running (cancel it first)."""
        ...


def inspector_for(backend: Any) -> TaskInspector:
    """The :class:`TaskInspector` of a ``TASKS`` backend object."""
    own = getattr(backend, "inspector", None)
    if callable(own):
        inspector: TaskInspector = own()
        return inspector
    from headrace.tasks.backends.memory import MemoryTaskBackend

    if isinstance(backend, MemoryTaskBackend):
        from headrace.dashboard.memory import MemoryInspector

        return MemoryInspector(backend)
    raise ConfigurationError(
        f"TASKS[{getattr(backend, 'alias', '?')!r}] is {type(backend).__module__}."
        f"{type(backend).__qualname__}, which has no inspector(): the dashboard and /metrics "
        "read headrace task backends"
    )
