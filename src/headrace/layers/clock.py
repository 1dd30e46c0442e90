"""Clocks: where a layer reads the time and arms its timers.

Layers never call ``time.time()`` or ``loop.call_later`` directly; they ask their clock. In
production that is :class:`SystemClock`. Tests pass a :class:`ManualClock` and move time with
``advance()``, so expiry and delay are tested without sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock", "TimerHandle"]


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """What a layer needs of time: the wall clock, and a timer on the running event loop."""

    def time(self) -> float:
        """Seconds since the epoch (shared between processes, unlike a monotonic clock)."""
        ...

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        """Run ``callback`` on the running event loop once ``time()`` reaches ``when``."""
        ...


class SystemClock:
    """The real clock: ``time.time()`` and the running loop's timers."""

    __slots__ = ()

    def time(self) -> float:
        return time.time()

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        loop = asyncio.get_running_loop()
        return loop.call_later(max(0.0, when - time.time()), callback)


class _ManualTimer:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A clock that moves only when told to: ``advance(seconds)`` fires the timers now due.

    Timer callbacks run synchronously inside ``advance``, in due order, on the caller's
    thread — call it from the event loop that armed them. :meth:`wait_armed` lets a test wait
    until the code under test is sleeping on the clock before it moves time.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._timers: list[tuple[float, int, _ManualTimer]] = []
        self._order = itertools.count()
        self._armed_waits: list[tuple[int, asyncio.Future[None]]] = []

    def time(self) -> float:
        return self._now

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        timer = _ManualTimer(when, callback)
        if when <= self._now:
            asyncio.get_running_loop().call_soon(self._fire, timer)
        else:
            heapq.heappush(self._timers, (when, next(self._order), timer))
            if self._armed_waits:
                self._wake_armed()
        return timer

    async def wait_armed(self, count: int = 1) -> None:
        """Until at least ``count`` timers wait for a later time (call on the timers' loop)."""
        if self._armed() >= count:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (count, future)
        self._armed_waits.append(entry)
        try:
            await future
        finally:
            if entry in self._armed_waits:
                self._armed_waits.remove(entry)

    def _armed(self) -> int:
        return sum(1 for _, _, timer in self._timers if not timer.cancelled)

    def _wake_armed(self) -> None:
        armed = self._armed()
        for entry in list(self._armed_waits):
            if armed >= entry[0]:
                self._armed_waits.remove(entry)
                if not entry[1].done():
                    entry[1].set_result(None)

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` and fire every timer that became due."""
        if seconds < 0:
            raise ValueError(f"a clock cannot go backwards (advance({seconds!r}))")
        self._now += seconds
        while self._timers and self._timers[0][0] <= self._now:
            _, _, timer = heapq.heappop(self._timers)
            self._fire(timer)

    @staticmethod
    def _fire(timer: _ManualTimer) -> None:
        if not timer.cancelled:
            timer.cancelled = True
            timer.callback()
