"""Running one claimed job: the part every worker, and eager mode, share.

An attempt resolves the job's task, sends ``task_started``, calls the function — a coroutine
function is awaited on the worker's own loop, a plain function runs on the worker's thread
pool (or inline in eager mode) — and settles the job through the store:

- it returned: SUCCESSFUL (the return value must be JSON);
- a sync function's thread closes old database connections before and after the call, as
  Django does around a request;
- ``cancel()`` was called while it ran: CANCELLED, whatever it did (never retried);
- it raised: the retry policy decides between READY again (``task_retried``) and FAILED;
- an async job past its ``timeout`` is cancelled and ends with ``TaskTimeout`` (which the
  policy may retry like any error); a sync one only sees ``context.cancel_requested``;
- the worker stopped and cancelled it: READY again (the ``lose`` move), not counted as a retry.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from concurrent.futures import Executor
from dataclasses import replace
from datetime import UTC, datetime
from inspect import iscoroutinefunction
from traceback import format_exception
from typing import Any

from asgiref.sync import async_to_sync
from django.tasks.base import TaskError
from django.tasks.signals import task_started

from headrace.db import close_old_connections_unless_suspended
from headrace.process import call_on_loop
from headrace.tasks.base import to_json
from headrace.tasks.context import JobControl, TaskContext
from headrace.tasks.exceptions import TaskCancelled, TaskTimeout, UnknownTask
from headrace.tasks.jobs import Job, JobError
from headrace.tasks.policy import DEFAULT_JITTER, RetryPolicy
from headrace.tasks.signals import is_heard, task_retried
from headrace.tasks.states import JobState, Move

__all__ = ["Runner"]

logger = logging.getLogger("headrace.tasks")

_POLICY_FIELDS = (
    "max_retries",
    "retry_backoff",
    "retry_backoff_max",
    "retry_jitter",
    "default_retry_delay",
)


#: Return values that are JSON as they are (to_json would return them unchanged).
_PLAIN = frozenset({str, int, float, bool, type(None)})
_coroutine_functions: dict[Any, bool] = {}


def _is_coroutine_function(func: Any) -> bool:
    """``inspect.iscoroutinefunction``, remembered per task function (it walks wrappers)."""
    found = _coroutine_functions.get(func)
    if found is None:
        if len(_coroutine_functions) >= 1024:
            _coroutine_functions.clear()
        found = _coroutine_functions[func] = iscoroutinefunction(func)
    return found


def _record(error: BaseException) -> JobError:
    cls = type(error)
    return JobError(
        exception_class_path=f"{cls.__module__}.{cls.__qualname__}",
        traceback="".join(format_exception(error)),
    )


class _Attempt:
    """One attempt of a job: its task, its cancel flag and, made on first need (a context,
    a progress report), its :class:`JobControl`."""

    __slots__ = (
        "_control",
        "cancelled",
        "handler",
        "is_async",
        "job",
        "loop",
        "ours",
        "outcome",
        "result",
        "runner",
        "task",
        "timed_out",
    )

    def __init__(self, runner: Runner, job: Job, task: Any) -> None:
        self.runner = runner
        self.job = job
        self.task = task
        #: The attempt's ``TaskResult``, built on first need (a context, a heard signal).
        self.result: Any = None
        self._control: JobControl | None = None
        self.cancelled = False  #: cancel() was called, or the timeout passed
        self.timed_out = False
        self.outcome: JobState | None = None  #: the job's state after the attempt
        self.handler: asyncio.Task[Any] | None = None  #: on a loop: the job's task
        self.loop: asyncio.AbstractEventLoop | None = None  #: the loop it runs on
        self.is_async = False
        self.ours = 0  #: cancellations of the handler this attempt asked for

    @property
    def control(self) -> JobControl:
        control = self._control
        if control is None:
            control = self._control = self.runner.control_for(self.job)
            if self.cancelled:  # (a cancel from another thread sets the flag, then reads this)
                control.request_cancel()
        return control

    def close(self) -> None:
        if self._control is not None:
            self._control.close()

    def request_cancel(self) -> None:
        self.cancelled = True
        control = self._control
        if control is not None:
            control.request_cancel()

    def interrupt(self) -> None:
        """Cancel an async job's handler (on the worker's loop)."""
        handler = self.handler
        if self.is_async and handler is not None and not handler.done():
            self.ours += 1
            handler.cancel()

    def on_cancel(self) -> None:
        """``cancel()`` was called (any thread)."""
        self.request_cancel()
        if self.loop is not None:
            call_on_loop(self.loop, self.interrupt)

    def on_timeout(self) -> None:
        self.timed_out = True
        self.request_cancel()
        self.interrupt()


class Runner:
    """Runs claimed jobs of ``backend`` (see the module docstring)."""

    def __init__(
        self,
        backend: Any,
        *,
        worker_id: str,
        executor: Executor | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        jitter: Any = DEFAULT_JITTER,
        eager: bool = False,
        clock: Any = None,
    ) -> None:
        self.backend = backend
        self.clock = clock if clock is not None else backend.clock
        self.worker_id = worker_id
        self.executor = executor
        self.loop = loop
        self.jitter = jitter
        self.eager = eager

    # -- the attempt --------------------------------------------------------------------------

    def _begin(self, job: Job) -> _Attempt | None:
        backend = self.backend
        try:
            task = backend.task_for_job(job)
        except UnknownTask as error:
            done = backend.move_job(job.id, Move.FAIL, errors=(*job.errors, _record(error)))
            backend.announce_finished(done)
            return None
        attempt = _Attempt(self, job, task)
        if is_heard(task_started):
            task_started.send(type(backend), task_result=self._result(attempt))
        return attempt

    def control_for(self, job: Job) -> JobControl:
        backend = self.backend
        return JobControl(
            job.id,
            clock=self.clock,
            interval=backend.progress_interval,
            record=backend.set_progress,
            send=backend.publish,
            loop=self.loop,
            retries=job.retries,
        )

    def _result(self, attempt: _Attempt) -> Any:
        if attempt.result is None:
            attempt.result = self.backend.to_result(attempt.job, attempt.task)
        return attempt.result

    def _call_args(self, attempt: _Attempt) -> tuple[list[Any], dict[str, Any]]:
        job = attempt.job
        if attempt.task.takes_context:
            context = TaskContext(task_result=self._result(attempt), control=attempt.control)
            return [context, *job.args], job.kwargs
        return list(job.args), job.kwargs

    def _policy(self, attempt: _Attempt) -> RetryPolicy:
        base: RetryPolicy = getattr(attempt.task, "retry_policy", None) or RetryPolicy()
        options = attempt.job.options
        changes = {
            name: options[name]
            for name in _POLICY_FIELDS
            if name in options and options[name] != getattr(base, name)
        }
        return replace(base, **changes) if changes else base

    def _succeeded(self, attempt: _Attempt, value: Any) -> None:
        try:
            if type(value) not in _PLAIN:  # (the message below is built only when needed)
                value = to_json(value, f"{attempt.task.module_path} returned", "its return value")
        except TypeError as error:
            self._failed(attempt, error, retry=False)
            return
        if attempt.cancelled and not attempt.timed_out:
            self._cancelled(attempt, TaskCancelled("cancelled while running"))
            return
        job = self.backend.move_job(attempt.job.id, Move.SUCCEED, return_value=value)
        self._finished(attempt, job)

    def _cancelled(self, attempt: _Attempt, error: BaseException) -> None:
        latest = self.backend.get_job(attempt.job.id) or attempt.job
        job = self.backend.move_job(
            attempt.job.id, Move.CANCEL, errors=(*latest.errors, _record(error))
        )
        self._finished(attempt, job)

    def _failed(self, attempt: _Attempt, error: BaseException, *, retry: bool = True) -> None:
        """Settle an attempt that raised; call it inside the ``except`` block (Django's
        ``task_finished`` logger reads the exception being handled)."""
        if attempt.cancelled and not attempt.timed_out:
            self._cancelled(
                attempt,
                error
                if isinstance(error, TaskCancelled)
                else TaskCancelled(f"cancelled while running ({type(error).__name__}: {error})"),
            )
            return
        job = attempt.job
        if retry:
            decision = self._policy(attempt).decide(error, retries=job.retries, jitter=self.jitter)
        else:
            decision = None
        # What the attempt ends with: the error, or the ``exc`` given to ``retry()``.
        final = decision.error if decision is not None and decision.error is not None else error
        recorded = _record(final)
        if decision is not None and decision.retry:
            delay = 0.0 if self.eager else decision.delay
            job = self.backend.move_job(
                job.id,
                Move.RETRY,
                due_at=self.backend.clock.time() + delay,
                retries=job.retries + 1,
                errors=(*job.errors, recorded),
            )
            attempt.outcome = job.state
            if is_heard(task_retried):
                task_retried.send(
                    type(self.backend),
                    task_result=self.backend.to_result(job, attempt.task),
                    exception=final,
                    delay=delay,
                )
            return
        job = self.backend.move_job(job.id, Move.FAIL, errors=(*job.errors, recorded))
        self._finished(attempt, job)

    def _finished(self, attempt: _Attempt, job: Job) -> None:
        attempt.outcome = job.state
        result = attempt.result
        if result is not None:  # the task's context holds it: bring it up to date
            for name, value in (
                ("status", job.state.status),
                ("state", job.state),
                ("finished_at", _when(job.finished_at)),
                (
                    "errors",
                    [
                        TaskError(
                            exception_class_path=e.exception_class_path, traceback=e.traceback
                        )
                        for e in job.errors
                    ],
                ),
                ("progress", job.progress),
                ("cancel_requested", job.cancel_requested),
            ):
                object.__setattr__(result, name, value)
            if job.state is JobState.SUCCESSFUL:
                object.__setattr__(result, "_return_value", job.return_value)
        self.backend.announce_finished(job, result)

    def _lose(self, attempt: _Attempt) -> None:
        """The worker gave up the job (it stopped): READY again for another worker."""
        try:
            self.backend.move_job(attempt.job.id, Move.LOSE, due_at=self.backend.clock.time())
        except Exception:
            logger.exception("could not return task %s to its queue", attempt.job.id)

    # -- running on a worker's loop -------------------------------------------------------------

    async def run(self, job: Job) -> JobState | None:
        """Run one attempt of a claimed job on the running loop; the job's state after it
        (READY: it will be retried; None: the task could not be resolved)."""
        attempt = self._begin(job)
        if attempt is None:
            return None
        handler = attempt.handler = asyncio.current_task()
        assert handler is not None
        attempt.loop = handler.get_loop()
        func = attempt.task.func
        is_async = attempt.is_async = _is_coroutine_function(func)
        timeout = job.options.get("timeout")
        clock = self.clock
        timer = clock.call_at(clock.time() + timeout, attempt.on_timeout) if timeout else None
        backend = self.backend
        backend.watch_job(job.id, attempt.on_cancel)
        args, kwargs = self._call_args(attempt)
        try:
            try:
                if is_async:
                    value = await func(*args, **kwargs)
                else:
                    call = functools.partial(_call_sync, func, args, kwargs)
                    value = await asyncio.get_running_loop().run_in_executor(
                        self.executor, contextvars.copy_context().run, call
                    )
            except asyncio.CancelledError:
                if not attempt.ours:
                    raise
                for _ in range(attempt.ours):
                    handler.uncancel()
                attempt.ours = 0
                if attempt.timed_out:
                    raise TaskTimeout(f"ran longer than its timeout of {timeout} s") from None
                raise TaskCancelled("cancelled while running") from None
        except asyncio.CancelledError:
            self._lose(attempt)
            raise
        except (Exception, SystemExit) as error:  # a task calling sys.exit() fails, alone
            self._failed(attempt, error)
        else:
            self._succeeded(attempt, value)
        finally:
            if timer is not None:
                timer.cancel()
            backend.unwatch_job(job.id)
            attempt.close()
            for _ in range(attempt.ours):  # a cancel that arrived after the function returned
                handler.uncancel()
        return attempt.outcome

    async def run_until_finished(self, job_id: str) -> None:
        """Eager mode inside a loop: run the job's attempts now, retries without delay."""
        self.eager = True
        while True:
            job = self.backend.claim_job(job_id, self.worker_id)
            if job is None:
                return
            await self.run(job)

    # -- eager mode -------------------------------------------------------------------------------

    def run_inline(self, job_id: str) -> None:
        """Eager mode: run the job's attempts in this thread now, retries without delay."""
        self.eager = True
        while True:
            job = self.backend.claim_job(job_id, self.worker_id)
            if job is None:
                return
            attempt = self._begin(job)
            if attempt is None:
                return
            args, kwargs = self._call_args(attempt)
            func = attempt.task.func
            try:
                if iscoroutinefunction(func):
                    value = async_to_sync(func)(*args, **kwargs)
                else:
                    value = func(*args, **kwargs)
            except (Exception, SystemExit) as error:
                self._failed(attempt, error)
            else:
                self._succeeded(attempt, value)
            finally:
                attempt.close()


def _call_sync(func: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """A sync task on a pool thread, with Django's per-request connection hygiene around it
    (a worker thread lives for many jobs, as a server thread lives for many requests)."""
    close_old_connections_unless_suspended()
    try:
        return func(*args, **kwargs)
    finally:
        close_old_connections_unless_suspended()


def _when(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, tz=UTC)
