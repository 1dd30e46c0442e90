"""The task errors and control-flow signals.

::

    HeadraceError (and Django's TaskException)
    └── HeadraceTaskError
        ├── InvalidTransition       a store was asked for a move the state table forbids
        ├── TaskCancelled           the error a cancelled job ends with
        ├── TaskExpired             the job's ``expires`` time passed before it started
        ├── TaskTimeout             an async job ran past its ``timeout`` and was cancelled
        ├── UnknownTask             a stored job names a task that cannot be imported
        ├── MaxRetriesExceeded      ``retry()`` was called with no retries left and no ``exc``
        ├── WorkerLost              the worker running the job stopped renewing its lease
        └── LeaseLost               a worker settled a job whose lease had passed to another
    ConfigurationError              bad option names or values (also ``ImproperlyConfigured``)

    Control flow (not an error): Retry, raised by ``context.retry()`` / ``self.retry()``.

Django's own :class:`django.tasks.exceptions.InvalidTask` is raised for what Django checks
(priority, queue, ``run_after``), and :class:`~django.tasks.exceptions.TaskResultDoesNotExist`
for an unknown or expired result id.
"""

from __future__ import annotations

from django.tasks.exceptions import TaskException

from headrace.exceptions import HeadraceError

__all__ = [
    "HeadraceTaskError",
    "InvalidTransition",
    "LeaseLost",
    "MaxRetriesExceeded",
    "Retry",
    "TaskCancelled",
    "TaskExpired",
    "TaskTimeout",
    "UnknownTask",
    "WorkerLost",
]


class HeadraceTaskError(HeadraceError, TaskException):
    """The root of headrace's task errors (also Django's ``TaskException``). Not to be
    confused with Django's ``TaskError``, the record of one failed run in ``result.errors``."""


class InvalidTransition(HeadraceTaskError):
    """A job was asked to move in a way its state does not allow."""


class TaskCancelled(HeadraceTaskError):
    """The job was cancelled (``result.cancel()``)."""


class TaskExpired(HeadraceTaskError):
    """The job's ``expires`` time passed before a worker started it."""


class TaskTimeout(HeadraceTaskError):
    """The async job ran longer than its ``timeout`` and was cancelled."""


class UnknownTask(HeadraceTaskError):
    """A stored job names a task path that cannot be imported as a task."""


class MaxRetriesExceeded(HeadraceTaskError):
    """``retry()`` was called with no retries left (and no ``exc`` to fail with)."""


class WorkerLost(HeadraceTaskError):
    """The worker running the job stopped renewing its lease (it died, or hung longer than
    the lease): the job was put back in its queue, or dead-lettered after ``max_deliveries``
    such losses. Recorded in the job's errors; never raised in a task."""


class LeaseLost(HeadraceTaskError):
    """A worker tried to settle a job whose lease had lapsed and passed to another worker
    (it was paused past its lease): its outcome is ignored, the other attempt counts."""


class Retry(Exception):
    """Raised by ``context.retry()``: end this attempt and run the job again later.

    Not an error: a task that catches ``Exception`` around its ``retry()`` call would swallow
    it, exactly as in Celery, so call ``retry()`` outside such blocks (or re-raise it).
    """

    def __init__(
        self,
        exc: BaseException | None = None,
        countdown: float | None = None,
        max_retries: int | None = None,
    ) -> None:
        super().__init__(exc)
        self.exc = exc
        self.countdown = countdown
        self.max_retries = max_retries
