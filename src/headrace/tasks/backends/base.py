"""What every headrace task backend shares: Django's backend API over a small job store.

A backend is Django's :class:`~django.tasks.backends.base.BaseTaskBackend` with every
capability flag on. The rules (arguments, options, idempotency keys, transactions, eager mode,
results, signals, progress messages) live here once; a concrete backend only stores jobs. It
implements the store methods marked *store* below, applying the state table of
:mod:`headrace.tasks.states` and nothing else.

``OPTIONS`` (all optional):

``eager`` (False)
    Run each job inside ``enqueue()``, retries included (delays are skipped), like Celery's
    ``CELERY_TASK_ALWAYS_EAGER``. For tests.
``progress_rate`` (10)
    Progress messages sent per job per second at most.
``channel_layer`` ("default")
    The ``CHANNEL_LAYERS`` alias progress and final messages go to (none configured: none sent).
``clock``
    A :class:`~headrace.layers.Clock` object; tests pass a ``ManualClock``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from abc import abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from asgiref.sync import async_to_sync
from django.conf import settings
from django.core import checks
from django.db import connections, transaction
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.base import TaskResultStatus
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.tasks.signals import task_enqueued, task_finished
from django.utils.crypto import get_random_string
from django.utils.module_loading import import_string

from headrace.layers.clock import Clock, SystemClock
from headrace.layers.memory import InMemoryChannelLayer
from headrace.process import call_on_loop, running_loop
from headrace.tasks.base import DEFAULT_RESULT_TTL, Task, check_arguments, check_key
from headrace.tasks.context import progress_group
from headrace.tasks.exceptions import UnknownTask
from headrace.tasks.jobs import Job, job_options
from headrace.tasks.results import TaskResult, build_result, current_owner, job_finished_message
from headrace.tasks.signals import debug_on, is_heard
from headrace.tasks.states import JobState

__all__ = [
    "DEFAULT_PROGRESS_RATE",
    "HeadraceTaskBackend",
    "Waiter",
    "check_job_id",
    "headrace_backend",
    "new_job_id",
    "wake_future",
]

logger = logging.getLogger("headrace.tasks")

DEFAULT_PROGRESS_RATE: Final = 10.0
_OPTION_KEYS: Final = ("eager", "progress_rate", "channel_layer", "clock")
_ID_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


#: (task, module path, job options, countdown, expires, checked key); see _profile().
_Profile = tuple[Any, str, dict[str, Any], Any, Any, str | None]


#: The states Django's ``status`` calls FAILED (task_finished is then logged at ERROR).
_FAILED_STATES: Final = frozenset(s for s in JobState if s.status == TaskResultStatus.FAILED)


def new_job_id() -> str:
    """32 random hex digits (128 bits from the OS's secure source, one system call)."""
    return os.urandom(16).hex()


def check_job_id(job_id: object) -> str:
    """A job id given by a caller (``apply_async(task_id=...)``): 1-80 letters, digits, ``.``
    ``_`` ``-`` — it names the progress group and, on Redis, part of a key."""
    if not isinstance(job_id, str) or not 0 < len(job_id) <= 80 or not _ID_CHARS.issuperset(job_id):
        raise ValueError(
            f"a task id must be 1 to 80 ASCII letters, digits, '.', '_' or '-', got {job_id!r}"
        )
    return job_id


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"{name} must be a non-negative number of seconds, got {value!r}")
    return float(value)


def _timestamp(name: str, value: datetime) -> float:
    if settings.USE_TZ and value.tzinfo is None:
        raise ValueError(f"{name} must be an aware datetime, got the naive {value!r}")
    return value.timestamp()


def _unknown_task(*args: Any, **kwargs: Any) -> None:
    """Stands in for a stored job's task that can no longer be imported."""
    raise UnknownTask("the task of this job cannot be imported")


class HeadraceTaskBackend(BaseTaskBackend):
    """The backend-neutral core (see the module docstring); subclass it for a store."""

    task_class = Task
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True
    #: False for a store that writes jobs in the caller's database transaction (enqueue
    #: inside ``atomic()`` is then right, not a pitfall to warn about).
    warns_in_transaction = True

    def __init__(self, alias: str, params: Mapping[str, Any]) -> None:
        super().__init__(alias, dict(params))
        options = dict(self.options)
        self._option_problems = [
            f"unknown OPTIONS key {name!r} (accepted: {', '.join(_OPTION_KEYS)})"
            for name in options
            if name not in _OPTION_KEYS
        ]
        self.eager = bool(options.get("eager", False))
        rate = options.get("progress_rate", DEFAULT_PROGRESS_RATE)
        if isinstance(rate, bool) or not isinstance(rate, int | float) or rate <= 0:
            self._option_problems.append(f"progress_rate must be a positive number, got {rate!r}")
            rate = DEFAULT_PROGRESS_RATE
        self.progress_interval = 1.0 / float(rate)
        self.channel_layer_alias: str = options.get("channel_layer", "default")
        clock = options.get("clock")
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.worker_id = get_random_string(32)
        self._tasks_by_path: dict[str, Any] = {}
        self._as_enqueued: dict[tuple[Any, ...], Any] = {}  # see task_for_job()
        self._profiles: dict[int, _Profile] = {}
        # The loop (and its layer) of a worker running in this process, for messages sent
        # from other threads; see publish().
        self._home: tuple[asyncio.AbstractEventLoop, Any | None] | None = None
        self._sending: set[asyncio.Future[Any]] = set()

    # -- store (implemented by each backend) ---------------------------------------------------

    @abstractmethod
    def put_job(self, job: Job, task: Any = None) -> tuple[Job, bool]:
        """*store* Add ``job``; if its id is taken or its key belongs to a live job, return
        that job and False. ``task`` is the Task object it was enqueued with (a store in
        memory may keep it; others resolve ``job.task_path``)."""

    @abstractmethod
    def get_job(self, job_id: str) -> Job | None:
        """*store* The job, or None (unknown, or its result expired)."""

    @abstractmethod
    def claim_nowait(self, queues: Iterable[str], worker_id: str) -> Job | None:
        """*store* Move the best due job of ``queues`` to RUNNING and return it, or None."""

    @abstractmethod
    async def claim(
        self,
        queues: Iterable[str],
        worker_id: str,
        *,
        on_wait: Callable[[], None] | None = None,
    ) -> Job:
        """*store* :meth:`claim_nowait`, waiting until a job is due (cancellable).
        ``on_wait`` is called each time it starts to wait."""

    @abstractmethod
    def claim_job(self, job_id: str, worker_id: str) -> Job | None:
        """*store* Claim this READY job now, whatever its due time (eager mode); None if it
        is not READY."""

    @abstractmethod
    def move_job(self, job_id: str, move: Any, **changes: Any) -> Job:
        """*store* Apply ``move`` (a :class:`~headrace.tasks.states.Move`) and ``changes``."""

    @abstractmethod
    def request_cancel(self, job_id: str) -> Job | None:
        """*store* Cancel a READY job, flag a RUNNING one (and call its watcher)."""

    @abstractmethod
    def watch_job(self, job_id: str, on_cancel: Callable[[], None]) -> None:
        """*store* Call ``on_cancel`` (any thread) when a cancel is requested for this job."""

    @abstractmethod
    def unwatch_job(self, job_id: str) -> None: ...

    @abstractmethod
    def set_progress(self, job_id: str, value: Mapping[str, Any]) -> None: ...

    @abstractmethod
    async def wait_finished(self, job_id: str, timeout: float | None = None) -> None:
        """*store* Return once the job has finished; TimeoutError after ``timeout``."""

    @abstractmethod
    def wait_finished_sync(self, job_id: str, timeout: float | None = None) -> None: ...

    @abstractmethod
    def ready_count(self, queues: Iterable[str]) -> int:
        """*store* Jobs of ``queues`` a worker could claim right now."""

    # -- Django's API -------------------------------------------------------------------------

    def validate_task(self, task: Any) -> None:
        super().validate_task(task)
        if task.run_after is not None and not isinstance(task.run_after, datetime):
            raise InvalidTask(f"run_after must be a datetime, got {task.run_after!r}")

    def enqueue(  # type: ignore[override]
        self, task: Any, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> TaskResult:
        return self.enqueue_job(task, args, kwargs)

    async def aenqueue(  # type: ignore[override]
        self, task: Any, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> TaskResult:
        if self.eager:
            from headrace.tasks.runner import Runner

            result = self._enqueue(task, args, kwargs)
            if result.state is JobState.READY:
                await Runner(self, worker_id=self.worker_id).run_until_finished(result.id)
                result = self.get_result(result.id)
            return result
        # The store is in memory (or talks asynchronously): no thread hop needed.
        return self.enqueue_job(task, args, kwargs)

    def get_result(self, result_id: str) -> TaskResult:
        job = self.get_job(result_id) if isinstance(result_id, str) else None
        if job is None:
            raise TaskResultDoesNotExist(result_id)
        return self.to_result(job)

    async def aget_result(self, result_id: str) -> TaskResult:
        return self.get_result(result_id)

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        """Start-up checks (run by ``manage.py check`` and before serving)."""
        messages: list[checks.CheckMessage] = [
            checks.Error(f"TASKS[{self.alias!r}]: {problem}", id="headrace.E101")
            for problem in self._option_problems
        ]
        bad = [q for q in self.queues if not isinstance(q, str) or not q]
        if bad or not self.queues:
            messages.append(
                checks.Error(
                    f"TASKS[{self.alias!r}]['QUEUES'] must list queue names (non-empty str), "
                    f"got {sorted(map(repr, self.queues))}",
                    id="headrace.E102",
                )
            )
        return messages

    # -- headrace's additions -----------------------------------------------------------------

    def enqueue_job(
        self,
        task: Any,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        *,
        job_id: str | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        expires: float | datetime | None = None,
        owner: str | bool | None = False,
    ) -> TaskResult:
        """Enqueue with per-call options (what ``apply_async`` needs); ``owner=False``: take
        it from :func:`~headrace.tasks.enqueued_by`."""
        if self.warns_in_transaction and debug_on() and _in_atomic_block():
            logger.warning(
                "%s was enqueued inside a database transaction: a worker may run it before "
                "the transaction commits (or after it rolled back); use "
                "%s.enqueue_on_commit(...) instead",
                task.module_path,
                task.name,
            )
        result = self._enqueue(
            task,
            args,
            kwargs,
            job_id=job_id,
            countdown=countdown,
            eta=eta,
            expires=expires,
            owner=owner,
        )
        if self.eager and result.state is JobState.READY:
            from headrace.tasks.runner import Runner

            Runner(self, worker_id=self.worker_id).run_inline(result.id)
            result = self.get_result(result.id)
        return result

    def _enqueue(
        self,
        task: Any,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        *,
        job_id: str | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        expires: float | datetime | None = None,
        owner: str | bool | None = False,
    ) -> TaskResult:
        if task.backend != self.alias:
            raise InvalidTask(
                f"{task.module_path} belongs to backend {task.backend!r}, not {self.alias!r}"
            )
        json_args, json_kwargs = check_arguments(task, args, kwargs)
        _, path, options, task_countdown, task_expires, key = self._profile(task)
        now = self.clock.time()
        due = now
        countdown = task_countdown if countdown is None else _seconds("countdown", countdown)
        if eta is not None:
            due = _timestamp("eta", eta)
        elif task.run_after is not None:
            due = task.run_after.timestamp()
        elif countdown is not None:
            due = now + float(countdown)
        if expires is None:
            expires = task_expires
        expires_at = (
            None
            if expires is None
            else _timestamp("expires", expires)
            if isinstance(expires, datetime)
            else now + _seconds("expires", expires)
        )
        job = Job(
            id=new_job_id() if job_id is None else check_job_id(job_id),
            task_path=path,
            args=tuple(json_args),  # (see Job.args)
            kwargs=json_kwargs,
            queue=task.queue_name,
            priority=task.priority,
            backend=self.alias,
            enqueued_at=now,
            due_at=due,
            expires_at=expires_at,
            key=key,
            owner=current_owner() if owner is False else owner,  # type: ignore[arg-type]
            options=options,
        )
        stored, created = self.put_job(job, task)
        result = build_result(stored, task, self.alias)  # (what to_result does, given a task)
        if created and is_heard(task_enqueued, logging.DEBUG):
            task_enqueued.send(type(self), task_result=result)
        return result

    def _profile(self, task: Any) -> _Profile:
        """What a job takes from its Task object (a frozen value), kept per object: its path,
        :func:`~headrace.tasks.jobs.job_options` (one dict shared by the task's jobs, which
        nothing changes), and its ``countdown``, ``expires`` and checked ``key``."""
        found = self._profiles.get(id(task))
        if found is not None and found[0] is task:
            return found
        key = getattr(task, "key", None)
        profile = (
            task,
            task.module_path,
            job_options(task),
            getattr(task, "countdown", None),
            getattr(task, "expires", None),
            None if key is None else check_key(key),
        )
        if len(self._profiles) >= 256:  # using() makes a Task per call: stay small
            self._profiles.clear()
        self._profiles[id(task)] = profile
        return profile

    def enqueue_on_commit(
        self, task: Any, args: Sequence[Any], kwargs: Mapping[str, Any], *, using: str = "default"
    ) -> str:
        """See :meth:`headrace.tasks.Task.enqueue_on_commit`."""
        check_arguments(task, args, kwargs)
        job_id = new_job_id()
        owner = current_owner()

        def enqueue() -> None:
            self._enqueue(task, args, kwargs, job_id=job_id, owner=owner)
            if self.eager:
                from headrace.tasks.runner import Runner

                Runner(self, worker_id=self.worker_id).run_inline(job_id)

        transaction.on_commit(enqueue, using=using)
        return job_id

    def cancel(self, job_id: str) -> bool:
        """Cancel a job (see :meth:`headrace.tasks.TaskResult.cancel`)."""
        job = self.request_cancel(job_id)
        if job is None:
            raise TaskResultDoesNotExist(job_id)
        if job.state is JobState.CANCELLED:
            self.announce_finished(job)
            return True
        return job.state is JobState.RUNNING and job.cancel_requested

    async def acancel(self, job_id: str) -> bool:
        return self.cancel(job_id)

    # -- results and announcements -------------------------------------------------------------

    def resolve_task(self, path: str) -> Any:
        """The Task object a stored job names; :class:`UnknownTask` when there is none."""
        task = self._tasks_by_path.get(path)
        if task is not None:
            return task
        try:
            task = import_string(path)
        except ImportError as error:
            raise UnknownTask(f"the job's task {path!r} cannot be imported: {error}") from error
        from django.tasks import Task as DjangoTask

        inner = getattr(task, "task", None)  # compat.shared_task's wrapper
        if not isinstance(task, DjangoTask) and isinstance(inner, DjangoTask):
            task = inner
        if not isinstance(task, DjangoTask):
            raise UnknownTask(
                f"the job's task {path!r} is a {type(task).__name__}, not a task (decorate it "
                "with @task)"
            )
        self._tasks_by_path[path] = task
        return task

    def task_for_job(self, job: Job) -> Any:
        """The Task object to run ``job`` with, as it was enqueued: a worker in another process
        resolves the task by its path, and what ``using()`` changed (priority, queue, options)
        travels with the job. :class:`UnknownTask` when the path names no task. Remembered per
        path, priority, queue and options (a few per task)."""
        options = job.options
        key: tuple[Any, ...] | None
        try:
            key = (job.task_path, job.priority, job.queue, *options.items())
            found = self._as_enqueued.get(key)
        except TypeError:  # an option value that cannot be a dict key: work it out each time
            key, found = None, None
        if found is not None:
            return found
        base = self.resolve_task(job.task_path)
        changes = {
            name: value for name, value in options.items() if getattr(base, name, value) != value
        }
        if job.priority != base.priority:
            changes["priority"] = job.priority
        if job.queue != base.queue_name:
            changes["queue_name"] = job.queue
        task = base
        if changes:
            try:
                task = base.using(**changes)
            except (TypeError, ValueError, InvalidTask) as error:
                logger.warning(
                    "task %s: its stored options %r cannot be applied to %s (%s); running it "
                    "with the task's own",
                    job.id,
                    changes,
                    job.task_path,
                    error,
                )
        if key is not None:
            if len(self._as_enqueued) >= 256:
                self._as_enqueued.clear()
            self._as_enqueued[key] = task
        return task

    def to_result(self, job: Job, task: Any = None) -> TaskResult:
        if task is None:
            try:
                task = self.task_for_job(job)
            except UnknownTask:
                task = self._placeholder(job)
        return build_result(job, task, self.alias)

    def _placeholder(self, job: Job) -> Any:
        return Task(
            func=_unknown_task,
            backend=self.alias,
            queue_name=job.queue,
            priority=job.priority,
        )

    def announce_finished(self, job: Job, result: TaskResult | None = None) -> None:
        """Send ``task_finished`` and the final group message for a finished job.

        Without ``result``, the ``TaskResult`` the signal carries is built only when someone
        would notice the signal (see :func:`~headrace.tasks.signals.is_heard`); the group
        message is read from ``job``.
        """
        level = logging.ERROR if job.state in _FAILED_STATES else logging.INFO
        if is_heard(task_finished, level):
            if result is None:
                result = self.to_result(job)
            task_finished.send(type(self), task_result=result)
        if self._nobody_hears(job.id):
            return
        message = job_finished_message(job)
        if message is not None:
            self.publish(message)

    def _nobody_hears(self, job_id: str) -> bool:
        """True when a message to the job's group would surely reach no one: the worker of
        this process sends with no layer, or with an in-memory one where the group has no
        member (the message is then not even built)."""
        home = self._home
        if home is None or home[0].is_closed():
            return False
        layer = home[1]
        return layer is None or _nobody_listens(layer, progress_group(job_id))

    def publish(self, message: dict[str, Any]) -> None:
        """Send ``message`` to the job's progress group, from any thread; never raises."""
        group = progress_group(message["id"])
        home = self._home
        running = running_loop()
        if home is not None and not home[0].is_closed():
            if self._nobody_hears(message["id"]):
                return
            loop, layer = home
            if running is loop:
                self._track(loop.create_task(_group_send(layer, group, message)))
            else:
                asyncio.run_coroutine_threadsafe(_group_send(layer, group, message), loop)
            return
        from headrace.layers import get_channel_layer

        try:
            layer = get_channel_layer(self.channel_layer_alias)
        except Exception:
            logger.exception("no channel layer %r for task messages", self.channel_layer_alias)
            return
        if layer is None or _nobody_listens(layer, group):
            return
        if running is not None:
            self._track(running.create_task(_group_send(layer, group, message)))
        else:
            async_to_sync(_group_send)(layer, group, message)

    def _track(self, future: asyncio.Future[Any]) -> None:
        self._sending.add(future)
        future.add_done_callback(self._sending.discard)

    def attach_worker_loop(self, loop: asyncio.AbstractEventLoop, layer: Any) -> None:
        """A worker in this process sends its messages with ``layer`` on ``loop``."""
        self._home = (loop, layer)

    def detach_worker_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._home is not None and self._home[0] is loop:
            self._home = None

    def result_ttl(self, job: Job) -> float:
        ttl = job.options.get("result_ttl")
        return DEFAULT_RESULT_TTL if ttl is None else float(ttl)


def _nobody_listens(layer: Any, group: str) -> bool:
    """True when ``layer`` is this process's in-memory layer and ``group`` has no member: a
    message sent there would reach no one (a stream that joins later reads the job's state
    after joining, see :mod:`headrace.tasks.consumers`). Other layers cannot tell cheaply."""
    return isinstance(layer, InMemoryChannelLayer) and not layer.has_group_members(group)


async def _group_send(layer: Any, group: str, message: dict[str, Any]) -> None:
    try:
        await layer.group_send(group, message)
    except Exception:
        logger.exception("sending %s for task %s failed", message.get("type"), message.get("id"))


def _in_atomic_block() -> bool:
    try:
        return any(c.in_atomic_block for c in connections.all(initialized_only=True))
    except Exception:  # pragma: no cover - a broken database configuration
        return False


def headrace_backend(backend: str | HeadraceTaskBackend, *, needs: str) -> HeadraceTaskBackend:
    """``backend`` itself, or the ``TASKS`` alias it names, which must be a headrace backend.

    ``needs`` ends the error's sentence before "headrace backends" ("the scheduler runs on").
    """
    if isinstance(backend, HeadraceTaskBackend):
        return backend
    from django.tasks import task_backends
    from django.tasks.exceptions import InvalidTaskBackend

    from headrace.exceptions import ConfigurationError

    try:
        found = task_backends[backend]
    except InvalidTaskBackend as error:
        raise ConfigurationError(f"no task backend {backend!r} in TASKS: {error}") from error
    if not isinstance(found, HeadraceTaskBackend):
        raise ConfigurationError(
            f"TASKS[{backend!r}] is {type(found).__module__}.{type(found).__qualname__}; "
            f"{needs} headrace backends (headrace.tasks.backends.*)"
        )
    return found


class Waiter:
    """A worker's idle claim on ``queues``: ``wake()`` resolves its future from any thread."""

    __slots__ = ("future", "loop", "queues")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[None], queues: frozenset[str]
    ) -> None:
        self.loop = loop
        self.future = future
        self.queues = queues

    def wake(self) -> None:
        call_on_loop(self.loop, self._resolve)

    def _resolve(self) -> None:
        wake_future(self.future)


def wake_future(future: asyncio.Future[None]) -> None:
    """Resolve a waiter's future unless it is done already (cancelled, or woken twice)."""
    if not future.done():
        future.set_result(None)
