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
command line keeps asyncio's standard loop. When the process stops, :func:`cancel_and_wait`
ends the background tasks it ran beside its main job.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable, Iterable
from typing import Any, Final

from django.conf import settings

__all__ = ["EVENT_LOOPS", "cancel_and_wait", "event_loop_factory", "freeze_startup_objects"]

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


def freeze_startup_objects() -> bool:
    """Collect once, then freeze every object alive now; False when the setting turns it off."""
    if settings.configured and not getattr(settings, "HEADRACE_FREEZE_STARTUP_OBJECTS", True):
        return False
    gc.collect()
    gc.freeze()
    return True


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], logger: logging.Logger) -> None:
    """Cancel ``tasks`` and wait until each has ended; one that had failed is logged on
    ``logger``, not raised, so that the rest of the shutdown still runs."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    for task in tasks:
        try:
            await task
        except asyncio.CancelledError:
            pass
        except Exception:
            logger.exception("background task %r failed while the process stopped", task)
