"""The shared backoff: the pure pause rule, one outage walked on a manual clock, supervise()."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from headrace.backoff import Backoff, pause_for, sleep, supervise
from headrace.layers import ManualClock

WAIT = 5  # seconds a test waits for something that should happen at once
log = logging.getLogger("tests.backoff")


# -- the pure rule ----------------------------------------------------------------------------


def test_pauses_double_from_first_up_to_cap() -> None:
    pauses = [pause_for(n, first=0.05, cap=2.0, jitter=0.0, rand=0.5) for n in range(9)]
    assert pauses == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]


def test_jitter_scales_the_pause_within_its_band() -> None:
    low = pause_for(2, first=0.05, cap=2.0, jitter=0.1, rand=0.0)
    mid = pause_for(2, first=0.05, cap=2.0, jitter=0.1, rand=0.5)
    high = pause_for(2, first=0.05, cap=2.0, jitter=0.1, rand=0.999999)
    assert low == pytest.approx(0.18)
    assert mid == pytest.approx(0.2)
    assert high == pytest.approx(0.22, rel=1e-5)


def test_a_very_long_outage_stays_at_the_cap() -> None:
    assert pause_for(10_000, first=0.05, cap=2.0, jitter=0.0, rand=0.0) == 2.0


def test_bad_numbers_are_refused() -> None:
    with pytest.raises(ValueError, match="attempt"):
        pause_for(-1, first=0.05, cap=2.0, jitter=0.0, rand=0.0)
    with pytest.raises(ValueError, match="first <= cap"):
        Backoff("x", logger=log, first=3.0, cap=2.0)
    with pytest.raises(ValueError, match="jitter"):
        Backoff("x", logger=log, jitter=1.0)


# -- Backoff on the manual clock ----------------------------------------------------------------


def fixed(value: float) -> Iterator[float]:
    while True:
        yield value


async def test_an_outage_is_logged_once_and_the_pauses_double_up_to_the_cap(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="tests.backoff")
    clock = ManualClock()
    backoff = Backoff("reading jobs", logger=log, first=1.0, cap=4.0, jitter=0.0, clock=clock)
    for expected in [1.0, 2.0, 4.0, 4.0]:  # doubling, capped at 4
        task = asyncio.create_task(backoff.failed(ConnectionError("refused")))
        await clock.wait_armed()
        clock.advance(expected - 0.01)
        await asyncio.sleep(0)  # one step: enough for a woken sleeper to finish
        assert not task.done()
        clock.advance(0.01)
        await asyncio.wait_for(task, WAIT)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "reading jobs failed (ConnectionError: refused); retrying with backoff"
    ]
    assert (backoff.failing, backoff.failures, backoff.outages) == (True, 4, 1)

    caplog.clear()
    backoff.succeeded()
    backoff.succeeded()  # a second success is not news
    assert [r.getMessage() for r in caplog.records] == ["reading jobs works again after 4 failures"]
    assert (backoff.failing, backoff.failures) == (False, 0)
    assert backoff.next_pause() == 1.0  # the pauses start over


async def test_the_next_outage_is_logged_again(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    backoff = Backoff("sweeping", logger=log, clock=clock, jitter=0.0)
    for _ in range(2):
        task = asyncio.create_task(backoff.failed(OSError("down")))
        await clock.wait_armed()
        clock.advance(backoff.first)
        await asyncio.wait_for(task, WAIT)
        backoff.succeeded()
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 2
    assert backoff.outages == 2


async def test_jitter_comes_from_the_injected_random() -> None:
    draws = fixed(1.0)
    backoff = Backoff("x", logger=log, first=1.0, cap=8.0, jitter=0.25, random=lambda: next(draws))
    assert backoff.next_pause() == 1.25
    backoff.failures = 3
    assert backoff.next_pause() == 5.0


async def test_sleep_waits_for_the_clock_and_cancelling_it_disarms_the_timer() -> None:
    clock = ManualClock()
    sleeper = asyncio.create_task(sleep(clock, 10))
    await clock.wait_armed()
    clock.advance(9.9)
    assert not sleeper.done()
    clock.advance(0.1)
    await asyncio.wait_for(sleeper, WAIT)

    cancelled = asyncio.create_task(sleep(clock, 10))
    await clock.wait_armed()
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert clock._armed() == 0  # the timer went with the sleeper


# -- supervise() ---------------------------------------------------------------------------------


async def test_supervise_restarts_a_loop_that_raised_and_logs_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="tests.backoff")
    clock = ManualClock()
    backoff = Backoff("the sweeper", logger=log, first=1.0, cap=4.0, jitter=0.0, clock=clock)
    runs = 0
    parked = asyncio.Event()

    async def loop() -> None:
        nonlocal runs
        runs += 1
        if runs <= 2:
            raise RuntimeError(f"bug number {runs}")
        parked.set()
        await asyncio.Event().wait()  # a healthy loop runs for ever

    task = asyncio.create_task(supervise("the sweeper", loop, logger=log, backoff=backoff))
    await clock.wait_armed()
    assert runs == 1  # raised, now pausing on the clock
    clock.advance(0.99)
    await asyncio.sleep(0)  # one step: enough for a woken supervisor to run the loop again
    assert runs == 1
    clock.advance(0.01)
    await clock.wait_armed()
    assert runs == 2  # raised again: the pause doubled
    clock.advance(2.0)
    await asyncio.wait_for(parked.wait(), WAIT)
    assert runs == 3

    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        "the sweeper failed (RuntimeError: bug number 1); retrying with backoff"
    ]
    assert errors[0].exc_info is not None
    assert "Traceback" in caplog.text
    assert "bug number 2" in caplog.text  # the repeat goes to the debug log, traceback too

    clock.advance(4.0)  # up for `cap` seconds: the outage is over
    assert "the sweeper works again after 2 failures" in caplog.text
    assert not backoff.failing

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert runs == 3  # a cancel stops it: no restart


async def test_supervise_returns_when_the_loop_returns() -> None:
    runs = 0

    async def once() -> None:
        nonlocal runs
        runs += 1

    await asyncio.wait_for(supervise("one shot", once, logger=log), WAIT)
    assert runs == 1


async def test_supervise_does_not_restart_a_loop_that_was_cancelled_from_inside() -> None:
    async def cancelled() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(supervise("gone", cancelled, logger=log), WAIT)
