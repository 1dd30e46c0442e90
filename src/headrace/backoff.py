"""One backoff for every retry loop, on the injected clock.

Every loop that talks to something that can fail (a layer, a Redis server) retries the same
way: the first failure of an outage is logged once, then the loop pauses for a time that
doubles from ``first`` up to ``cap`` seconds, scaled by a random factor so that many processes
that lost the same server do not come back in step; the first success logs the recovery once
and resets the pauses. The pauses are taken on a :class:`~headrace.layers.Clock`, so a test
passes a :class:`~headrace.layers.ManualClock` and walks an outage through with ``advance()``.

:func:`supervise` keeps a background task alive: a loop that raises is logged with its
traceback and run again after the backoff pause; nothing stops silently.

The numbers: 0.05 s after the first failure, then 0.1, 0.2, 0.4, 0.8, 1.6, and 2 s from the
seventh on, each within ±10 %.
"""

from __future__ import annotations

import asyncio
import logging
import random as _random
from collections.abc import Awaitable, Callable

from headrace.layers.clock import Clock, SystemClock, TimerHandle

__all__ = ["Backoff", "pause_for", "sleep", "supervise"]

# Past this many doublings any sane ``first`` is above any sane ``cap`` (and 2**n would
# overflow a float long before the attempt count could).
_MAX_DOUBLINGS = 64


def pause_for(attempt: int, *, first: float, cap: float, jitter: float, rand: float) -> float:
    """The pause after failure number ``attempt`` (0 for the first) of an outage.

    ``min(cap, first * 2**attempt)``, scaled by ``1 - jitter + 2 * jitter * rand``: with
    ``rand`` drawn uniformly from [0, 1) the pause lands within ``±jitter`` of the doubled value.
    """
    if attempt < 0:
        raise ValueError(f"attempt counts failures from 0, got {attempt!r}")
    base = cap if attempt >= _MAX_DOUBLINGS else min(cap, first * 2**attempt)
    return base * (1.0 - jitter + 2.0 * jitter * rand)


async def sleep(clock: Clock, seconds: float) -> None:
    """Sleep ``seconds`` on ``clock`` (a :class:`ManualClock` returns when ``advance()`` passes).

    Cancelling the sleeper cancels its timer.
    """
    loop = asyncio.get_running_loop()
    woken: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not woken.done():
            woken.set_result(None)

    timer: TimerHandle = clock.call_at(clock.time() + max(0.0, seconds), wake)
    try:
        await woken
    finally:
        timer.cancel()


class Backoff:
    """The pauses and the log lines of one retry loop (``what`` names it in the log).

    Call :meth:`failed` after each failure (it logs and sleeps) and :meth:`succeeded` after
    each success. ``failing``, ``failures`` and ``outages`` are for ``statistics()``.
    """

    def __init__(
        self,
        what: str,
        *,
        logger: logging.Logger,
        first: float = 0.05,
        cap: float = 2.0,
        jitter: float = 0.1,
        clock: Clock | None = None,
        random: Callable[[], float] = _random.random,
    ) -> None:
        if not 0 < first <= cap:
            raise ValueError(f"backoff needs 0 < first <= cap, got first={first!r}, cap={cap!r}")
        if not 0 <= jitter < 1:
            raise ValueError(f"backoff jitter must be in [0, 1), got {jitter!r}")
        self.what = what
        self.logger = logger
        self.first = first
        self.cap = cap
        self.jitter = jitter
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.random = random
        #: Inside an outage: failed() was called and succeeded() not since.
        self.failing = False
        #: Failures in the current outage (0 outside one).
        self.failures = 0
        #: Outages seen since this object was made.
        self.outages = 0

    def next_pause(self) -> float:
        """The pause after the failures counted so far (``first`` for the first), jittered."""
        return pause_for(
            max(0, self.failures - 1),
            first=self.first,
            cap=self.cap,
            jitter=self.jitter,
            rand=self.random(),
        )

    async def failed(self, error: BaseException) -> None:
        """Count a failure, log it if it opens an outage, and sleep the pause on the clock.

        Only the first failure of an outage is a warning; the rest go to the debug log.
        """
        self._count(error, level=logging.WARNING, traceback=False)
        await sleep(self.clock, self.next_pause())

    def succeeded(self) -> None:
        """End the outage, if in one: log the recovery once and start the pauses over."""
        if not self.failing:
            return
        self.logger.warning("%s works again after %d failures", self.what, self.failures)
        self.failing = False
        self.failures = 0

    def _count(self, error: BaseException, *, level: int, traceback: bool) -> None:
        self.failures += 1
        if not self.failing:
            self.failing = True
            self.outages += 1
        else:
            level = logging.DEBUG
        self.logger.log(
            level,
            "%s failed (%s: %s); retrying with backoff",
            self.what,
            type(error).__name__,
            error,
            exc_info=error if traceback else None,
        )


async def supervise(
    what: str,
    run: Callable[[], Awaitable[None]],
    *,
    logger: logging.Logger,
    backoff: Backoff | None = None,
) -> None:
    """Run the background loop ``run()`` until it returns or this task is cancelled.

    If ``run()`` raises (anything but ``CancelledError``), the error is logged with its
    traceback — as an error the first time in an outage, at debug level after — and ``run()``
    is called again after the backoff pause. Once a run has stayed up ``backoff.cap`` seconds
    the outage is over: the recovery is logged and the pauses start over.
    """
    if backoff is None:
        backoff = Backoff(what, logger=logger)
    while True:
        recovered: TimerHandle | None = None
        if backoff.failing:
            recovered = backoff.clock.call_at(backoff.clock.time() + backoff.cap, backoff.succeeded)
        try:
            await run()
            return
        except Exception as error:
            crash = error
        finally:
            if recovered is not None:
                recovered.cancel()
        backoff._count(crash, level=logging.ERROR, traceback=True)
        await sleep(backoff.clock, backoff.next_pause())
