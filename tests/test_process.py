"""Long-running processes: the startup objects leave the collector's way; background tasks
end cleanly when the process stops."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Iterator

import pytest
from django.test import override_settings

from headrace.process import cancel_and_wait, event_loop_factory, freeze_startup_objects


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_startup_objects_are_frozen() -> None:
    survivor = {"made": "before the freeze"}
    assert freeze_startup_objects() is True
    assert gc.get_freeze_count() > 0
    # The collector no longer walks it: no generation it collects holds it.
    assert all(
        all(thing is not survivor for thing in gc.get_objects(generation=generation))
        for generation in range(3)
    )


@override_settings(HEADRACE_FREEZE_STARTUP_OBJECTS=False)
def test_the_setting_turns_it_off() -> None:
    assert freeze_startup_objects() is False
    assert gc.get_freeze_count() == 0


async def test_cancel_and_wait_ends_every_task_and_logs_a_failed_one(caplog) -> None:
    async def forever() -> None:
        await asyncio.Event().wait()

    async def broken() -> None:
        raise RuntimeError("the sweeper broke")

    waiting = asyncio.create_task(forever())
    failed = asyncio.create_task(broken())
    await asyncio.sleep(0)  # `broken` has raised; `forever` waits
    await cancel_and_wait([failed, waiting], logging.getLogger("headrace.test"))
    assert waiting.cancelled()
    assert failed.done()
    [record] = [r for r in caplog.records if r.name == "headrace.test"]
    assert "failed while the process stopped" in record.getMessage()
    assert record.exc_info is not None
    assert "the sweeper broke" in str(record.exc_info[1])


def test_the_event_loop_is_uvloop_when_installed_unless_asked_otherwise() -> None:
    import uvloop

    assert event_loop_factory() is uvloop.new_event_loop
    assert event_loop_factory("uvloop") is uvloop.new_event_loop
    assert event_loop_factory("asyncio") is None


def test_an_unknown_event_loop_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown event loop 'trio'; choose one of auto, "):
        event_loop_factory("trio")


def test_asking_for_uvloop_without_it_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now fails
    assert event_loop_factory("auto") is None
    with pytest.raises(ValueError, match="uvloop is not installed"):
        event_loop_factory("uvloop")
