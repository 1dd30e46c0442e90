"""The two store methods a task backend provides to run schedules (``fire_slot`` and
``last_fired_slot``), parametrized over ``tests/task_backends.py`` like the conformance suite:
each backend added there must fire each slot once, atomically."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from django.core.management import call_command
from django.tasks import task_backends

from headrace.layers import ManualClock
from headrace.tasks import JobState
from headrace.tasks.backends.base import HeadraceTaskBackend
from headrace.tasks.beat import ScheduleStore
from headrace.tasks.jobs import Job
from headrace.tasks.states import Move
from tests.task_backends import TASK_BACKENDS

WAIT = 5
SLOT = 1_800_000_000.0


@pytest.fixture(params=sorted(TASK_BACKENDS))
def store(request: pytest.FixtureRequest, settings: Any) -> Iterator[Any]:
    factory = TASK_BACKENDS[request.param]
    for name in getattr(factory, "fixtures", ()):  # e.g. a database server and its tables
        request.getfixturevalue(name)
    settings.TASKS = factory(ManualClock(start=SLOT))
    backend = task_backends["default"]
    assert isinstance(backend, HeadraceTaskBackend)
    assert isinstance(backend, ScheduleStore)
    return backend


def job(slot: float, entry: str = "nightly") -> Job:
    return Job(
        id=f"beat.{entry}.{int(slot)}",
        task_path="tests.taskapp.periodic.tick",
        args=[],
        kwargs={},
        queue="default",
        priority=0,
        backend="default",
        enqueued_at=slot,
        due_at=slot,
    )


def test_a_slot_fires_once_and_becomes_the_last_fired(store: Any) -> None:
    assert store.last_fired_slot("nightly") is None
    stored, added = store.fire_slot(job(SLOT), entry="nightly", slot=SLOT)
    assert added
    assert stored.id == f"beat.nightly.{int(SLOT)}"
    assert store.last_fired_slot("nightly") == SLOT
    assert store.get_job(stored.id).state is JobState.READY
    again, added_again = store.fire_slot(job(SLOT), entry="nightly", slot=SLOT)
    assert not added_again
    assert again.id == stored.id
    assert store.ready_count(["default"]) == 1


def test_an_older_slot_never_fires_after_a_newer_one(store: Any) -> None:
    store.fire_slot(job(SLOT), entry="nightly", slot=SLOT)
    _, added = store.fire_slot(job(SLOT - 60), entry="nightly", slot=SLOT - 60)
    assert not added
    assert store.last_fired_slot("nightly") == SLOT
    _, added = store.fire_slot(job(SLOT + 60), entry="nightly", slot=SLOT + 60)
    assert added
    assert store.last_fired_slot("nightly") == SLOT + 60


def test_entries_are_independent(store: Any) -> None:
    store.fire_slot(job(SLOT, "a"), entry="a", slot=SLOT)
    _, added = store.fire_slot(job(SLOT, "b"), entry="b", slot=SLOT)
    assert added
    assert store.last_fired_slot("c") is None


def test_racing_schedulers_fire_a_slot_once(store: Any) -> None:
    barrier = threading.Barrier(8)
    outcomes: list[bool] = []

    def race() -> None:
        barrier.wait(WAIT)
        outcomes.append(store.fire_slot(job(SLOT), entry="nightly", slot=SLOT)[1])

    threads = [threading.Thread(target=race) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert sorted(outcomes) == [False] * 7 + [True]
    assert store.ready_count(["default"]) == 1


def test_the_last_fired_slot_outlives_the_job_s_result(store: Any) -> None:
    """A fired job finishes and its result expires; the slot must still not fire again."""
    stored, _ = store.fire_slot(job(SLOT), entry="nightly", slot=SLOT)
    claimed = store.claim_nowait(["default"], "w")
    assert claimed is not None
    assert claimed.id == stored.id
    store.move_job(stored.id, Move.SUCCEED, return_value=None)
    store.clock.advance(2 * 86400)  # past the default result_ttl
    assert store.get_job(stored.id) is None
    _, added = store.fire_slot(job(SLOT), entry="nightly", slot=SLOT)
    assert not added


def test_tasks_schedule_shows_the_last_slot_the_store_fired(
    store: Any, settings: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """``manage.py tasks schedule`` reads the last fired slot from the backend, so it shows
    what any scheduler process fired (tests/test_task_beat_processes.py runs it as one)."""
    settings.TIME_ZONE = "UTC"
    settings.HEADRACE_TASKS_SCHEDULE = {
        "nightly": {"task": "tests.taskapp.periodic.tick", "schedule": "0 2 * * *"}
    }
    call_command("tasks", "schedule")
    assert "last fired: never" in capsys.readouterr().out
    store.fire_slot(job(SLOT), entry="nightly", slot=SLOT)
    call_command("tasks", "schedule")
    shown = capsys.readouterr().out
    assert f"last fired: {datetime.fromtimestamp(SLOT, UTC).isoformat()}\n" in shown
