"""The stored job: one frozen value per job, replaced on every move.

A :class:`Job` is what a store keeps (the in-memory store as is; Redis and SQL stores as a hash
or a row with the same fields). It holds only JSON values and the task's dotted path, never
the function, so any process can run it. Times are seconds since the epoch from the store's
clock. :func:`job_options` takes from a task the options a job needs once it is stored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from headrace.tasks.states import JobState

__all__ = ["Job", "JobError", "job_options"]


@dataclass(frozen=True, slots=True, kw_only=True)
class JobError:
    """One failed attempt: the exception's class path and its formatted traceback."""

    exception_class_path: str
    traceback: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    id: str
    task_path: str  #: dotted path of the module-level Task object
    args: list[Any]
    kwargs: dict[str, Any]
    queue: str
    priority: int
    backend: str
    state: JobState = JobState.READY
    enqueued_at: float
    due_at: float  #: not started before this (``run_after``, ``countdown``, retry delays)
    expires_at: float | None = None  #: fails with TaskExpired if not started by then
    started_at: float | None = None
    finished_at: float | None = None
    last_attempted_at: float | None = None
    worker_ids: tuple[str, ...] = ()
    errors: tuple[JobError, ...] = ()
    return_value: Any = None
    retries: int = 0  #: retries already run (0 during the first attempt)
    key: str | None = None
    owner: str | None = None  #: pk of the user who enqueued it (``enqueued_by``)
    progress: Mapping[str, Any] | None = None
    cancel_requested: bool = False
    result_expires_at: float | None = None  #: set when it finishes: now + result_ttl
    options: Mapping[str, Any] = field(default_factory=dict)  #: see :func:`job_options`

    @property
    def is_finished(self) -> bool:
        return self.state.is_finished

    def evolve(self, **changes: Any) -> Job:
        """A copy with ``changes`` (what ``dataclasses.replace`` does, without re-running
        ``__init__``: stores call this on every move, so it is on the hot path)."""
        unknown = changes.keys() - _FIELD_SET
        if unknown:
            raise TypeError(f"Job has no field {', '.join(map(repr, sorted(unknown)))}")
        new: Job = _copy_with(self, changes)
        return new

    @property
    def is_live(self) -> bool:
        """Waiting or running (what an idempotency key protects)."""
        return not self.state.is_finished


_FIELDS = tuple(f.name for f in fields(Job))
_FIELD_SET = frozenset(_FIELDS)


def _make_copier() -> Callable[[Job, dict[str, Any]], Job]:
    # One generated function that copies every slot (a loop over names costs twice as much).
    body = "\n".join(
        f"    s(n, {name!r}, c[{name!r}] if {name!r} in c else j.{name})" for name in _FIELDS
    )
    namespace: dict[str, Any] = {"Job": Job, "new": object.__new__, "s": object.__setattr__}
    exec(f"def copy_with(j, c):\n    n = new(Job)\n{body}\n    return n", namespace)
    copier: Callable[[Job, dict[str, Any]], Job] = namespace["copy_with"]
    return copier


_copy_with = _make_copier()

_OPTION_FIELDS = (
    "max_retries",
    "retry_backoff",
    "retry_backoff_max",
    "retry_jitter",
    "default_retry_delay",
    "timeout",
    "result_ttl",
)


def job_options(task: Any) -> dict[str, Any]:
    """The scalar options a stored job carries (``using()`` may have changed them)."""
    return {name: getattr(task, name, None) for name in _OPTION_FIELDS}
