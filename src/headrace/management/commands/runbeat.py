"""``manage.py runbeat``: run the schedule (``HEADRACE_TASKS_SCHEDULE``) and nothing else.

Fires each slot of the entries whose tasks use ``--task-backend`` as a job; the task workers
(``runworker --tasks``) run them. Run as many as you like: each slot fires once (see
:mod:`headrace.tasks.beat`). ``runworker --tasks --beat`` does the same inside a worker.
``SIGTERM`` or ``SIGINT`` stops it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from headrace.exceptions import ConfigurationError
from headrace.process import (
    EVENT_LOOPS,
    configure_logging,
    event_loop_factory,
    serve_until_signalled,
)
from headrace.tasks.beat import beat_for_command
from headrace.tasks.worker import WorkerSet

__all__ = ["Command"]


class Command(BaseCommand):
    help = "Fire the periodic tasks of HEADRACE_TASKS_SCHEDULE (and CELERY_BEAT_SCHEDULE)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--task-backend",
            default="default",
            help="TASKS alias whose schedule entries to fire (default 'default')",
        )
        parser.add_argument(
            "--loop",
            choices=EVENT_LOOPS,
            default="auto",
            help="Event loop: uvloop when installed (auto, the default), asyncio or uvloop",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        configure_logging(int(options.get("verbosity", 1)))
        try:
            beat = beat_for_command(**options)
            loop_factory = event_loop_factory(options.get("loop", "auto"))
        except (ConfigurationError, ValueError) as error:
            raise CommandError(str(error)) from error
        asyncio.run(serve_until_signalled(WorkerSet([beat])), loop_factory=loop_factory)
