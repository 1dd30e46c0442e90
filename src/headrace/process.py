"""Preparing a long-running process (runserver, runworker, rundelay) once it has started.

After Django has loaded the project, hundreds of thousands of objects (modules, settings, URL
patterns, templates, the ORM's metadata) live until the process exits. Python's cyclic garbage
collector would walk all of them on every full collection — a pause of tens of milliseconds,
felt as a late delayed message or a slow broadcast. :func:`freeze_startup_objects` moves them
out of its way (``gc.freeze()``), as long-running Python servers commonly do. Objects made
afterwards are collected as usual.

Set ``HEADRACE_FREEZE_STARTUP_OBJECTS = False`` to keep the collector's default behaviour.
"""

from __future__ import annotations

import gc

from django.conf import settings

__all__ = ["freeze_startup_objects"]


def freeze_startup_objects() -> bool:
    """Collect once, then freeze every object alive now; False when the setting turns it off."""
    if settings.configured and not getattr(settings, "HEADRACE_FREEZE_STARTUP_OBJECTS", True):
        return False
    gc.collect()
    gc.freeze()
    return True
