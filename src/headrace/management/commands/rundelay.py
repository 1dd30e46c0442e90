"""``manage.py rundelay``: a process that forwards ``asgi.delay`` requests, and nothing else.

Delayed sends need no daemon in headrace (every layer delivers ``send(..., delay=)`` itself),
and every ``runworker`` forwards ``asgi.delay`` unless told not to. This command is for
deployments that want one dedicated process for it, as Channels 1 had. ``asgi.delay`` is a
normal channel, so each request is taken by exactly one process: several ``rundelay`` (and
workers) running at once share the work and never deliver a message twice.
"""

from __future__ import annotations

import asyncio
from typing import Any

from django.core.management.base import CommandParser

from headrace.delay import DELAY_CHANNEL
from headrace.process import freeze_startup_objects
from headrace.worker import DEFAULT_CONCURRENCY, Worker

from .runworker import Command as RunworkerCommand
from .runworker import configure_logging, serve_until_signalled

__all__ = ["Command"]


class Command(RunworkerCommand):
    help = f"Forward delayed messages sent to {DELAY_CHANNEL!r} (Channels 1 format)."

    def add_arguments(self, parser: CommandParser) -> None:
        self.add_common_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        configure_logging(int(options.get("verbosity", 1)))
        self.check_layer(options["layer"])
        worker = Worker(
            None,
            [DELAY_CHANNEL],
            layer_alias=options["layer"],
            concurrency=DEFAULT_CONCURRENCY,
            shutdown_timeout=options["shutdown_timeout"],
        )
        freeze_startup_objects()
        asyncio.run(serve_until_signalled(worker))
