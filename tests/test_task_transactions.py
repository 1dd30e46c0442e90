"""Tasks and database transactions (``enqueue_on_commit``, the DEBUG warning), and eager mode."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import transaction
from django.tasks import TaskResultStatus, task_backends
from django.tasks.exceptions import TaskResultDoesNotExist
from django.tasks.signals import task_started

from headrace.layers import ManualClock
from headrace.tasks import JobState
from tests.task_backends import memory
from tests.taskapp import tasks


@pytest.fixture
def backend(settings: Any) -> Any:
    settings.TASKS = memory(ManualClock())
    tasks.CALLS.clear()
    return task_backends["default"]


@pytest.fixture
def eager(settings: Any) -> Any:
    settings.TASKS = memory(ManualClock(), eager=True)
    tasks.CALLS.clear()
    return task_backends["default"]


@pytest.mark.django_db(transaction=True)
def test_enqueue_on_commit_returns_the_id_at_once_and_enqueues_at_commit(backend: Any) -> None:
    with transaction.atomic():
        User.objects.create(username="ada")
        job_id = tasks.add.enqueue_on_commit(1, 2)
        assert isinstance(job_id, str)
        with pytest.raises(TaskResultDoesNotExist):
            tasks.add.get_result(job_id)
    result = tasks.add.get_result(job_id)
    assert result.status == TaskResultStatus.READY
    assert result.args == [1, 2]


@pytest.mark.django_db(transaction=True)
def test_enqueue_on_commit_never_enqueues_on_rollback(backend: Any) -> None:
    ids: list[str] = []

    def enqueue_then_fail() -> None:
        with transaction.atomic():
            ids.append(tasks.add.enqueue_on_commit(1, 2))
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        enqueue_then_fail()
    [job_id] = ids
    with pytest.raises(TaskResultDoesNotExist):
        tasks.add.get_result(job_id)
    assert backend.statistics().enqueued == 0


@pytest.mark.django_db(transaction=True)
def test_enqueue_on_commit_outside_a_transaction_enqueues_now(backend: Any) -> None:
    job_id = tasks.add.enqueue_on_commit(1, 2)
    assert tasks.add.get_result(job_id).status == TaskResultStatus.READY


@pytest.mark.django_db(transaction=True)
def test_enqueue_on_commit_checks_the_arguments_at_once(backend: Any) -> None:
    with pytest.raises(TypeError, match="argument 'b'"), transaction.atomic():
        tasks.add.enqueue_on_commit(1, {1})


@pytest.mark.django_db(transaction=True)
def test_enqueue_inside_atomic_warns_in_debug(
    backend: Any, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="headrace.tasks")
    settings.DEBUG = False
    with transaction.atomic():
        tasks.add.enqueue(1, 2)
    assert not caplog.records
    settings.DEBUG = True
    tasks.add.enqueue(1, 2)  # outside: no warning
    assert not caplog.records
    with transaction.atomic():
        tasks.add.enqueue(1, 2)
    [record] = caplog.records
    assert "inside a database transaction" in record.getMessage()
    assert "add.enqueue_on_commit(...)" in record.getMessage()


# -- eager mode ------------------------------------------------------------------------------------


def test_eager_mode_runs_the_job_inside_enqueue(eager: Any) -> None:
    result = tasks.add.enqueue(2, 2)
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 4
    assert tasks.CALLS == [("add", (2, 2))]


def test_eager_mode_retries_at_once(eager: Any) -> None:
    result = tasks.flaky.enqueue(3)
    assert result.return_value == 3
    assert result.attempts == 3
    assert len(result.errors) == 2


def test_eager_mode_fails_after_the_last_retry(eager: Any) -> None:
    result = tasks.flaky.enqueue(100)
    assert result.status == TaskResultStatus.FAILED
    assert result.attempts == 5


def test_eager_mode_runs_async_tasks(eager: Any) -> None:
    result = tasks.where_async.enqueue()
    assert result.return_value == 1


async def test_eager_aenqueue_runs_the_job(eager: Any) -> None:
    result = await tasks.add.aenqueue(3, 4)
    assert result.return_value == 7
    result = await tasks.where_async.aenqueue()
    assert result.return_value == 1


async def test_an_eager_async_job_is_interrupted_by_a_cancel_from_another_thread(
    eager: Any,
) -> None:
    tasks.ASYNC_GATES["eager-cancel"] = asyncio.Event()  # never set: only a cancel ends it
    backend = task_backends["default"]
    started: list[str] = []
    running = threading.Event()

    def on_started(sender: Any, task_result: Any, **kwargs: Any) -> None:
        started.append(task_result.id)
        running.set()

    def cancel_once_running() -> None:
        assert running.wait(10)
        backend.cancel(started[0])

    task_started.connect(on_started)
    canceller = threading.Thread(target=cancel_once_running)
    canceller.start()
    try:
        result = await asyncio.wait_for(tasks.slow_async.aenqueue("eager-cancel"), 10)
    finally:
        task_started.disconnect(on_started)
        canceller.join()
    assert result.state is JobState.CANCELLED


def test_a_return_value_that_is_not_json_fails_the_job(eager: Any) -> None:
    result = tasks.returns_a_set.enqueue()
    assert result.state is JobState.FAILED
    assert result.errors[-1].exception_class is TypeError
    assert "its return value" in result.errors[-1].traceback


@pytest.mark.django_db(transaction=True)
def test_eager_enqueue_on_commit_runs_at_commit(eager: Any) -> None:
    with transaction.atomic():
        job_id = tasks.add.enqueue_on_commit(5, 5)
        assert tasks.CALLS == []
    assert tasks.CALLS == [("add", (5, 5))]
    assert tasks.add.get_result(job_id).return_value == 10
