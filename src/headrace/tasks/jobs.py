"""The stored job: one frozen value per job, replaced on every move.

A :class:`Job` is what a store keeps (the in-memory store as is; Redis and SQL stores as a hash
or a row with the same fields). It holds only JSON values and the task's dotted path, never
the function, so any process can run it. Times are seconds since the epoch from the store's
clock. :func:`job_options` takes from a task the options a job needs once it is stored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Final

from headrace.tasks.states import JobState

__all__ = ["Job", "JobError", "copy_job", "job_copier", "job_options", "writable_twin"]


@dataclass(frozen=True, slots=True, kw_only=True)
class JobError:
    """One failed attempt: the exception's class path and its formatted traceback."""

    exception_class_path: str
    traceback: str


def writable_twin(cls: type) -> type:
    """A subclass of the frozen, slotted dataclass ``cls`` with Python's plain attribute
    stores (a frozen class refuses them, and setting each slot through its descriptor costs
    three times as much). A value is built as the twin and then made a ``cls`` by assigning
    ``__class__``: the layout is the same, so the swap is one pointer, and the value is as
    frozen as any other."""
    return type(
        f"_Writable{cls.__name__}",
        (cls,),
        {
            "__slots__": (),
            # Both, so that the type's attribute stores are the generic (fast) ones again.
            "__setattr__": object.__setattr__,
            "__delattr__": object.__delattr__,
            "__module__": cls.__module__,
        },
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    id: str
    task_path: str  #: dotted path of the module-level Task object
    #: The in-memory store keeps a tuple (one object fewer for the garbage collector to
    #: walk for as long as the result is kept); stores that decode JSON give a list.
    args: Sequence[Any]
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
        return copy_job(self, changes)

    @property
    def is_live(self) -> bool:
        """Waiting or running (what an idempotency key protects)."""
        return not self.state.is_finished


_FIELDS: Final = tuple(f.name for f in fields(Job))
_FIELD_SET = frozenset(_FIELDS)
_Writable = writable_twin(Job)


class _Factory:
    """The default of a field with a ``default_factory`` (shown as the dataclass shows it)."""

    def __repr__(self) -> str:
        return "<factory>"


def _make_init() -> Callable[..., None]:
    # Job's own __init__, with the dataclass's signature and defaults: the new value is a
    # writable twin while its fields are stored (see writable_twin), a Job again at the end.
    namespace: dict[str, Any] = {"Job": Job, "Twin": _Writable, "become": object.__setattr__}
    params = []
    body = ["    if type(self) is not Job:", "        raise TypeError('Job cannot be subclassed')"]
    body.append("    become(self, '__class__', Twin)")
    for f in fields(Job):
        if f.default is not MISSING:
            namespace[f"d_{f.name}"] = f.default
            params.append(f"{f.name}=d_{f.name}")
            body.append(f"    self.{f.name} = {f.name}")
        elif f.default_factory is not MISSING:
            namespace[f"f_{f.name}"] = f.default_factory
            params.append(f"{f.name}=_NO_VALUE")
            body.append(f"    self.{f.name} = f_{f.name}() if {f.name} is _NO_VALUE else {f.name}")
        else:
            params.append(f.name)
            body.append(f"    self.{f.name} = {f.name}")
    body.append("    self.__class__ = Job")
    namespace["_NO_VALUE"] = _Factory()
    source = f"def __init__(self, *, {', '.join(params)}):\n" + "\n".join(body)
    exec(source, namespace)
    init: Callable[..., None] = namespace["__init__"]
    init.__qualname__ = "Job.__init__"
    init.__doc__ = Job.__init__.__doc__
    return init


def _make_copier(names: tuple[str, ...], *, positional: bool) -> Callable[..., Job]:
    # A function that copies a job with new values for ``names`` (from a dict of changes, or
    # positional arguments in that order): every other field is copied, each in its own line
    # (a loop costs twice as much).
    unknown = sorted(set(names) - _FIELD_SET)
    if unknown:
        raise TypeError(f"Job has no field {', '.join(map(repr, unknown))}")
    if positional:
        lines = [f"def copy_with(j, {', '.join(names)}):", "    n = new(Twin)"]
        new_value = "{name}"
    else:
        lines = ["def copy_with(j, c):", "    n = new(Twin)"]
        new_value = "c[{name!r}]"
    for name in _FIELDS:
        value = new_value.format(name=name) if name in names else f"j.{name}"
        lines.append(f"    n.{name} = {value}")
    namespace: dict[str, Any] = {"Job": Job, "Twin": _Writable, "new": object.__new__}
    exec("\n".join([*lines, "    n.__class__ = Job", "    return n"]), namespace)
    copier: Callable[..., Job] = namespace["copy_with"]
    return copier


def job_copier(*names: str) -> Callable[..., Job]:
    """A function ``copy(job, *values)``: ``job`` with ``names`` set to ``values`` (in that
    order). For a store's hot moves, which always change the same fields."""
    return _make_copier(names, positional=True)


#: One copier per set of changed fields, as the stores' moves use them (a few dozen at most).
_copiers: dict[tuple[str, ...], Callable[..., Job]] = {}


def copy_job(job: Job, changes: dict[str, Any]) -> Job:
    """``job`` with ``changes`` (:meth:`Job.evolve` with the dict itself, not a copy of it)."""
    names = tuple(changes)
    copier = _copiers.get(names)
    if copier is None:
        copier = _make_copier(names, positional=False)
        if len(_copiers) >= 256:  # only a caller inventing field sets gets here
            _copiers.clear()
        _copiers[names] = copier
    return copier(job, changes)


Job.__init__ = _make_init()  # type: ignore[method-assign]

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
