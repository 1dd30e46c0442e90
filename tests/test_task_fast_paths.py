"""The in-process backend's short cuts (issue 13, performance), each with what it must keep.

- A job that never suspends runs inside the worker's claim turn (an eager start) and holds no
  slot, but the worker still lets the loop's other work in between batches.
- The final group message is not sent to an in-memory group with no member; a member still
  gets it.
- ``Job`` values are built by a generated ``__init__``: it must behave as the dataclass's.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
from django.tasks import task_backends

from headrace.layers import InMemoryChannelLayer, ManualClock
from headrace.layers.groups import Membership
from headrace.tasks import progress_group
from headrace.tasks.backends.memory import MemoryTaskBackend
from headrace.tasks.jobs import Job, JobError
from headrace.tasks.states import JobState
from headrace.tasks.worker import TaskWorker
from tests.task_backends import memory
from tests.taskapp import tasks

WAIT = 5


@pytest.fixture
def backend(settings: Any, clock: ManualClock) -> MemoryTaskBackend:
    settings.TASKS = memory(clock)
    tasks.CALLS.clear()
    found = task_backends["default"]
    assert isinstance(found, MemoryTaskBackend)
    return found


@pytest.fixture
async def layer() -> AsyncIterator[InMemoryChannelLayer]:
    made = InMemoryChannelLayer()
    yield made
    await made.flush()
    await made.close()


async def test_jobs_that_never_suspend_hold_no_slot_and_share_the_loop(
    backend: MemoryTaskBackend, layer: InMemoryChannelLayer
) -> None:
    count = 250
    for _ in range(count):
        tasks.where_async.enqueue()
    worker = TaskWorker(backend, layer=layer)
    run = asyncio.ensure_future(worker.run())
    seen: list[tuple[int, int]] = []  # (running, succeeded) each time this coroutine runs

    async def probe() -> None:
        while worker.statistics().succeeded < count:
            statistics = worker.statistics()
            seen.append((statistics.running, statistics.succeeded))
            await asyncio.sleep(0)

    try:
        await asyncio.wait_for(probe(), WAIT)
    finally:
        worker.stop()
        await asyncio.wait_for(run, WAIT)
    assert len(tasks.CALLS) == count
    assert {running for running, _ in seen} == {0}  # done before a slot was taken
    assert any(0 < succeeded < count for _, succeeded in seen)  # batches, not one turn


async def test_a_job_that_suspends_still_takes_a_slot_until_it_ends(
    backend: MemoryTaskBackend, layer: InMemoryChannelLayer
) -> None:
    tasks.ASYNC_GATES["held"] = asyncio.Event()
    worker = TaskWorker(backend, layer=layer)
    run = asyncio.ensure_future(worker.run())
    try:
        result = tasks.held_async.enqueue("held")
        await asyncio.wait_for(worker.wait_running(1), WAIT)
        assert worker.statistics().running == 1
        tasks.ASYNC_GATES["held"].set()
        await asyncio.wait_for(result.wait(), WAIT)
        await asyncio.wait_for(worker.wait_idle(), WAIT)
        assert worker.statistics().running == 0
        assert result.return_value == "done"
    finally:
        worker.stop()
        await asyncio.wait_for(run, WAIT)


async def run_all(backend: MemoryTaskBackend, layer: InMemoryChannelLayer) -> None:
    worker = TaskWorker(backend, layer=layer)
    run = asyncio.ensure_future(worker.run())
    try:
        await asyncio.wait_for(worker.wait_idle(), WAIT)
    finally:
        worker.stop()
        await asyncio.wait_for(run, WAIT)


async def test_no_final_message_goes_to_a_group_with_no_member(
    backend: MemoryTaskBackend, layer: InMemoryChannelLayer
) -> None:
    tasks.add.enqueue(1, 2)
    await run_all(backend, layer)
    assert layer.statistics().group_sends == 0


async def test_a_member_of_the_group_gets_the_final_message(
    backend: MemoryTaskBackend, layer: InMemoryChannelLayer
) -> None:
    result = tasks.add.enqueue(1, 2)
    channel = await layer.new_channel()
    await layer.group_add(progress_group(result.id), channel)
    await run_all(backend, layer)
    message = await asyncio.wait_for(layer.receive(channel), WAIT)
    assert message == {"type": "task.finished", "id": result.id, "return_value": 3}


def test_membership_says_whether_a_group_has_members() -> None:
    groups = Membership()
    assert not groups.has_members("g")
    groups.add("g", "c", expires_at=10.0)
    assert groups.has_members("g")
    groups.discard("g", "c")
    assert not groups.has_members("g")


async def test_the_layer_says_whether_a_group_has_members(layer: InMemoryChannelLayer) -> None:
    assert not layer.has_group_members("g")
    await layer.group_add("g", "c")
    assert layer.has_group_members("g")
    await layer.group_discard("g", "c")
    assert not layer.has_group_members("g")


# -- Job values --------------------------------------------------------------------------------

REQUIRED: dict[str, Any] = {
    "id": "j1",
    "task_path": "tests.taskapp.tasks.add",
    "args": [1],
    "kwargs": {"b": 2},
    "queue": "default",
    "priority": 0,
    "backend": "default",
    "enqueued_at": 1.0,
    "due_at": 2.0,
}


def test_a_job_takes_its_defaults_as_the_dataclass_declares_them() -> None:
    job = Job(**REQUIRED)
    for field in dataclasses.fields(Job):
        if field.name in REQUIRED:
            assert getattr(job, field.name) == REQUIRED[field.name]
        elif field.default is not dataclasses.MISSING:
            assert getattr(job, field.name) == field.default
    assert job.state is JobState.READY
    assert job.options == {}
    assert Job(**REQUIRED).options is not job.options  # a fresh dict each time


def test_a_job_needs_its_required_fields_by_keyword() -> None:
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument: 'due_at'"):
        Job(**{k: v for k, v in REQUIRED.items() if k != "due_at"})
    with pytest.raises(TypeError, match="positional"):
        Job("j1")  # type: ignore[misc]
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        Job(**REQUIRED, colour="red")


def test_a_job_is_frozen_and_copies_keep_every_other_field() -> None:
    job = Job(**REQUIRED, retries=2, options={"timeout": 5})
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.retries = 3  # type: ignore[misc]
    moved = job.evolve(state=JobState.RUNNING, started_at=3.0)
    replaced = dataclasses.replace(job, state=JobState.RUNNING, started_at=3.0)
    assert moved == replaced
    assert (moved.state, moved.started_at, moved.retries, moved.options) == (
        JobState.RUNNING,
        3.0,
        2,
        {"timeout": 5},
    )
    assert job.state is JobState.READY
    with pytest.raises(TypeError, match="Job has no field 'colour'"):
        job.evolve(colour="red")


def test_a_job_survives_copy_and_deepcopy() -> None:
    job = Job(**REQUIRED, retries=2, errors=(JobError(exception_class_path="a.B", traceback="t"),))
    for twin in (copy.copy(job), copy.deepcopy(job)):
        assert twin == job
        assert type(twin) is Job
        with pytest.raises(dataclasses.FrozenInstanceError):
            twin.retries = 3  # type: ignore[misc]
