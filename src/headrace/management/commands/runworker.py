"""``manage.py runworker [CHANNEL ...] [--tasks [QUEUE ...]] [--beat]``: serve background
channels and task queues until signalled.

Same command line as Channels' (``--layer``), plus ``--concurrency``, ``--shutdown-timeout``
and ``--no-delay``. The consumers come from the ``ChannelNameRouter`` under ``ASGI_APPLICATION``.
The worker also forwards old-format delay requests from ``asgi.delay`` unless ``--no-delay``
is given. ``--tasks`` also runs the jobs of those queues (all of the backend's when none are
named) from ``TASKS[--task-backend]`` (see :mod:`headrace.tasks.worker`); it may be given
without channels. ``--beat`` also fires the schedule of that backend (as ``runbeat`` does,
see :mod:`headrace.tasks.beat`). ``SIGTERM`` or ``SIGINT`` stops it gracefully (exit status
0); a second one cancels the handlers still running.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from headrace.delay import DELAY_CHANNEL
from headrace.exceptions import ConfigurationError
from headrace.layers import get_channel_layer
from headrace.layers.registry import DEFAULT_CHANNEL_LAYER
from headrace.process import (
    EVENT_LOOPS,
    configure_logging,
    event_loop_factory,
    freeze_startup_objects,
    serve_until_signalled,
)
from headrace.tasks.beat import Beat, beat_for_command
from headrace.tasks.worker import TaskWorker, WorkerSet, task_worker_for_command
from headrace.types import ASGIApp
from headrace.worker import DEFAULT_CONCURRENCY, DEFAULT_SHUTDOWN_TIMEOUT, Worker

# configure_logging and serve_until_signalled live in headrace.process; importing them from here
# keeps working.
__all__ = ["Command", "configure_logging", "serve_until_signalled"]


class Command(BaseCommand):
    help = "Run the consumers routed for background channels (ChannelNameRouter)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("channels", nargs="*", help="Channels to serve")
        parser.add_argument(
            "--tasks",
            nargs="*",
            metavar="QUEUE",
            help="Also run task jobs of these queues (none named: all of the backend's)",
        )
        parser.add_argument(
            "--beat",
            action="store_true",
            help="Also fire the schedule (HEADRACE_TASKS_SCHEDULE) of --task-backend",
        )
        parser.add_argument(
            "--task-backend",
            default="default",
            help="TASKS alias the --tasks jobs come from (default 'default')",
        )
        self.add_common_arguments(parser)
        parser.add_argument(
            "--concurrency",
            type=int,
            default=DEFAULT_CONCURRENCY,
            help=f"Handlers to run at once (default {DEFAULT_CONCURRENCY})",
        )
        parser.add_argument(
            "--no-delay",
            action="store_false",
            dest="serve_delay",
            help=f"Do not forward delay requests from {DELAY_CHANNEL!r}",
        )

    def add_common_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--loop",
            choices=EVENT_LOOPS,
            default="auto",
            help="Event loop: uvloop when installed (auto, the default), asyncio or uvloop",
        )
        parser.add_argument(
            "--layer",
            default=DEFAULT_CHANNEL_LAYER,
            help=f"CHANNEL_LAYERS alias to use (default {DEFAULT_CHANNEL_LAYER!r})",
        )
        parser.add_argument(
            "--shutdown-timeout",
            type=float,
            default=DEFAULT_SHUTDOWN_TIMEOUT,
            help="Seconds to let handlers in hand finish after SIGTERM/SIGINT "
            f"(default {DEFAULT_SHUTDOWN_TIMEOUT:g})",
        )

    def check_layer(self, alias: str) -> None:
        try:
            layer = get_channel_layer(alias)
        except ConfigurationError as error:
            raise CommandError(str(error)) from error
        if layer is None:
            raise CommandError(f"there is no channel layer {alias!r} in CHANNEL_LAYERS")

    def loop_factory(self, name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
        try:
            return event_loop_factory(name)
        except ValueError as error:
            raise CommandError(str(error)) from error

    def application(self, channels: list[str]) -> ASGIApp | None:
        if all(channel == DELAY_CHANNEL for channel in channels):
            return None
        from headrace.routing import get_default_application

        return get_default_application()

    def handle(self, *args: Any, **options: Any) -> None:
        configure_logging(int(options.get("verbosity", 1)))
        channels: list[str] = list(options.get("channels") or [])
        queues: list[str] | None = options.get("tasks")
        beat = bool(options.get("beat"))
        if not channels and queues is None and not beat:
            raise CommandError("name the channels to serve, or give --tasks or --beat")
        if channels and options.get("serve_delay", False) and DELAY_CHANNEL not in channels:
            channels.append(DELAY_CHANNEL)
        workers: list[Worker | TaskWorker | Beat] = []
        try:
            if channels:
                alias = options["layer"]
                self.check_layer(alias)
                workers.append(
                    Worker(
                        self.application(channels),
                        channels,
                        layer_alias=alias,
                        concurrency=options.get("concurrency", DEFAULT_CONCURRENCY),
                        shutdown_timeout=options["shutdown_timeout"],
                    )
                )
            if queues is not None:
                workers.append(task_worker_for_command(queues, **options))
            if beat:
                workers.append(beat_for_command(**options))
        except ConfigurationError as error:
            raise CommandError(str(error)) from error
        only = workers[0]
        worker = only if len(workers) == 1 and not isinstance(only, Beat) else WorkerSet(workers)
        loop_factory = self.loop_factory(options.get("loop", "auto"))
        freeze_startup_objects()
        asyncio.run(serve_until_signalled(worker), loop_factory=loop_factory)
