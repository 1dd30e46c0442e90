"""The stored job: one frozen value per job, replaced on every move.

A :class:`Job` is what a store keeps (the in-memory store as is; Redis and SQL stores as a hash
or a row with the same fields). It holds only JSON values and the task's dotted path, never
the function, so any process can run it. Times are seconds since the epoch from the store's
clock. :func:`job_options` takes from a task the options a job needs once it is stored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from headrace.tasks._slots import slot_setters
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


class _Factory:
    """The default of a field with a ``default_factory`` (shown as the dataclass shows it)."""

    def __repr__(self) -> str:
        return "<factory>"


def _make_init() -> Callable[..., None]:
    # Job's own __init__, with the dataclass's signature and defaults, setting each slot
    # through its descriptor (see headrace.tasks._slots): a job is made per enqueue.
    namespace: dict[str, Any] = {f"s_{name}": s for name, s in slot_setters(Job, _FIELDS).items()}
    params = []
    body = []
    for f in fields(Job):
        if f.default is not MISSING:
            namespace[f"d_{f.name}"] = f.default
            params.append(f"{f.name}=d_{f.name}")
            body.append(f"    s_{f.name}(self, {f.name})")
        elif f.default_factory is not MISSING:
            namespace[f"f_{f.name}"] = f.default_factory
            params.append(f"{f.name}=_NO_VALUE")
            body.append(
                f"    s_{f.name}(self, f_{f.name}() if {f.name} is _NO_VALUE else {f.name})"
            )
        else:
            params.append(f.name)
            body.append(f"    s_{f.name}(self, {f.name})")
    namespace["_NO_VALUE"] = _Factory()
    source = f"def __init__(self, *, {', '.join(params)}):\n" + "\n".join(body)
    exec(source, namespace)
    init: Callable[..., None] = namespace["__init__"]
    init.__qualname__ = "Job.__init__"
    init.__doc__ = Job.__init__.__doc__
    return init


def _make_copier() -> Callable[[Job, dict[str, Any]], Job]:
    # One generated function that copies every slot (a loop over names costs twice as much).
    namespace: dict[str, Any] = {f"s_{name}": s for name, s in slot_setters(Job, _FIELDS).items()}
    namespace.update({"Job": Job, "new": object.__new__})
    body = "\n".join(
        f"    s_{name}(n, c[{name!r}] if {name!r} in c else j.{name})" for name in _FIELDS
    )
    exec(f"def copy_with(j, c):\n    n = new(Job)\n{body}\n    return n", namespace)
    copier: Callable[[Job, dict[str, Any]], Job] = namespace["copy_with"]
    return copier


Job.__init__ = _make_init()  # type: ignore[method-assign]
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
