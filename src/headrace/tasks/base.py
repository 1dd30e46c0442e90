"""headrace's task class: Django's :class:`django.tasks.Task` plus Celery's option names.

Every headrace backend uses :class:`Task` as its ``task_class``, so Django's own decorator
passes Celery's options straight through::

    from django.tasks import task

    @task(autoretry_for=(ConnectionError,), retry_backoff=True, max_retries=5)
    def notify_author(post_id: int) -> None: ...

The options are checked when the task is decorated (and again by :meth:`Task.using`), not
when a worker first runs it. :func:`check_arguments` is the check every enqueue applies: the
arguments must be JSON, and a model instance, a datetime or a set gets a message saying what
to pass instead.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Final

from django.tasks import Task as DjangoTask
from django.tasks import task_backends
from django.tasks.exceptions import InvalidTask

from headrace.tasks.policy import RetryPolicy

__all__ = [
    "DEFAULT_RESULT_TTL",
    "OPTION_NAMES",
    "Task",
    "check_arguments",
    "check_key",
    "check_option_names",
    "check_options",
    "to_json",
]

if TYPE_CHECKING:
    _TaskBase = DjangoTask[..., Any]
else:
    _TaskBase = DjangoTask

#: Seconds a finished job's result is kept unless ``result_ttl`` says otherwise (one day).
DEFAULT_RESULT_TTL: Final = 86400.0

#: The Celery-named options :class:`Task` accepts besides Django's own fields.
OPTION_NAMES: Final = (
    "autoretry_for",
    "dont_autoretry_for",
    "max_retries",
    "retry_backoff",
    "retry_backoff_max",
    "retry_jitter",
    "default_retry_delay",
    "countdown",
    "expires",
    "timeout",
    "result_ttl",
    "key",
)
_DECORATION_ONLY: Final = ("autoretry_for", "dont_autoretry_for")
_DJANGO_USING: Final = ("priority", "queue_name", "run_after", "backend")
# Idempotency keys may reach a store's key space: printable ASCII without spaces, bounded.
_KEY_RE: Final = re.compile(r"[!-~]{1,200}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Task(_TaskBase):
    """A Django task that also understands Celery's options (all optional; see the reference).

    Times are seconds. ``countdown`` delays every enqueue (``run_after`` still wins when set);
    ``expires`` fails a job that has not started that long after it was enqueued; ``timeout``
    cancels an async job that runs longer (for a sync job it only sets
    ``context.cancel_requested``: Python cannot stop a thread); ``key`` makes enqueue
    idempotent: while a job with that key is waiting or running, enqueueing again returns it.
    """

    autoretry_for: tuple[type[BaseException], ...] = ()
    dont_autoretry_for: tuple[type[BaseException], ...] = ()
    max_retries: int | None = 3
    retry_backoff: bool | float = False
    retry_backoff_max: float = 600.0
    retry_jitter: bool = True
    default_retry_delay: float = 180.0
    countdown: float | None = None
    expires: float | None = None
    timeout: float | None = None
    result_ttl: float = DEFAULT_RESULT_TTL
    key: str | None = None
    # Derived once per task object (a frozen value): what a stored job needs of the options.
    _policy: RetryPolicy = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("autoretry_for", "dont_autoretry_for"):
            value = getattr(self, name)
            if isinstance(value, type):
                object.__setattr__(self, name, (value,))
            elif isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        check_options(self)
        object.__setattr__(
            self,
            "_policy",
            RetryPolicy(
                autoretry_for=self.autoretry_for,
                dont_autoretry_for=self.dont_autoretry_for,
                max_retries=self.max_retries,
                retry_backoff=self.retry_backoff,
                retry_backoff_max=float(self.retry_backoff_max),
                retry_jitter=self.retry_jitter,
                default_retry_delay=float(self.default_retry_delay),
            ),
        )
        DjangoTask.__post_init__(self)  # the backend's validate_task

    @property
    def retry_policy(self) -> RetryPolicy:
        return self._policy

    def get_backend(self) -> Any:
        """Django's lookup, without its import statement on every call (enqueue's path)."""
        return task_backends[self.backend]

    def using(
        self,
        *,
        priority: int | None = None,
        queue_name: str | None = None,
        run_after: datetime | None = None,
        backend: str | None = None,
        **options: Any,
    ) -> Task:
        """A copy with other defaults: Django's four, plus any Celery option (checked) but
        ``autoretry_for`` and ``dont_autoretry_for``, which only decoration sets."""
        check_option_names(options)
        fixed = [name for name in options if name in _DECORATION_ONLY]
        if fixed:
            # Exception classes cannot travel with a stored job: they come from the task.
            raise TypeError(f"{', '.join(fixed)} can only be set when the task is decorated")
        changes: dict[str, Any] = dict(options)
        for name, value in zip(
            _DJANGO_USING, (priority, queue_name, run_after, backend), strict=True
        ):
            if value is not None:
                changes[name] = value
        return replace(self, **changes)

    def enqueue_on_commit(self, *args: Any, **kwargs: Any) -> str:
        """Enqueue when the current database transaction commits; return the job id now.

        Nothing is enqueued if the transaction rolls back. Outside a transaction this enqueues
        at once. The arguments are checked now, so a bad one raises here, not at commit.
        """
        backend = self.get_backend()
        enqueue_on_commit = getattr(backend, "enqueue_on_commit", None)
        if enqueue_on_commit is None:
            raise InvalidTask(
                f"backend {self.backend!r} ({type(backend).__name__}) is not a headrace "
                "backend; enqueue_on_commit needs one"
            )
        job_id: str = enqueue_on_commit(self, args, kwargs)
        return job_id


def check_option_names(names: Iterable[str]) -> None:
    """Raise :class:`TypeError` naming each unknown option and the closest known name."""
    unknown = [name for name in names if name not in OPTION_NAMES]
    if not unknown:
        return
    parts = []
    known = [*OPTION_NAMES, *_DJANGO_USING, "takes_context"]
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1)
        parts.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise TypeError(
        f"unknown task option {', '.join(parts)}; headrace tasks accept {', '.join(OPTION_NAMES)}"
    )


def _seconds(task: Task, name: str, *, allow_none: bool, positive: bool = False) -> None:
    value = getattr(task, name)
    if value is None and allow_none:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or (positive and value == 0)
    ):
        what = "a positive" if positive else "a non-negative"
        none = " or None" if allow_none else ""
        raise InvalidTask(f"{name} must be {what} number of seconds{none}, got {value!r}")


def check_options(task: Task) -> None:
    """Raise :class:`~django.tasks.exceptions.InvalidTask` naming the first bad option value."""
    for name in ("autoretry_for", "dont_autoretry_for"):
        value = getattr(task, name)
        if not isinstance(value, tuple) or not all(
            isinstance(cls, type) and issubclass(cls, BaseException) for cls in value
        ):
            raise InvalidTask(f"{name} must be a tuple of exception classes, got {value!r}")
    retries = task.max_retries
    if retries is not None and (type(retries) is not int or retries < 0):
        raise InvalidTask(f"max_retries must be a non-negative int or None, got {retries!r}")
    backoff = task.retry_backoff
    if not isinstance(backoff, bool) and (
        not isinstance(backoff, int | float) or not math.isfinite(backoff) or backoff <= 0
    ):
        raise InvalidTask(
            f"retry_backoff must be True, False or a positive number of seconds, got {backoff!r}"
        )
    if not isinstance(task.retry_jitter, bool):
        raise InvalidTask(f"retry_jitter must be True or False, got {task.retry_jitter!r}")
    _seconds(task, "retry_backoff_max", allow_none=False)
    _seconds(task, "default_retry_delay", allow_none=False)
    _seconds(task, "countdown", allow_none=True)
    _seconds(task, "expires", allow_none=True, positive=True)
    _seconds(task, "timeout", allow_none=True, positive=True)
    _seconds(task, "result_ttl", allow_none=False, positive=True)
    if task.key is not None:
        check_key(task.key)


def check_key(key: object) -> str:
    """Return ``key`` if it can be an idempotency key (1-200 printable ASCII characters)."""
    if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
        raise InvalidTask(
            f"key must be 1 to 200 printable ASCII characters without spaces, got {key!r}"
        )
    return key


# -- arguments --------------------------------------------------------------------------------

_SCALARS: Final = frozenset({str, int, float, bool, type(None)})


@functools.lru_cache(maxsize=1024)
def _parameter_names(func: Callable[..., Any], takes_context: bool) -> tuple[str, ...]:
    func = getattr(func, "_headrace_signature_of", func)  # compat's bind=True entry
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return ()
    if takes_context and params:
        params = params[1:]
    return tuple(
        p.name
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    )


def _hint(value: object) -> str:
    meta = getattr(value, "_meta", None)
    if meta is not None and hasattr(value, "pk"):
        return "pass its primary key (obj.pk) and fetch the object inside the task"
    if isinstance(value, datetime | date | time):
        return "pass value.isoformat() and parse it inside the task"
    if isinstance(value, timedelta):
        return "pass value.total_seconds()"
    if isinstance(value, set | frozenset):
        return "pass a list (sorted(value))"
    if isinstance(value, bytes | bytearray):
        return "pass text (decode it, or base64-encode binary data)"
    return "pass plain JSON values (str, int, float, bool, None, lists, dicts with str keys)"


def to_json(value: Any, where: str, path: str) -> Any:
    """``value`` as plain JSON values (tuples become lists, str/int enums their value), or
    :class:`TypeError` that starts with ``where``, names ``path`` and says what to pass."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is list or kind is tuple:
        return [to_json(item, where, f"{path}[{i}]") for i, item in enumerate(value)]
    if kind is dict:
        out = {}
        for k, v in value.items():
            if type(k) is not str:
                raise TypeError(
                    f"{where}: {path} has the key {k!r} ({type(k).__name__}); JSON object keys "
                    "are strings, so pass str keys"
                )
            out[k] = to_json(v, where, f"{path}[{k!r}]")
        return out
    for base in (str, int, float):  # subclasses (str and int enums) travel as their value
        if isinstance(value, base):
            return base(value) if base is not str else str.__str__(value)
    raise TypeError(
        f"{where}: {path} is {kind.__module__}.{kind.__qualname__} {value!r:.60}, which is not "
        f"JSON; {_hint(value)}"
    )


def check_arguments(
    task: DjangoTask[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
) -> tuple[list[Any], dict[str, Any]]:
    """The arguments as plain JSON values, or :class:`TypeError` naming the bad argument."""
    out_args = list(args)
    for i, value in enumerate(out_args):
        if type(value) not in _SCALARS:
            names = _parameter_names(task.func, task.takes_context)
            label = f"argument {names[i]!r}" if i < len(names) else f"positional argument {i}"
            out_args[i] = to_json(value, f"cannot enqueue {task.module_path}", label)
    out_kwargs = dict(kwargs)
    for name, value in out_kwargs.items():
        if type(value) not in _SCALARS:
            out_kwargs[name] = to_json(
                value, f"cannot enqueue {task.module_path}", f"argument {name!r}"
            )
    return out_args, out_kwargs
