"""When a task signal is worth its ``TaskResult``: :func:`headrace.tasks.signals.is_heard`.

A backend builds the result a signal carries only when sending it could have an effect. These
tests pin the rule both ways: nothing is built for a signal nobody would notice, and anyone who
does listen (a receiver of their own, or a log handler that would emit Django's record) gets
exactly what Django documents.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from django.tasks import TaskResultStatus
from django.tasks.signals import task_enqueued, task_finished, task_started
from django.utils.log import RequireDebugFalse, RequireDebugTrue

from headrace.tasks.backends import base as backends_base
from headrace.tasks.backends.memory import MemoryTaskBackend
from headrace.tasks.signals import is_heard, record_dropped, task_retried
from headrace.tasks.worker import TaskWorker
from tests.task_backends import memory
from tests.taskapp import tasks

WAIT = 5


class Collect(logging.Handler):
    def __init__(self, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def strip(*loggers: logging.Logger) -> None:
    """Remove every handler, pytest's capture handlers included (pytest attaches them to each
    non-propagating logger when a test phase starts)."""
    for x in loggers:
        x.handlers[:] = []


@pytest.fixture(autouse=True)
def _without_the_dashboards_counters() -> Iterator[None]:
    """``headrace.dashboard`` (installed in the test settings) counts the in-memory backend's
    jobs by listening to the task signals; these tests are about a project without it."""
    from headrace.dashboard.memory import connect_signals

    signals = {"enqueued": task_enqueued, "started": task_started, "finished": task_finished}
    signals["retried"] = task_retried
    for name, signal in signals.items():
        signal.disconnect(dispatch_uid=f"headrace.dashboard.{name}")
    yield
    connect_signals()


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    """A private logger tree: ``test.headrace.tasks`` under ``test.headrace``, which does not
    propagate to the root, where pytest's own handler would hear everything."""
    parent = logging.getLogger("test.headrace")
    child = logging.getLogger("test.headrace.tasks")
    saved = [(x, x.level, list(x.handlers), list(x.filters), x.propagate) for x in (parent, child)]
    parent.propagate = False
    child.setLevel(logging.NOTSET)
    parent.setLevel(logging.DEBUG)
    strip(parent, child)
    yield child
    for x, level, handlers, filters, propagate in saved:
        x.setLevel(level)
        x.handlers[:] = handlers
        x.filters[:] = filters
        x.propagate = propagate


@pytest.fixture
def django_log_unheard() -> Iterator[logging.Logger]:
    """Django's ``django.tasks`` logger with nothing that would emit an INFO record (as with
    Django's default LOGGING and DEBUG off, where its console handler wants DEBUG)."""
    django_logger = logging.getLogger("django.tasks")
    saved = (django_logger.level, list(django_logger.handlers), django_logger.propagate)
    django_logger.propagate = False
    django_logger.setLevel(logging.INFO)
    strip(django_logger)
    yield django_logger
    django_logger.setLevel(saved[0])
    django_logger.handlers[:] = saved[1]
    django_logger.propagate = saved[2]


# -- record_dropped: the logging rules ---------------------------------------------------------


def test_a_level_the_logger_ignores_is_dropped(logger: logging.Logger) -> None:
    strip(logger, logging.getLogger("test.headrace"))
    logger.parent.addHandler(Collect())  # type: ignore[union-attr]
    logger.setLevel(logging.WARNING)
    assert record_dropped(logger, logging.INFO)
    assert not record_dropped(logger, logging.WARNING)


def test_a_handler_below_its_level_drops_and_at_its_level_emits(logger: logging.Logger) -> None:
    strip(logger, logging.getLogger("test.headrace"))
    logger.parent.addHandler(Collect(logging.ERROR))  # type: ignore[union-attr]
    assert record_dropped(logger, logging.INFO)
    assert not record_dropped(logger, logging.ERROR)


def test_djangos_debug_filters_are_judged_by_the_debug_setting(
    logger: logging.Logger, settings: Any
) -> None:
    strip(logger, logging.getLogger("test.headrace"))
    console = Collect()
    console.addFilter(RequireDebugTrue())
    logger.parent.addHandler(console)  # type: ignore[union-attr]
    settings.DEBUG = False
    assert record_dropped(logger, logging.INFO)
    settings.DEBUG = True
    assert not record_dropped(logger, logging.INFO)
    console.filters[:] = [RequireDebugFalse()]
    assert record_dropped(logger, logging.INFO)


def test_an_unknown_filter_or_handle_counts_as_emitting(logger: logging.Logger) -> None:
    strip(logger, logging.getLogger("test.headrace"))
    handler = Collect()
    handler.addFilter(lambda record: False)  # may have side effects: it must be called
    handler.addFilter(RequireDebugTrue())
    logger.addHandler(handler)
    assert not record_dropped(logger, logging.INFO)
    handler.filters[:] = [RequireDebugTrue()]
    assert record_dropped(logger, logging.INFO)

    class Counting(Collect):
        def handle(self, record: logging.LogRecord) -> bool:
            return super().handle(record)

    counting = Counting()
    counting.addFilter(RequireDebugTrue())
    logger.handlers[:] = [counting]
    assert not record_dropped(logger, logging.INFO)


def test_a_filter_on_the_logger_itself_counts_as_emitting(logger: logging.Logger) -> None:
    strip(logger, logging.getLogger("test.headrace"))
    logger.addFilter(lambda record: False)
    assert not record_dropped(logger, logging.INFO)


def test_with_no_handler_at_all_the_last_resort_decides(logger: logging.Logger) -> None:
    strip(logger, logging.getLogger("test.headrace"))
    assert logging.lastResort is not None
    assert record_dropped(logger, logging.INFO)  # lastResort wants WARNING
    assert not record_dropped(logger, logging.WARNING)


def test_a_logger_that_does_not_propagate_stops_the_walk(logger: logging.Logger) -> None:
    strip(logger, logging.getLogger("test.headrace"))
    logger.parent.addHandler(Collect())  # type: ignore[union-attr]
    assert not record_dropped(logger, logging.INFO)
    logger.propagate = False
    logger.addHandler(Collect(logging.ERROR))
    assert record_dropped(logger, logging.INFO)
    logger.propagate = True


# -- is_heard: receivers ---------------------------------------------------------------------------


def test_djangos_own_receiver_is_heard_only_when_its_record_would_be_emitted(
    django_log_unheard: logging.Logger,
) -> None:
    strip(django_log_unheard)
    assert not is_heard(task_started)
    assert not is_heard(task_finished, logging.INFO)
    assert not is_heard(task_enqueued, logging.DEBUG)
    assert is_heard(task_finished, logging.ERROR)  # the last resort prints errors
    handler = Collect()
    django_log_unheard.addHandler(handler)
    assert is_heard(task_started)


def test_any_receiver_of_ones_own_is_heard(django_log_unheard: logging.Logger) -> None:
    strip(django_log_unheard)

    def receive(**kwargs: Any) -> None:
        pass

    assert not is_heard(task_retried)
    for signal in (task_started, task_retried):
        signal.connect(receive)
        try:
            assert is_heard(signal)
        finally:
            signal.disconnect(receive)
    assert not is_heard(task_started)


# -- what a backend does with it ------------------------------------------------------------------


@pytest.fixture
def backend(settings: Any, clock: Any) -> MemoryTaskBackend:
    settings.TASKS = memory(clock)
    tasks.CALLS.clear()
    from django.tasks import task_backends

    found = task_backends["default"]
    assert isinstance(found, MemoryTaskBackend)
    return found


async def run_one(backend: MemoryTaskBackend, task: Any, *args: Any) -> Any:
    worker = TaskWorker(backend)
    run = asyncio.ensure_future(worker.run())
    try:
        result = task.enqueue(*args)
        await asyncio.wait_for(worker.wait_idle(), WAIT)
    finally:
        worker.stop()
        await asyncio.wait_for(run, WAIT)
    return result


async def test_a_job_nobody_watches_builds_only_the_result_enqueue_returns(
    backend: MemoryTaskBackend,
    django_log_unheard: logging.Logger,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    strip(django_log_unheard)
    built: list[str] = []
    build = backends_base.build_result

    def counting(job: Any, task: Any, alias: str) -> Any:
        built.append(job.state.name)
        return build(job, task, alias)

    monkeypatch.setattr(backends_base, "build_result", counting)  # every TaskResult made
    result = await run_one(backend, tasks.add, 1, 2)
    assert built == ["READY"]
    assert backend.get_result(result.id).return_value == 3


async def test_djangos_log_records_still_appear_when_a_handler_wants_them(
    backend: MemoryTaskBackend, django_log_unheard: logging.Logger
) -> None:
    strip(django_log_unheard)
    handler = Collect()
    django_log_unheard.addHandler(handler)
    django_log_unheard.setLevel(logging.DEBUG)
    result = await run_one(backend, tasks.add, 1, 2)
    messages = [r.getMessage() for r in handler.records]
    assert messages == [
        f"Task id={result.id} path=tests.taskapp.tasks.add enqueued backend=default",
        f"Task id={result.id} path=tests.taskapp.tasks.add state=RUNNING",
        f"Task id={result.id} path=tests.taskapp.tasks.add state=SUCCESSFUL",
    ]


async def test_a_failure_is_logged_at_error_with_its_exception(
    backend: MemoryTaskBackend, django_log_unheard: logging.Logger
) -> None:
    strip(django_log_unheard)
    handler = Collect(logging.ERROR)
    django_log_unheard.addHandler(handler)
    result = await run_one(backend, tasks.boom, "bad")
    [record] = handler.records
    assert record.getMessage().endswith(
        f"id={result.id} path=tests.taskapp.tasks.boom state=FAILED"
    )
    assert record.exc_info is not None
    assert record.exc_info[0] is ValueError


async def test_a_receiver_of_ones_own_gets_a_complete_result(
    backend: MemoryTaskBackend, django_log_unheard: logging.Logger
) -> None:
    strip(django_log_unheard)
    seen: list[Any] = []

    def receive(sender: Any, task_result: Any, **kwargs: Any) -> None:
        seen.append((task_result.status, task_result.args, task_result.attempts))
        if task_result.is_finished:
            seen.append(task_result.return_value)

    task_started.connect(receive)
    task_finished.connect(receive)
    try:
        await run_one(backend, tasks.add, 2, 5)
    finally:
        task_started.disconnect(receive)
        task_finished.disconnect(receive)
    assert seen == [
        (TaskResultStatus.RUNNING, [2, 5], 1),
        (TaskResultStatus.SUCCESSFUL, [2, 5], 1),
        7,
    ]
