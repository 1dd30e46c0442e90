"""ProgRock's job as a durable task: the same 3 % steps, reported with ``context.progress``.

Where the worker version (``consumers.ProgRocker``) hands each step to the delay server and
keeps nothing between messages, a task is one function that runs from start to end on the task
backend's worker; headrace sends each ``context.progress(done, total)`` to the group
``headrace.task.<id>`` and, at the end, ``task.finished``. The page follows it through
``TaskProgressConsumer`` (see ``routing.py``).
"""

from __future__ import annotations

import asyncio

from django.conf import settings
from django.tasks import TaskContext, task

from .models import STEP

__all__ = ["rock"]


@task(takes_context=True)
async def rock(context: TaskContext) -> int:
    """Move from 0 to 100 % in ``STEP`` % steps, one every ``DEMO_STEP_SECONDS``."""
    done = 0
    context.progress(done, 100)
    while done < 100:
        await asyncio.sleep(settings.DEMO_STEP_SECONDS)  # stands for a slice of real work
        done = min(100, done + STEP)
        context.progress(done, 100)
    return done
