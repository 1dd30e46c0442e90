"""Hand-offs to waiting readers: future-compatible for asyncio tasks, woken together."""

from __future__ import annotations

import asyncio

import pytest

from headrace.layers.handoff import Handoff, Wakeups


def _reader(handoff: Handoff[str], log: list[str], name: str) -> asyncio.Task[str]:
    async def read() -> str:
        value = await handoff
        log.append(name)
        return value

    return asyncio.create_task(read())


async def test_a_task_awaiting_a_handoff_gets_the_value_given() -> None:
    handoff: Handoff[str] = Handoff(Wakeups(asyncio.get_running_loop()))
    task = _reader(handoff, [], "a")
    await asyncio.sleep(0)
    assert handoff.give("hello") is True
    assert await task == "hello"
    assert handoff.done()
    assert not handoff.cancelled()


async def test_a_handoff_given_before_it_is_awaited_returns_at_once() -> None:
    handoff: Handoff[int] = Handoff(Wakeups(asyncio.get_running_loop()))
    handoff.set_result(7)
    assert await handoff == 7


async def test_readers_given_in_one_pass_wake_together_in_order() -> None:
    loop = asyncio.get_running_loop()
    wakeups = Wakeups(loop)
    handoffs: list[Handoff[str]] = [Handoff(wakeups) for _ in range(3)]
    log: list[str] = []
    tasks = [_reader(h, log, f"r{n}") for n, h in enumerate(handoffs)]
    await asyncio.sleep(0)
    handoffs[0].give("x")
    loop.call_soon(log.append, "other callback")
    handoffs[1].give("x")
    handoffs[2].give("x")
    await asyncio.gather(*tasks)
    # One loop callback woke all three, ahead of the callback queued between the hand-offs
    # (one future per reader would have woken r1 and r2 after it).
    assert log == ["r0", "r1", "r2", "other callback"]


async def test_a_cancelled_reader_gets_cancelled_error_and_takes_nothing() -> None:
    handoff: Handoff[str] = Handoff(Wakeups(asyncio.get_running_loop()))
    task = _reader(handoff, [], "a")
    await asyncio.sleep(0)
    task.cancel("no longer wanted")
    with pytest.raises(asyncio.CancelledError, match="no longer wanted"):
        await task
    assert handoff.cancelled()
    assert handoff.give("late") is False
    with pytest.raises(asyncio.InvalidStateError):
        handoff.set_result("late")


async def test_a_reader_cancelled_after_the_handoff_still_sees_cancellation() -> None:
    """The value stays readable, so the layer can give it to the next reader."""
    handoff: Handoff[str] = Handoff(Wakeups(asyncio.get_running_loop()))
    task = _reader(handoff, [], "a")
    await asyncio.sleep(0)
    handoff.give("kept")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert handoff.done()
    assert not handoff.cancelled()
    assert handoff.result() == "kept"


async def test_an_exception_set_on_a_handoff_is_raised_in_the_reader() -> None:
    handoff: Handoff[str] = Handoff(Wakeups(asyncio.get_running_loop()))
    task = _reader(handoff, [], "a")
    await asyncio.sleep(0)
    handoff.set_exception(ConnectionError("gone"))
    with pytest.raises(ConnectionError, match="gone"):
        await task
    assert isinstance(handoff.exception(), ConnectionError)


async def test_a_handoff_without_a_value_has_no_result() -> None:
    handoff: Handoff[str] = Handoff(Wakeups(asyncio.get_running_loop()))
    with pytest.raises(asyncio.InvalidStateError, match="no result yet"):
        handoff.result()


async def test_a_timeout_around_the_await_cancels_cleanly() -> None:
    handoff: Handoff[str] = Handoff(Wakeups(asyncio.get_running_loop()))

    async def read() -> str:
        return await handoff

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(read(), 0.01)
    assert handoff.cancelled()


def test_an_interrupt_in_one_reader_leaves_the_others_to_wake_on_the_next_pass() -> None:
    loop = asyncio.new_event_loop()
    try:
        wakeups = Wakeups(loop)
        first: Handoff[str] = Handoff(wakeups)
        second: Handoff[str] = Handoff(wakeups)

        async def interrupted() -> None:
            await first
            raise KeyboardInterrupt

        async def reader() -> str:
            return await second

        bad = loop.create_task(interrupted())
        good = loop.create_task(reader())
        loop.run_until_complete(asyncio.sleep(0))  # both wait now
        first.give("a")
        second.give("b")
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(good)
        loop.run_until_complete(asyncio.sleep(0))
        assert good.done()
        assert good.result() == "b"
        with pytest.raises(KeyboardInterrupt):
            bad.result()
    finally:
        loop.close()
