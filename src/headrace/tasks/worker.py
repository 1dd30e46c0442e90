"""Task workers: claim jobs from a headrace backend and run them (``runworker --tasks``).

A :class:`TaskWorker` claims a job only when it has a free slot (``concurrency`` jobs at
once), so jobs it could not start stay in the store for other workers. Coroutine tasks run
on the worker's own event loop; plain functions on a thread pool of ``sync_threads`` threads
(Django's ORM is safe there, as in any sync view). :meth:`TaskWorker.stop` stops claiming,
lets the jobs in hand finish within ``shutdown_timeout``, then cancels the async ones left,
which go back to their queue (not counted as retries).

With the in-memory backend, ``runserver`` runs the workers in its own process
(:func:`run_embedded_task_workers`), as it does for channel workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final

from django.conf import settings
from django.utils.crypto import get_random_string

from headrace.backoff import Backoff
from headrace.exceptions import ConfigurationError
from headrace.process import call_on_loop
from headrace.settings import limits
from headrace.tasks.backends.base import HeadraceTaskBackend, headrace_backend
from headrace.tasks.exceptions import LeaseLost
from headrace.tasks.jobs import Job
from headrace.tasks.policy import DEFAULT_JITTER
from headrace.tasks.runner import Runner
from headrace.tasks.states import JobState
from headrace.worker import DEFAULT_CONCURRENCY, DEFAULT_SHUTDOWN_TIMEOUT, WorkerState

__all__ = [
    "TaskWorker",
    "TaskWorkerStatistics",
    "WorkerSet",
    "embedded_task_backends",
    "run_embedded_task_workers",
    "task_worker_for_command",
    "task_workers",
]

logger = logging.getLogger("headrace.tasks")

_COUNTER: Final[dict[JobState | None, str]] = {
    JobState.SUCCESSFUL: "succeeded",
    JobState.FAILED: "failed",
    JobState.READY: "retried",
    JobState.CANCELLED: "cancelled",
    None: "failed",  # its task could not be resolved
}


#: Jobs a worker runs in one turn of its loop when none of them suspends.
_EAGER_BATCH: Final = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskWorkerStatistics:
    """Counters since the worker started."""

    claimed: int  #: attempts started
    succeeded: int
    failed: int  #: jobs that ended FAILED (after their last retry)
    retried: int  #: attempts that failed and were scheduled again
    cancelled: int  #: jobs that ended CANCELLED
    returned: int  #: jobs handed back to the queue because the worker stopped
    running: int  #: attempts in hand right now
    outages: int  #: times claiming from the store started failing (see headrace.backoff)


#: The task workers of this process that have started (held weakly); see task_workers().
_started_workers: weakref.WeakSet[TaskWorker] = weakref.WeakSet()


def task_workers() -> list[TaskWorker]:
    """The :class:`TaskWorker` objects of this process that have started and are still
    referenced, running or stopped (what an in-process backend's dashboard lists)."""
    return list(_started_workers)


class TaskWorker:
    """Run the jobs of ``queues`` (default: all of the backend's) from ``backend`` (an alias
    in ``TASKS`` or a backend object). ``clock`` (default: the backend's) times ``timeout``
    and the progress throttle; ``layer`` overrides the channel layer progress goes to."""

    def __init__(
        self,
        backend: str | HeadraceTaskBackend = "default",
        queues: Iterable[str] | None = None,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        sync_threads: int | None = None,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
        clock: Any = None,
        layer: Any = None,
        jitter: Any = DEFAULT_JITTER,
    ) -> None:
        self.backend = headrace_backend(backend, needs="a headrace worker runs")
        if self.backend.eager:
            raise ConfigurationError(
                f"TASKS[{self.backend.alias!r}] is eager (jobs run inside enqueue); a worker "
                "has nothing to run"
            )
        known = sorted(self.backend.queues)
        self.queues = list(dict.fromkeys(queues)) if queues else known
        unknown = [q for q in self.queues if q not in self.backend.queues]
        if unknown:
            raise ConfigurationError(
                f"TASKS[{self.backend.alias!r}] has no queue {', '.join(map(repr, unknown))} "
                f"(its QUEUES: {', '.join(known)})"
            )
        if type(concurrency) is not int or concurrency < 1:
            raise ConfigurationError(f"concurrency must be a positive int, got {concurrency!r}")
        if not shutdown_timeout >= 0:
            raise ConfigurationError(
                f"shutdown_timeout must be zero or more seconds, got {shutdown_timeout!r}"
            )
        self.concurrency = concurrency
        self.sync_threads = min(concurrency, sync_threads or limits().sync_threads)
        self.shutdown_timeout = float(shutdown_timeout)
        self.clock = clock
        self.worker_id = get_random_string(32)
        self._layer = layer
        self._jitter = jitter
        self.state = WorkerState.NEW
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        # Set on every change wait_idle() looks at (asyncio events bind a loop on first use).
        self._changed = asyncio.Event()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._waiting = False
        self._started = threading.Event()
        self._stop_requested = self._stop_now = False
        self._counts = dict.fromkeys(
            ("claimed", "succeeded", "failed", "retried", "cancelled", "returned"), 0
        )
        self._backoff = Backoff(
            f"claiming a job from TASKS[{self.backend.alias!r}]",
            logger=logger,
            clock=clock if clock is not None else self.backend.clock,
        )

    @property
    def layer_alias(self) -> str:
        """The channel layer alias progress messages go to (``runworker`` closes it)."""
        return self.backend.channel_layer_alias

    # -- control ---------------------------------------------------------------------------------

    def wait_started(self, timeout: float | None = None) -> bool:
        """Block (any thread) until the worker is claiming jobs."""
        return self._started.wait(timeout)

    def stop(self, *, now: bool = False) -> None:
        """Stop claiming and finish the jobs in hand (``now``: cancel them instead; they go
        back to their queue). Safe from any thread, and more than once."""
        loop = self._loop
        if loop is None:
            self._stop_requested = True
            self._stop_now = self._stop_now or now
            return
        call_on_loop(loop, functools.partial(self._stop, now))

    def _stop(self, now: bool) -> None:
        if self.state in (WorkerState.NEW, WorkerState.RUNNING):
            self.state = WorkerState.STOPPING
        if self._stopping is not None:
            self._stopping.set()
        if now:
            for task in self._handlers:
                task.cancel()

    async def wait_idle(self) -> None:
        """Wait until the worker runs nothing and none of its queues has a job due now."""
        while True:
            self._changed.clear()
            if self._waiting and not self._handlers and self.backend.ready_count(self.queues) == 0:
                return
            await self._changed.wait()

    async def wait_running(self, count: int = 1) -> None:
        """Wait until at least ``count`` attempts are in hand."""
        await self._wait(lambda: len(self._handlers) >= count)

    async def wait_stopped(self) -> None:
        """Wait until :meth:`run` has finished stopping."""
        await self._wait(lambda: self.state is WorkerState.STOPPED)

    async def _wait(self, condition: Callable[[], bool]) -> None:
        while not condition():
            self._changed.clear()
            await self._changed.wait()

    def statistics(self) -> TaskWorkerStatistics:
        return TaskWorkerStatistics(
            **self._counts, running=len(self._handlers), outages=self._backoff.outages
        )

    def _notify(self) -> None:
        self._changed.set()

    # -- running ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Claim and run jobs until :meth:`stop`; returns when the jobs in hand are done."""
        if self.state is not WorkerState.NEW:
            raise RuntimeError(f"a worker runs once: expected state NEW, got {self.state.name}")
        loop = self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self.state = WorkerState.RUNNING
        _started_workers.add(self)
        layer = self._layer
        if layer is None:
            from headrace.layers import get_channel_layer

            layer = get_channel_layer(self.backend.channel_layer_alias)
        self.backend.attach_worker_loop(loop, layer)
        executor = ThreadPoolExecutor(self.sync_threads, thread_name_prefix="headrace-task")
        runner = Runner(
            self.backend,
            worker_id=self.worker_id,
            executor=executor,
            loop=loop,
            jitter=self._jitter,
            clock=self.clock,
        )
        logger.info(
            "task worker reading queues %s of TASKS[%r] (concurrency %d, %d sync threads, "
            "%s event loop)",
            ", ".join(self.queues),
            self.backend.alias,
            self.concurrency,
            self.sync_threads,
            type(loop).__module__.split(".")[0],
        )
        self._started.set()
        if self._stop_requested:
            self._stop(self._stop_now)
        claimer = asyncio.ensure_future(self._claim_loop(runner))
        try:
            await self._stopping.wait()
        finally:
            self.state = WorkerState.STOPPING
            claimer.cancel()
            await asyncio.wait([claimer])
            await self._drain()
            executor.shutdown(wait=False, cancel_futures=True)
            self.backend.detach_worker_loop(loop)
            self.state = WorkerState.STOPPED
            self._notify()
            logger.info("task worker stopped (%s)", self.statistics())

    def _on_wait(self) -> None:
        self._waiting = True
        self._notify()

    async def _claim_loop(self, runner: Runner) -> None:
        slot_free = asyncio.Event()
        backoff = self._backoff
        loop = asyncio.get_running_loop()
        # A handler starts eagerly: it runs in this loop's turn up to its first suspension,
        # so a job that never suspends (a no-op coroutine) is done without a task switch.
        eager = loop.get_task_factory() is None
        done_at_once = 0  # handlers in a row that finished without suspending
        while True:
            while len(self._handlers) >= self.concurrency:
                slot_free.clear()
                await slot_free.wait()
            if done_at_once >= _EAGER_BATCH:
                # Jobs that never suspend would keep this loop's turn forever: let the
                # loop's other work (and the enqueuers) in between batches.
                done_at_once = 0
                await asyncio.sleep(0)
            try:
                job = await self.backend.claim(self.queues, self.worker_id, on_wait=self._on_wait)
            except Exception as error:  # the store failed us: log once per outage, pause, retry
                self._waiting = False
                await backoff.failed(error)
                continue
            self._waiting = False
            backoff.succeeded()
            jobs = [job]
            # A store that can claim several jobs in one step fills the other free slots.
            claim_more = getattr(self.backend, "claim_more", None)
            free = self.concurrency - len(self._handlers) - 1
            if claim_more is not None and free > 0:
                try:
                    jobs += await claim_more(self.queues, self.worker_id, free)
                except Exception as error:  # the next claim() meets it again if it lasts
                    logger.warning("claiming more jobs failed: %s", error)
            self._counts["claimed"] += len(jobs)
            for claimed in jobs:
                coroutine = self._handle(runner, claimed)
                if eager:
                    handler = asyncio.Task(coroutine, loop=loop, eager_start=True)
                else:
                    handler = loop.create_task(coroutine)
                if handler.done():  # (the notify after the batch tells wait_idle())
                    done_at_once += 1
                    continue
                done_at_once = 0
                self._handlers.add(handler)
                handler.add_done_callback(functools.partial(self._finished, slot_free))
            self._notify()

    async def _handle(self, runner: Runner, job: Job) -> None:
        try:
            outcome = await runner.run(job)
        except asyncio.CancelledError:
            self._counts["returned"] += 1
            self._notify()
            raise
        except LeaseLost as error:  # a late acknowledgement the store ignored
            logger.warning("%s", error)
            return
        except Exception:  # a bug in the runner or the store: log it, keep the worker
            logger.exception("running task %s failed inside the worker", job.id)
            return
        self._counts[_COUNTER[outcome]] += 1

    def _finished(self, slot_free: asyncio.Event, task: asyncio.Task[Any]) -> None:
        self._handlers.discard(task)
        slot_free.set()
        self._notify()

    async def _drain(self) -> None:
        if not self._handlers:
            return
        logger.info(
            "stopping: waiting up to %g s for %d job(s) in hand",
            self.shutdown_timeout,
            len(self._handlers),
        )
        _, pending = await asyncio.wait(set(self._handlers), timeout=self.shutdown_timeout)
        if pending:
            logger.warning(
                "stopping: %d job(s) did not finish within %g s; cancelling them (they go "
                "back to their queue)",
                len(pending),
                self.shutdown_timeout,
            )
            for task in pending:
                task.cancel()
            await asyncio.wait(pending)


class WorkerSet:
    """Several workers run and stopped as one (``runworker`` with channels and ``--tasks``)."""

    def __init__(self, workers: Iterable[Any]) -> None:
        self.workers = list(workers)
        if not self.workers:
            raise ConfigurationError("nothing to run: no channels and no task queues")

    @property
    def layer_alias(self) -> str:
        alias: str = self.workers[0].layer_alias
        return alias

    def stop(self, *, now: bool = False) -> None:
        for worker in self.workers:
            worker.stop(now=now)

    async def run(self) -> None:
        """Run every worker; when one ends (or fails), stop the others."""
        runs = [asyncio.ensure_future(worker.run()) for worker in self.workers]
        try:
            await asyncio.wait(runs, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.stop()
            await asyncio.wait(runs)
        for run in runs:
            run.result()  # raise the first failure


# -- embedded workers (runserver with the in-memory backend) ---------------------------------------


def embedded_task_backends() -> list[HeadraceTaskBackend]:
    """The ``TASKS`` backends ``runserver`` runs workers for: in-memory, not eager, and
    ``HEADRACE_EMBEDDED_WORKERS`` on (the default)."""
    if not getattr(settings, "HEADRACE_EMBEDDED_WORKERS", True):
        return []
    from django.tasks import task_backends

    from headrace.tasks.backends.memory import MemoryTaskBackend

    found: list[HeadraceTaskBackend] = []
    for alias in getattr(settings, "TASKS", None) or {}:
        try:
            backend = task_backends[alias]
        except Exception:  # the system checks report it; the server still starts
            logger.exception("TASKS[%r] cannot be used; no task worker runs for it", alias)
            continue
        if isinstance(backend, MemoryTaskBackend) and not backend.eager:
            found.append(backend)
    return found


@contextlib.asynccontextmanager
async def _running(workers: list[TaskWorker]) -> AsyncIterator[None]:
    runs = [asyncio.ensure_future(worker.run()) for worker in workers]
    try:
        yield
    finally:
        for worker in workers:
            worker.stop()
        await asyncio.wait(runs)


async def run_embedded_task_workers() -> None:
    """Run a task worker for each in-memory backend until cancelled (a background coroutine
    for ``runserver``); returns at once when there is none."""
    backends = embedded_task_backends()
    if not backends:
        return
    workers = [TaskWorker(backend, shutdown_timeout=5.0) for backend in backends]
    for worker in workers:
        logger.info(
            "running task queues %s of TASKS[%r] in this process (in-memory backend); set "
            "HEADRACE_EMBEDDED_WORKERS = False to run them with runworker --tasks instead",
            ", ".join(worker.queues),
            worker.backend.alias,
        )
    async with _running(workers):
        await asyncio.Event().wait()


def task_worker_for_command(queues: Iterable[str], **options: Any) -> TaskWorker:
    """The :class:`TaskWorker` ``runworker --tasks QUEUE ...`` runs (its options by name)."""
    return TaskWorker(
        options.get("task_backend", "default"),
        list(queues) or None,
        concurrency=options.get("concurrency", DEFAULT_CONCURRENCY),
        shutdown_timeout=options.get("shutdown_timeout", DEFAULT_SHUTDOWN_TIMEOUT),
    )
