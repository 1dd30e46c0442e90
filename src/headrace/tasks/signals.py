"""headrace's task signal, beside Django's ``task_enqueued``, ``task_started`` and
``task_finished`` (which headrace backends send as Django documents).

``task_retried`` is sent when a failed attempt will run again, with ``sender`` (the backend
class), ``task_result`` (the job, READY again), ``exception`` (what the attempt raised, or the
``exc`` given to ``retry()``; the :class:`~headrace.tasks.exceptions.Retry` itself for a bare
``retry()``) and ``delay`` (seconds
until the next attempt may start). ``task_finished`` is sent only when the job has finished
for good.
"""

from __future__ import annotations

from django.dispatch import Signal

__all__ = ["task_retried"]

task_retried = Signal()
