"""What a running task can ask of headrace: retry, report progress, notice a cancel.

A task declared with ``takes_context=True`` receives a :class:`TaskContext` (a subclass of
Django's, so ``context.task_result`` and ``context.attempt`` are as Django documents)::

    @task(takes_context=True, max_retries=5)
    def import_rows(context, upload_id):
        rows = load(upload_id)
        for done, row in enumerate(rows, 1):
            if context.cancel_requested:
                raise TaskCancelled()
            save(row)
            context.progress(done, len(rows), stage="saving")

``progress()`` never blocks: it records the latest value on the job at once (what
``get_result()`` shows) and sends ``{"type": "task.progress", "id", "done", "total", "info"}``
to the group ``headrace.task.<id>`` at most ``progress_rate`` times a second (10 by
default); a value held back by the limit is sent when the interval ends, unless a newer one
replaced it or the job finished first.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from django.tasks import TaskContext as DjangoTaskContext

from headrace.process import call_on_loop
from headrace.tasks.base import to_json
from headrace.tasks.exceptions import Retry

if TYPE_CHECKING:
    from headrace.layers.clock import Clock, TimerHandle

__all__ = ["JobControl", "TaskContext", "progress_group"]

logger = logging.getLogger("headrace.tasks")


if TYPE_CHECKING:
    _ContextBase = DjangoTaskContext[..., Any]
else:
    _ContextBase = DjangoTaskContext


def progress_group(job_id: str) -> str:
    """The channel-layer group that receives a job's progress and final messages."""
    return f"headrace.task.{job_id}"


class JobControl:
    """The live side of one running attempt: the cancel flag and the progress throttle.

    Made by the runner for each attempt; ``send`` delivers a message to the job's group (on
    the worker's loop) and ``record(job_id, value)`` stores the latest progress on the job.
    """

    def __init__(
        self,
        job_id: str,
        *,
        clock: Clock,
        interval: float,
        record: Callable[[str, Mapping[str, Any]], None],
        send: Callable[[dict[str, Any]], None],
        loop: asyncio.AbstractEventLoop | None,
        retries: int = 0,
    ) -> None:
        self.job_id = job_id
        self.retries = retries
        self.clock = clock
        self.interval = interval
        self.loop = loop
        self._record = record
        self._send = send
        self._cancel = False  # set from any thread; a bool store is atomic
        self._last_sent: float | None = None
        self._pending: dict[str, Any] | None = None
        self._timer: TimerHandle | None = None
        self._closed = False

    @property
    def cancel_requested(self) -> bool:
        return self._cancel

    def request_cancel(self) -> None:
        self._cancel = True

    def report(self, done: float, total: float | None, info: Mapping[str, Any]) -> None:
        """Record and (throttled) send a progress value; callable from any thread."""
        value = {
            "done": to_json(done, "progress", "done"),
            "total": to_json(total, "progress", "total"),
            "info": to_json(dict(info), "progress", "info"),
        }
        self._record(self.job_id, value)
        loop = self.loop
        if loop is None:
            self._offer(value)
            return
        call_on_loop(loop, functools.partial(self._offer, value))

    def _offer(self, value: dict[str, Any]) -> None:
        if self._closed:
            return
        now = self.clock.time()
        message = {"type": "task.progress", "id": self.job_id, **value}
        if self._last_sent is None or now - self._last_sent >= self.interval:
            self._pending = None
            self._last_sent = now
            self._send(message)
            return
        self._pending = message
        if self._timer is None and self.loop is not None:
            self._timer = self.clock.call_at(self._last_sent + self.interval, self._flush)

    def _flush(self) -> None:
        self._timer = None
        if self._pending is not None and not self._closed:
            message, self._pending = self._pending, None
            self._last_sent = self.clock.time()
            self._send(message)

    def close(self) -> None:
        """The attempt ended: drop a held-back progress value (the final message follows)."""
        self._closed = True
        self._pending = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskContext(_ContextBase):  # type: ignore[misc]  # frozen at run time
    """Django's task context, plus ``retry()``, ``progress()`` and ``cancel_requested``."""

    control: JobControl = field(repr=False, compare=False)

    @property
    def retries(self) -> int:
        """Retries already run before this attempt (Celery's ``request.retries``)."""
        return self.control.retries

    @property
    def cancel_requested(self) -> bool:
        """True once ``cancel()`` was called on this job (or a sync job ran past its
        ``timeout``): finish early, ideally by raising ``TaskCancelled``."""
        return self.control.cancel_requested

    def progress(self, done: float, total: float | None = None, **info: Any) -> None:
        """Report progress (JSON values); throttled, never blocks."""
        self.control.report(done, total, info)

    def retry(
        self,
        exc: BaseException | None = None,
        countdown: float | None = None,
        max_retries: int | None = None,
    ) -> NoReturn:
        """End this attempt and run the job again after ``countdown`` seconds (default: the
        task's ``default_retry_delay``). With no retries left the job fails with ``exc`` (or
        ``MaxRetriesExceeded``)."""
        raise Retry(exc=exc, countdown=countdown, max_retries=max_retries)
