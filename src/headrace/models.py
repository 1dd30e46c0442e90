"""The ``headrace`` app's models: the tables of the database task backend.

They exist in every project that installs the app (an unused table costs nothing), so
switching ``TASKS`` to :class:`~headrace.tasks.backends.database.DatabaseTaskBackend` needs
no new app, only ``migrate``.
"""

from __future__ import annotations

from headrace.tasks.backends.database.models import (
    TaskCounter,
    TaskDeadLetter,
    TaskJob,
    TaskJobResult,
    TaskScheduleSlot,
    TaskWorkerHeartbeat,
)

__all__ = [
    "TaskCounter",
    "TaskDeadLetter",
    "TaskJob",
    "TaskJobResult",
    "TaskScheduleSlot",
    "TaskWorkerHeartbeat",
]
