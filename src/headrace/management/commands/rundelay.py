"""``manage.py rundelay``: a process for delayed messages, and nothing else.

Delayed sends need no daemon in headrace (every layer delivers ``send(..., delay=)`` itself),
and every ``runworker`` forwards ``asgi.delay`` unless told not to. This command is for
deployments that want one dedicated process for it, as Channels 1 had. It does two things:

- forwards ``asgi.delay`` requests (Channels 1 format). ``asgi.delay`` is a normal channel,
  so each request is taken by exactly one process;
- on a layer that keeps delayed messages outside the process (Redis), sweeps every
  ``--sweep-interval`` seconds for messages already due, so that those scheduled by a process
  that died before their time are delivered within the interval rather than at the next
  heartbeat of some reading process. Moving is atomic in Redis: several ``rundelay`` (and the
  processes that scheduled the messages) never deliver a message twice.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from django.core.management.base import CommandError, CommandParser

from headrace.backoff import Backoff, sleep, supervise
from headrace.delay import DELAY_CHANNEL
from headrace.exceptions import LayerConnectionError
from headrace.layers import Clock, SystemClock, capabilities_of, get_channel_layer
from headrace.process import configure_logging, freeze_startup_objects, serve_until_signalled
from headrace.worker import DEFAULT_CONCURRENCY, Worker

from .runworker import Command as RunworkerCommand

__all__ = ["DEFAULT_SWEEP_INTERVAL", "Command", "sweep_due_messages"]

DEFAULT_SWEEP_INTERVAL = 0.5  # seconds

logger = logging.getLogger("headrace.delay")


async def sweep_due_messages(alias: str, interval: float, *, clock: Clock | None = None) -> None:
    """Deliver due delayed messages of layer ``alias`` every ``interval`` seconds, for ever.

    Only for layers whose capabilities say ``moves_due`` (Redis); returns at once for the
    others, whose delayed messages live and die with the process that scheduled them. A lost
    connection is logged once per outage and retried with the shared backoff
    (:mod:`headrace.backoff`); any other error is logged with its traceback and the sweeper
    runs again after the backoff. ``clock`` times the interval and the pauses (tests pass a
    ``ManualClock``).
    """
    layer = get_channel_layer(alias)
    if layer is None or not capabilities_of(layer).moves_due:
        return
    clock = clock if clock is not None else SystemClock()
    sweeping = Backoff("sweeping due delayed messages", logger=logger, clock=clock)
    await supervise(
        "the delayed-message sweeper",
        functools.partial(_sweep, layer.move_due, interval, clock, sweeping),
        logger=logger,
        backoff=Backoff("the delayed-message sweeper", logger=logger, clock=clock),
    )


async def _sweep(
    move_due: Callable[[], Awaitable[int]], interval: float, clock: Clock, backoff: Backoff
) -> None:
    while True:
        try:
            moved = await move_due()
        except LayerConnectionError as error:
            await backoff.failed(error)
            continue
        backoff.succeeded()
        if moved:
            logger.debug("moved %d due delayed messages", moved)
        await sleep(clock, interval)


async def serve(worker: Worker, interval: float) -> None:
    sweeper = asyncio.create_task(sweep_due_messages(worker.layer_alias, interval))
    await serve_until_signalled(worker, companions=[sweeper])


class Command(RunworkerCommand):
    help = (
        f"Forward delayed messages sent to {DELAY_CHANNEL!r} (Channels 1 format) and deliver "
        "due delayed messages that no live process is timing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        self.add_common_arguments(parser)
        parser.add_argument(
            "--sweep-interval",
            type=float,
            default=DEFAULT_SWEEP_INTERVAL,
            help="Seconds between sweeps for due delayed messages (Redis layer; default "
            f"{DEFAULT_SWEEP_INTERVAL:g})",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        configure_logging(int(options.get("verbosity", 1)))
        interval = options.get("sweep_interval", DEFAULT_SWEEP_INTERVAL)
        if not 0 < interval < math.inf:
            raise CommandError(
                f"--sweep-interval must be a positive and finite number of seconds, not {interval}"
            )
        self.check_layer(options["layer"])
        worker = Worker(
            None,
            [DELAY_CHANNEL],
            layer_alias=options["layer"],
            concurrency=DEFAULT_CONCURRENCY,
            shutdown_timeout=options["shutdown_timeout"],
        )
        loop_factory = self.loop_factory(options.get("loop", "auto"))
        freeze_startup_objects()
        asyncio.run(serve(worker, interval), loop_factory=loop_factory)
