"""Preparing a long-running process (runserver, runworker, rundelay) once it has started.

After Django has loaded the project, hundreds of thousands of objects (modules, settings, URL
patterns, templates, the ORM's metadata) live until the process exits. Python's cyclic garbage
collector would walk all of them on every full collection — a pause of tens of milliseconds,
felt as a late delayed message or a slow broadcast. :func:`freeze_startup_objects` moves them
out of its way (``gc.freeze()``), as long-running Python servers commonly do. Objects made
afterwards are collected as usual.

Set ``HEADRACE_FREEZE_STARTUP_OBJECTS = False`` to keep the collector's default behaviour.

Such a process runs on the event loop :func:`event_loop_factory` makes: uvloop when it is
installed (``uvicorn[standard]`` brings it), as uvicorn would choose; ``--loop asyncio`` on the
command line keeps asyncio's standard loop. :func:`report_failure` logs a background task's
crash the moment it happens; when the process stops, :func:`cancel_and_wait` ends the
background tasks it ran beside its main job.

``runworker`` and ``rundelay`` log with :func:`configure_logging` and run their worker with
:func:`serve_until_signalled`.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import signal
import sys
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

from django.conf import settings

if TYPE_CHECKING:
    from headrace.tasks.worker import TaskWorker, WorkerSet
    from headrace.worker import Worker

__all__ = [
    "EVENT_LOOPS",
    "call_on_loop",
    "cancel_and_wait",
    "configure_logging",
    "event_loop_factory",
    "freeze_startup_objects",
    "report_failure",
    "running_loop",
    "serve_until_signalled",
]

EVENT_LOOPS: Final = ("auto", "asyncio", "uvloop")


def event_loop_factory(name: str = "auto") -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What ``asyncio.run(..., loop_factory=...)`` should make: for ``"auto"`` uvloop when it
    can be imported, else the standard loop (``None``); ``"asyncio"`` or ``"uvloop"`` by name.
    """
    if name not in EVENT_LOOPS:
        raise ValueError(f"unknown event loop {name!r}; choose one of {', '.join(EVENT_LOOPS)}")
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError as error:
        if name == "uvloop":
            raise ValueError(
                "the uvloop event loop was asked for, but uvloop is not installed"
            ) from error
        return None
    return uvloop.new_event_loop


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, or None (``asyncio.get_running_loop()`` raises
    instead)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def call_on_loop(loop: asyncio.AbstractEventLoop, callback: Callable[[], object]) -> None:
    """Run ``callback`` on ``loop``: at once when called from that loop, else from any thread
    at its next turn; nothing when the loop is closed (what it would stop has ended)."""
    if loop.is_closed():
        return
    if running_loop() is loop:
        callback()
    else:
        loop.call_soon_threadsafe(callback)


def freeze_startup_objects() -> bool:
    """Collect once, then freeze every object alive now; False when the setting turns it off."""
    if settings.configured and not getattr(settings, "HEADRACE_FREEZE_STARTUP_OBJECTS", True):
        return False
    gc.collect()
    gc.freeze()
    return True


# Tasks whose failure report_failure() has logged already: cancel_and_wait() does not repeat it.
_reported: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()


def report_failure(task: asyncio.Task[Any], logger: logging.Logger) -> asyncio.Task[Any]:
    """Log ``task``'s exception on ``logger`` as soon as it fails, and return ``task``.

    A background task that crashes at start-up (say, embedded workers on a layer that cannot
    be built) is reported then, not only when the process stops.
    """
    task.add_done_callback(functools.partial(_log_failure, logger))
    return task


def _log_failure(logger: logging.Logger, task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        _reported.add(task)
        logger.error("background task %s failed: %s", task.get_name(), error, exc_info=error)


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], logger: logging.Logger) -> None:
    """Cancel ``tasks`` and wait until each has ended; one that had failed is logged on
    ``logger`` (unless :func:`report_failure` did already), not raised, so that the rest of
    the shutdown still runs."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    for task in tasks:
        try:
            await task
        except asyncio.CancelledError:
            pass
        except Exception:
            if task not in _reported:
                logger.exception("background task %r failed while the process stopped", task)


def configure_logging(verbosity: int) -> None:
    """Send headrace's log lines to stderr when the project has not configured logging."""
    headrace_logger = logging.getLogger("headrace")
    if headrace_logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    headrace_logger.addHandler(handler)
    headrace_logger.setLevel(
        logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    )


async def serve_until_signalled(
    worker: Worker | TaskWorker | WorkerSet, companions: Sequence[asyncio.Task[Any]] = ()
) -> None:
    """Run ``worker`` until SIGTERM/SIGINT (a second signal cancels what is left).

    ``companions`` are tasks that live as long as the worker: they are cancelled when it has
    stopped, before the layer is closed.
    """
    from headrace.layers import get_channel_layer

    logger = logging.getLogger("headrace.worker")
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        name = signal.Signals(signum).name
        if signals == 1:
            logger.info("%s: stopping (finishing the handlers in hand)", name)
            worker.stop()
        else:
            logger.warning("%s again: cancelling the handlers still running", name)
            worker.stop(now=True)

    installed = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, on_signal, signum)
            installed.append(signum)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no support
            pass
    try:
        await worker.run()
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
        await cancel_and_wait(companions, logger)
        layer = get_channel_layer(worker.layer_alias)
        if layer is not None:
            await layer.close()
