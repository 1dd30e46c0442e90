"""The retry policy: when a failed attempt runs again, and after how long. Pure: no clock, no
loop, no store; jitter is a function you can pass in.

The rules are Celery's, so tasks ported from Celery retry on the same schedule:

- an exception of a class in ``autoretry_for`` (and not in ``dont_autoretry_for``) retries;
  so does an explicit ``context.retry()``; anything else fails the job;
- at most ``max_retries`` retries (``None``: no limit), counted from zero on the first run;
- an automatic retry waits ``retry_backoff`` seconds doubled per retry, capped at
  ``retry_backoff_max``, with "full jitter" (a random time between zero and that) when
  ``retry_jitter`` is on — or ``default_retry_delay`` when ``retry_backoff`` is off;
- an explicit retry waits its ``countdown``, or ``default_retry_delay``.

Celery picks a whole number of seconds for jitter; the default jitter here picks any time in
the range.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from headrace.tasks.exceptions import MaxRetriesExceeded, Retry

__all__ = ["DEFAULT_JITTER", "RetryDecision", "RetryPolicy", "backoff_delay"]

Jitter = Callable[[float], float]


def _full_jitter(cap: float) -> float:
    return random.uniform(0.0, cap)


#: Full jitter: a uniformly random delay between zero and the cap.
DEFAULT_JITTER: Final[Jitter] = _full_jitter


def backoff_delay(
    retries: int, *, factor: float = 1.0, maximum: float = 600.0, jitter: Jitter | None = None
) -> float:
    """Seconds to wait before retry number ``retries + 1``: ``min(maximum, factor * 2**retries)``,
    passed through ``jitter`` when given; never negative."""
    cap = min(maximum, factor * 2.0 ** min(retries, 64))
    if jitter is not None:
        cap = jitter(cap)
    return max(0.0, cap)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryDecision:
    """What to do after a failed attempt: retry after ``delay`` seconds, or fail with ``error``."""

    retry: bool
    delay: float = 0.0
    error: BaseException | None = None  #: the error the attempt ends with (recorded either way)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Celery's retry options, as one value (see the module docstring for the rules)."""

    autoretry_for: tuple[type[BaseException], ...] = ()
    dont_autoretry_for: tuple[type[BaseException], ...] = ()
    max_retries: int | None = 3
    retry_backoff: bool | float = False
    retry_backoff_max: float = 600.0
    retry_jitter: bool = True
    default_retry_delay: float = 180.0

    def decide(
        self, error: BaseException, *, retries: int, jitter: Jitter = DEFAULT_JITTER
    ) -> RetryDecision:
        """Decide after an attempt that raised ``error`` (a :class:`Retry` when the task asked),
        ``retries`` being how many retries already ran."""
        if isinstance(error, Retry):
            limit = error.max_retries if error.max_retries is not None else self.max_retries
            if limit is not None and retries >= limit:
                final = error.exc or MaxRetriesExceeded(
                    f"retry() was called after {retries} retries; max_retries is {limit}"
                )
                return RetryDecision(retry=False, error=final)
            delay = error.countdown if error.countdown is not None else self.default_retry_delay
            return RetryDecision(retry=True, delay=max(0.0, delay), error=error.exc or error)
        if not self.autoretry_for or not isinstance(error, self.autoretry_for):
            return RetryDecision(retry=False, error=error)
        if self.dont_autoretry_for and isinstance(error, self.dont_autoretry_for):
            return RetryDecision(retry=False, error=error)
        if self.max_retries is not None and retries >= self.max_retries:
            return RetryDecision(retry=False, error=error)
        if self.retry_backoff:
            factor = 1.0 if self.retry_backoff is True else float(self.retry_backoff)
            delay = backoff_delay(
                retries,
                factor=factor,
                maximum=self.retry_backoff_max,
                jitter=jitter if self.retry_jitter else None,
            )
        else:
            delay = self.default_retry_delay
        return RetryDecision(retry=True, delay=delay, error=error)
