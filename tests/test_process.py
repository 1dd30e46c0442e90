"""Preparing long-running processes: the startup objects leave the collector's way."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from django.test import override_settings

from headrace.process import freeze_startup_objects


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
