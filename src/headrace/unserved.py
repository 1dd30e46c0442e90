"""Background channels nobody serves: said at start-up, and noticed on a shared layer.

A message sent to a routed background channel (a ``ChannelNameRouter`` entry) waits until some
process runs a worker for it. When none does, nothing fails: the message just waits, then
expires, and the page that started it shows 0% forever. So:

- ``runserver`` and ``runworker`` log at start-up which routed channels nobody *in this
  process* serves, with the ``runworker`` command that would (:func:`warn_unserved`);
- ``runworker`` on the in-memory layer warns that it cannot see another process's messages
  (the in-memory layer lives inside one process);
- ``runserver`` on a shared layer (Redis) watches those channels' queue lengths
  (``layer.queue_length(channel)``) and logs one warning for a channel whose messages have
  waited ``HEADRACE_UNREAD_CHANNEL_WARNING_AFTER`` seconds (10 by default; 0 turns the watch
  off) without any being taken (:func:`watch_unread_channels`). It warns again only after the
  channel has been read or emptied.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from django.conf import settings

from .delay import DELAY_CHANNEL
from .layers import BaseChannelLayer, capabilities_of
from .layers.registry import DEFAULT_CHANNEL_LAYER

__all__ = [
    "DEFAULT_UNREAD_WARNING_AFTER",
    "UnreadWatch",
    "runworker_command",
    "unread_warning_after",
    "unserved_channels",
    "warn_unserved",
    "watch_unread_channels",
]

logger = logging.getLogger("headrace.worker")

#: Seconds messages may wait in a routed channel, none taken, before runserver warns.
DEFAULT_UNREAD_WARNING_AFTER: Final = 10.0


def unserved_channels(routed: Iterable[str], served: Iterable[str]) -> list[str]:
    """The routed channels (sorted) that are not among ``served``."""
    return sorted(set(routed) - set(served) - {DELAY_CHANNEL})


def runworker_command(channels: Sequence[str], layer_alias: str = DEFAULT_CHANNEL_LAYER) -> str:
    """The command line that serves ``channels``."""
    layer = "" if layer_alias == DEFAULT_CHANNEL_LAYER else f" --layer {layer_alias}"
    return f"python manage.py runworker {' '.join(channels)}{layer}"


def warn_unserved(
    routed: Iterable[str],
    served: Iterable[str],
    layer: BaseChannelLayer | None,
    *,
    layer_alias: str = DEFAULT_CHANNEL_LAYER,
    process: str,
) -> list[str]:
    """Log which routed channels ``process`` ("runserver", "runworker") leaves to others.

    Returns the unserved channels. With an in-process layer (the in-memory one) no other
    process can serve them, and the warning says what to do instead.
    """
    missing = unserved_channels(routed, served)
    in_memory = layer is not None and capabilities_of(layer).in_process
    if process == "runworker" and in_memory:
        logger.warning(
            "runworker on the in-memory layer %r: this process cannot see messages sent by any "
            "other process (runserver, a shell, another worker); they stay in that process's "
            "memory. Use a shared layer (BACKEND 'headrace.layers.redis.RedisChannelLayer') "
            "to run workers in their own processes, or let runserver run them "
            "(HEADRACE_EMBEDDED_WORKERS = True, the default)",
            layer_alias,
        )
    if not missing:
        return missing
    names = ", ".join(missing)
    if in_memory:
        logger.warning(
            "%s does not serve the routed background channel(s) %s, and with the in-memory "
            "layer %r no other process can: messages sent to them will wait and expire. %s",
            process,
            names,
            layer_alias,
            "Set HEADRACE_EMBEDDED_WORKERS = True (the default) so runserver runs them"
            if process == "runserver"
            else "Serve them in this process: "
            + runworker_command(unserved_channels([*served, *missing], ()), layer_alias),
        )
    else:
        logger.warning(
            "%s does not serve the routed background channel(s) %s; messages sent to them "
            "wait until a worker runs: %s",
            process,
            names,
            runworker_command(missing, layer_alias),
        )
    return missing


def unread_warning_after() -> float:
    """``HEADRACE_UNREAD_CHANNEL_WARNING_AFTER`` in seconds (0 = never watch)."""
    value = getattr(settings, "HEADRACE_UNREAD_CHANNEL_WARNING_AFTER", DEFAULT_UNREAD_WARNING_AFTER)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        from .exceptions import ConfigurationError

        raise ConfigurationError(
            "HEADRACE_UNREAD_CHANNEL_WARNING_AFTER must be a number of seconds >= 0 "
            f"(0 turns the watch off), got {value!r}"
        )
    return float(value)


class UnreadWatch:
    """Decides, from queue lengths seen over time, when a channel deserves its one warning.

    A channel is *stalled* from the first time it is seen with messages until a later look finds
    fewer (someone took some) or none. :meth:`observe` returns ``True`` once per stall, when it
    has lasted ``after`` seconds.
    """

    def __init__(self, after: float) -> None:
        self.after = after
        self._since: dict[str, float] = {}
        self._length: dict[str, int] = {}
        self._warned: set[str] = set()

    def observe(self, channel: str, length: int, now: float) -> bool:
        """Record that ``channel`` holds ``length`` messages at ``now``; True: warn now."""
        if length <= 0:
            self._since.pop(channel, None)
            self._length.pop(channel, None)
            self._warned.discard(channel)
            return False
        if channel not in self._since or length < self._length[channel]:
            self._since[channel] = now
            self._warned.discard(channel)
        self._length[channel] = length
        if channel in self._warned or now - self._since[channel] < self.after:
            return False
        self._warned.add(channel)
        return True

    def waited(self, channel: str, now: float) -> float:
        """Seconds ``channel`` has been stalled at ``now`` (0 when it is not)."""
        since = self._since.get(channel)
        return 0.0 if since is None else now - since


async def watch_unread_channels(
    layer: Any,
    channels: Sequence[str],
    *,
    after: float,
    layer_alias: str = DEFAULT_CHANNEL_LAYER,
    interval: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Warn once per stall about a channel in ``channels`` that nobody reads (runs forever).

    Looks every ``interval`` seconds (default: a quarter of ``after``, at most 5 s). A layer
    error is logged once per outage and the watch goes on.
    """
    watch = UnreadWatch(after)
    pause = interval if interval is not None else min(max(after / 4, 0.05), 5.0)
    failing = False
    while True:
        failed = False
        for channel in channels:
            try:
                length = await layer.queue_length(channel)
            except Exception as error:
                failed = True
                if not failing:
                    logger.warning(
                        "cannot read the queue length of %r to watch for unread channels "
                        "(%s: %s); still trying",
                        channel,
                        type(error).__name__,
                        error,
                    )
                failing = True
                continue
            now = clock()
            if watch.observe(channel, length, now):
                logger.warning(
                    "channel %r has %d message(s) waiting for %.0f s and none was taken: "
                    "is a worker running? %s",
                    channel,
                    length,
                    watch.waited(channel, now),
                    runworker_command([channel], layer_alias),
                )
        failing = failed
        await asyncio.sleep(pause)
