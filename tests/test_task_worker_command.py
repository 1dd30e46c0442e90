"""``runworker --tasks``, the embedded task workers of ``runserver``, and the start-up checks."""

from __future__ import annotations

import asyncio
import signal
import threading
from typing import Any

import pytest
from django.core.checks import run_checks
from django.core.management import CommandError, call_command

from headrace.layers import ManualClock
from headrace.management.commands.runserver import Command as Runserver
from headrace.tasks.checks import check_task_backends
from headrace.tasks.worker import (
    TaskWorker,
    WorkerSet,
    embedded_task_backends,
    run_embedded_task_workers,
    task_worker_for_command,
)
from headrace.worker import Worker
from tests.progrock.processes import start_command_reading, stop
from tests.task_backends import memory
from tests.taskapp import tasks

WAIT = 5


@pytest.mark.slow
def test_runworker_tasks_alone_runs_and_stops_cleanly() -> None:
    process, reading = start_command_reading("runworker", "--tasks", "emails")
    assert "task worker reading queues emails of TASKS['default']" in reading
    code, rest = stop(process, signal.SIGTERM)
    assert code == 0, rest
    assert "task worker stopped" in rest


@pytest.mark.slow
def test_runworker_runs_channels_and_tasks_together() -> None:
    process, reading = start_command_reading("runworker", "prog-rocker", "--tasks")
    code, rest = stop(process, signal.SIGINT)
    assert code == 0, rest
    assert "task worker stopped" in reading + rest
    assert "worker stopped (" in rest


def test_runworker_tasks_refuses_an_unknown_queue() -> None:
    with pytest.raises(CommandError, match="no queue 'nowhere'"):
        call_command("runworker", "--tasks", "nowhere")


def test_runworker_tasks_refuses_a_backend_that_is_not_headraces(settings: Any) -> None:
    settings.TASKS = {"default": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"}}
    with pytest.raises(CommandError, match="a headrace worker runs headrace backends"):
        call_command("runworker", "--tasks")


def test_runworker_tasks_refuses_an_unknown_backend_alias() -> None:
    with pytest.raises(CommandError, match="no task backend 'elsewhere'"):
        call_command("runworker", "--tasks", "--task-backend", "elsewhere")


def test_the_command_builds_a_bounded_task_worker() -> None:
    worker = task_worker_for_command([], concurrency=3, shutdown_timeout=2.0)
    assert worker.queues == ["default", "emails"]
    assert worker.concurrency == 3
    assert worker.sync_threads <= 3
    assert worker.shutdown_timeout == 2.0


async def test_a_worker_set_stops_every_worker(settings: Any) -> None:
    settings.TASKS = memory(ManualClock())
    from tests.progrock.asgi import application

    both = WorkerSet([Worker(application, ["noop"]), TaskWorker("default")])
    run = asyncio.ensure_future(both.run())
    for worker in both.workers:
        assert await asyncio.to_thread(worker.wait_started, WAIT)
    both.stop()
    await asyncio.wait_for(run, WAIT)
    assert all(w.state.name == "STOPPED" for w in both.workers)


# -- runserver's embedded task workers -------------------------------------------------------------


def test_runserver_runs_the_task_workers_beside_the_server() -> None:
    factories = Runserver().get_background_tasks()
    assert run_embedded_task_workers in factories


def test_embedded_task_workers_follow_the_switch_and_skip_eager_backends(settings: Any) -> None:
    assert [b.alias for b in embedded_task_backends()] == ["default"]
    settings.HEADRACE_EMBEDDED_WORKERS = False
    assert embedded_task_backends() == []
    settings.HEADRACE_EMBEDDED_WORKERS = True
    settings.TASKS = memory(ManualClock(), eager=True)
    assert embedded_task_backends() == []


async def test_embedded_task_workers_run_jobs_enqueued_from_a_request_thread(
    settings: Any,
) -> None:
    settings.TASKS = memory(ManualClock())
    tasks.CALLS.clear()
    serving = asyncio.ensure_future(run_embedded_task_workers())
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(tasks.add.enqueue(20, 22)))
    thread.start()
    await asyncio.to_thread(thread.join, WAIT)
    [result] = results
    await asyncio.wait_for(result.wait(), WAIT)
    assert result.return_value == 42
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await serving


# -- start-up checks -------------------------------------------------------------------------------


def _task_errors() -> list[str]:
    return [m.msg for m in run_checks() if m.id and m.id.startswith("headrace.E1")]


def test_a_valid_tasks_setting_passes_the_checks() -> None:
    assert _task_errors() == []


def test_bad_options_and_queues_fail_the_checks(settings: Any) -> None:
    settings.TASKS = {
        "default": {
            "BACKEND": "headrace.tasks.backends.memory.MemoryTaskBackend",
            "QUEUES": [],
            "OPTIONS": {"eagre": True, "progress_rate": 0},
        }
    }
    errors = _task_errors()
    assert any("unknown OPTIONS key 'eagre'" in e for e in errors), errors
    assert any("progress_rate must be a positive number, got 0" in e for e in errors), errors
    assert any("QUEUES" in e for e in errors), errors


def test_each_backend_problem_is_reported_once(settings: Any) -> None:
    settings.TASKS = {
        "default": {
            "BACKEND": "headrace.tasks.backends.memory.MemoryTaskBackend",
            "OPTIONS": {"eagre": True},
        }
    }
    errors = _task_errors()
    assert len([e for e in errors if "unknown OPTIONS key 'eagre'" in e]) == 1, errors


def test_an_unimportable_backend_fails_our_check(settings: Any) -> None:
    settings.TASKS = {"default": {"BACKEND": "headrace.tasks.backends.nowhere.Backend"}}
    [error] = check_task_backends()
    assert "TASKS['default'] cannot be used" in error.msg
    assert "headrace.tasks.backends.nowhere" in error.msg


def test_a_broken_tasks_entry_is_logged_and_skipped_by_runserver(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.TASKS = {
        "default": memory(ManualClock())["default"],
        "broken": {"BACKEND": "headrace.tasks.backends.nowhere.Backend"},
    }
    assert [b.alias for b in embedded_task_backends()] == ["default"]
    assert "TASKS['broken'] cannot be used" in caplog.text
