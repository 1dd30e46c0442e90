"""The contract every headrace task backend passes, parametrized over ``tests/task_backends.py``.

Time is a :class:`~headrace.layers.ManualClock` wherever it matters (delays, retries,
timeouts, expiry, result lifetime, the progress throttle), and the worker's jitter is the
identity, so backoff delays are exact. Tests wait on conditions (``worker.wait_idle()``,
``result.wait()``, events), never on sleeps.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.tasks import TaskResultStatus, task_backends
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.tasks.signals import task_enqueued, task_finished, task_started
from django.utils import timezone

from headrace.layers import ManualClock, get_channel_layer
from headrace.tasks import (
    JobState,
    TaskCancelled,
    TaskExpired,
    TaskTimeout,
    UnknownTask,
    enqueued_by,
    finished_message,
    job_owner,
    job_progress,
    progress_group,
)
from headrace.tasks.backends.base import HeadraceTaskBackend
from headrace.tasks.jobs import Job
from headrace.tasks.signals import task_retried
from headrace.tasks.worker import TaskWorker
from tests.task_backends import TASK_BACKENDS
from tests.taskapp import tasks

WAIT = 5

MakeWorker = Callable[..., Awaitable[TaskWorker]]


@pytest.fixture(params=sorted(TASK_BACKENDS))
def backend(
    request: pytest.FixtureRequest, settings: Any, clock: ManualClock
) -> Iterator[HeadraceTaskBackend]:
    factory = TASK_BACKENDS[request.param]
    for name in getattr(factory, "fixtures", ()):  # e.g. a database server and its tables
        request.getfixturevalue(name)
    settings.TASKS = factory(clock)
    tasks.CALLS.clear()
    tasks.GATES.clear()
    tasks.ASYNC_GATES.clear()
    found = task_backends["default"]
    assert isinstance(found, HeadraceTaskBackend)
    yield found
    for gate in tasks.GATES.values():
        gate.set()


@pytest.fixture
async def make_worker(backend: HeadraceTaskBackend) -> AsyncIterator[MakeWorker]:
    started: list[tuple[TaskWorker, asyncio.Future[None]]] = []

    async def make(**options: Any) -> TaskWorker:
        options.setdefault("jitter", lambda cap: cap)
        worker = TaskWorker(backend, **options)
        started.append((worker, asyncio.ensure_future(worker.run())))
        return worker

    yield make
    for gate in tasks.GATES.values():
        gate.set()
    for worker, run in started:
        worker.stop(now=True)
        await asyncio.wait_for(run, WAIT)


@pytest.fixture
async def worker(make_worker: MakeWorker) -> TaskWorker:
    return await make_worker()


async def idle(worker: TaskWorker) -> None:
    await asyncio.wait_for(worker.wait_idle(), WAIT)


# -- Django's API ----------------------------------------------------------------------------------


def test_every_capability_flag_is_on(backend: HeadraceTaskBackend) -> None:
    assert backend.supports_defer
    assert backend.supports_async_task
    assert backend.supports_get_result
    assert backend.supports_priority


async def test_a_job_runs_and_its_result_is_kept(
    backend: HeadraceTaskBackend, worker: TaskWorker
) -> None:
    result = tasks.add.enqueue(2, 3)
    assert result.status == TaskResultStatus.READY
    assert result.enqueued_at is not None
    await idle(worker)
    fetched = tasks.add.get_result(result.id)
    assert fetched.status == TaskResultStatus.SUCCESSFUL
    assert fetched.return_value == 5
    assert fetched.attempts == 1
    assert fetched.worker_ids == [worker.worker_id]
    assert fetched.started_at is not None
    assert fetched.finished_at is not None
    assert fetched.args == [2, 3]
    result.refresh()
    assert result.return_value == 5
    assert result.is_finished


async def test_aenqueue_aget_result_and_arefresh(worker: TaskWorker) -> None:
    result = await tasks.add.aenqueue(1, b=1)
    await asyncio.wait_for(result.wait(), WAIT)
    assert result.return_value == 2
    fetched = await tasks.add.aget_result(result.id)
    assert fetched.return_value == 2
    assert fetched.kwargs == {"b": 1}


async def test_an_async_task_runs_on_the_worker_loop_and_a_sync_one_on_a_thread(
    worker: TaskWorker,
) -> None:
    loop = asyncio.get_running_loop()
    tasks.where_async.enqueue()
    tasks.where_sync.enqueue()
    await idle(worker)
    calls = dict(tasks.CALLS)
    assert calls["where_async"] == (threading.get_ident(), id(loop))
    assert calls["where_sync"] != threading.get_ident()


async def test_higher_priority_runs_first_then_first_in_first_out(
    backend: HeadraceTaskBackend, make_worker: MakeWorker
) -> None:
    tasks.record.enqueue("low-1")
    tasks.record.using(priority=10).enqueue("high")
    tasks.record.enqueue("low-2")
    tasks.record.using(priority=-5).enqueue("lowest")
    worker = await make_worker(concurrency=1)
    await idle(worker)
    assert [label for _, label in tasks.CALLS] == ["high", "low-1", "low-2", "lowest"]


async def test_run_after_and_countdown_delay_a_job(
    backend: HeadraceTaskBackend, worker: TaskWorker, clock: ManualClock
) -> None:
    later = timezone.now()  # the manual clock is far in the past of the real one
    later = later.fromtimestamp(clock.time() + 30, tz=later.tzinfo)
    first = tasks.record.using(run_after=later).enqueue("run_after")
    second = tasks.record.using(countdown=60).enqueue("countdown")
    await idle(worker)
    assert tasks.CALLS == []
    clock.advance(30)
    await idle(worker)
    assert tasks.CALLS == [("record", "run_after")]
    clock.advance(30)
    await idle(worker)
    assert tasks.CALLS == [("record", "run_after"), ("record", "countdown")]
    assert first.id != second.id


async def test_a_queue_is_served_only_by_workers_of_that_queue(
    backend: HeadraceTaskBackend, make_worker: MakeWorker
) -> None:
    tasks.in_emails.enqueue()
    default_only = await make_worker(queues=["default"])
    await idle(default_only)
    assert tasks.CALLS == []
    emails = await make_worker(queues=["emails"])
    await idle(emails)
    assert tasks.CALLS == [("in_emails", None)]


async def test_a_failure_is_recorded_with_its_class_and_traceback(worker: TaskWorker) -> None:
    result = tasks.boom.enqueue("bad input")
    await asyncio.wait_for(result.wait(), WAIT)
    assert result.status == TaskResultStatus.FAILED
    assert result.state is JobState.FAILED
    [error] = result.errors
    assert error.exception_class is ValueError
    assert "bad input" in error.traceback
    with pytest.raises(ValueError, match="failed"):
        result.return_value  # noqa: B018


async def test_signals_fire_as_django_documents(worker: TaskWorker) -> None:
    seen: list[tuple[str, Any]] = []

    def receiver(name: str) -> Callable[..., None]:
        def receive(sender: Any, task_result: Any, **kwargs: Any) -> None:
            seen.append((name, task_result.status))

        return receive

    receivers = {name: receiver(name) for name in ("enqueued", "started", "finished")}
    task_enqueued.connect(receivers["enqueued"])
    task_started.connect(receivers["started"])
    task_finished.connect(receivers["finished"])
    try:
        result = tasks.add.enqueue(1, 1)
        await asyncio.wait_for(result.wait(), WAIT)
    finally:
        task_enqueued.disconnect(receivers["enqueued"])
        task_started.disconnect(receivers["started"])
        task_finished.disconnect(receivers["finished"])
    assert seen == [
        ("enqueued", TaskResultStatus.READY),
        ("started", TaskResultStatus.RUNNING),
        ("finished", TaskResultStatus.SUCCESSFUL),
    ]


# -- retries ---------------------------------------------------------------------------------------


async def test_autoretry_backs_off_exponentially_and_signals_each_retry(
    worker: TaskWorker, clock: ManualClock
) -> None:
    delays: list[float] = []

    def on_retry(sender: Any, task_result: Any, exception: Any, delay: float, **kw: Any) -> None:
        assert task_result.status == TaskResultStatus.READY
        assert isinstance(exception, ConnectionError)
        delays.append(delay)

    task_retried.connect(on_retry)
    try:
        result = tasks.flaky.enqueue(4)  # fails three times, then succeeds
        for expected in (1.0, 2.0, 3.0):  # factor 1, doubled, capped at retry_backoff_max=3
            await idle(worker)
            assert delays[-1] == expected
            clock.advance(expected - 0.01)
            await idle(worker)
            assert len(tasks.CALLS) == len(delays)  # not yet
            clock.advance(0.01)
        await asyncio.wait_for(result.wait(), WAIT)
    finally:
        task_retried.disconnect(on_retry)
    assert result.return_value == 4
    assert result.attempts == 4
    assert len(result.errors) == 3


async def test_max_retries_ends_the_job_failed_with_every_error_kept(
    worker: TaskWorker, clock: ManualClock
) -> None:
    result = tasks.flaky.enqueue(100)
    for _ in range(4):
        await idle(worker)
        clock.advance(3)
    await asyncio.wait_for(result.wait(), WAIT)
    assert result.status == TaskResultStatus.FAILED
    assert result.attempts == 5  # the first run and max_retries=4 retries
    assert [e.exception_class for e in result.errors] == [ConnectionError] * 5


async def test_dont_autoretry_for_and_default_retry_delay(
    worker: TaskWorker, clock: ManualClock
) -> None:
    no_retry = tasks.picky.enqueue("key")
    await asyncio.wait_for(no_retry.wait(), WAIT)
    assert no_retry.attempts == 1
    retried = tasks.picky.enqueue("runtime")
    await idle(worker)
    clock.advance(6.9)
    await idle(worker)
    assert retried.attempts == 0 or tasks.picky.get_result(retried.id).attempts == 1
    clock.advance(0.1)
    await idle(worker)
    assert tasks.picky.get_result(retried.id).attempts == 2


async def test_context_retry_uses_its_countdown_or_the_default_delay(
    worker: TaskWorker, clock: ManualClock
) -> None:
    result = tasks.asks_to_retry.enqueue(5)
    await idle(worker)
    clock.advance(5)
    await idle(worker)
    clock.advance(5)
    await asyncio.wait_for(result.wait(), WAIT)
    assert result.return_value == 3
    assert [e.exception_class for e in result.errors] == [RuntimeError, RuntimeError]
    assert "attempt 1" in result.errors[0].traceback
    other = tasks.asks_to_retry.enqueue(None)
    await idle(worker)
    clock.advance(29)
    await idle(worker)
    assert tasks.asks_to_retry.get_result(other.id).attempts == 1
    clock.advance(1)
    await idle(worker)
    assert tasks.asks_to_retry.get_result(other.id).attempts == 2


async def test_retry_with_no_retries_left_fails_with_the_given_exception(
    worker: TaskWorker, clock: ManualClock
) -> None:
    result = tasks.asks_to_retry.using(max_retries=1).enqueue(0)
    await idle(worker)
    await asyncio.wait_for(result.wait(), WAIT)
    assert result.status == TaskResultStatus.FAILED
    assert result.attempts == 2
    assert result.errors[-1].exception_class is RuntimeError
    assert "attempt 2" in result.errors[-1].traceback


# -- cancellation, timeouts, expiry ----------------------------------------------------------------


async def test_a_cancelled_waiting_job_never_runs(
    backend: HeadraceTaskBackend, make_worker: MakeWorker
) -> None:
    result = tasks.record.enqueue("never")
    assert result.cancel() is True
    assert result.state is JobState.CANCELLED
    assert result.status == TaskResultStatus.FAILED
    assert result.errors[-1].exception_class is TaskCancelled
    worker = await make_worker()
    await idle(worker)
    assert tasks.CALLS == []


async def test_cancelling_a_running_async_job_cancels_it_and_it_is_never_retried(
    worker: TaskWorker,
) -> None:
    tasks.ASYNC_GATES["g"] = asyncio.Event()
    result = tasks.held_async.using(max_retries=5).enqueue("g")
    await started(1)
    assert await result.acancel() is True
    await asyncio.wait_for(result.wait(), WAIT)
    assert result.state is JobState.CANCELLED
    assert result.errors[-1].exception_class is TaskCancelled
    await idle(worker)
    assert result.attempts == 1
    assert worker.statistics().cancelled == 1


async def test_cancelling_a_running_sync_job_sets_cancel_requested(worker: TaskWorker) -> None:
    tasks.GATES["s"] = threading.Event()
    result = tasks.held_sync.enqueue("s")
    await started(1)
    assert result.cancel() is True
    assert result.cancel_requested
    tasks.GATES["s"].set()
    await asyncio.wait_for(result.wait(), WAIT)
    assert result.state is JobState.CANCELLED
    await idle(worker)
    assert result.attempts == 1  # autoretry_for=(Exception,) but cancelled: never retried


async def test_cancelling_a_finished_job_returns_false(worker: TaskWorker) -> None:
    result = tasks.add.enqueue(1, 2)
    await asyncio.wait_for(result.wait(), WAIT)
    assert result.cancel() is False
    assert result.state is JobState.SUCCESSFUL


async def test_an_async_job_past_its_timeout_is_cancelled(
    worker: TaskWorker, clock: ManualClock
) -> None:
    tasks.ASYNC_GATES["t"] = asyncio.Event()
    result = tasks.slow_async.enqueue("t")
    await started(1)
    clock.advance(5)
    await asyncio.wait_for(result.wait(), WAIT)
    assert result.status == TaskResultStatus.FAILED
    assert result.errors[-1].exception_class is TaskTimeout


async def started(count: int) -> None:
    """Until ``count`` test tasks have started running."""
    async with asyncio.timeout(WAIT):
        while len(tasks.CALLS) < count:
            await asyncio.sleep(0)


async def test_a_sync_job_past_its_timeout_only_sees_cancel_requested(
    worker: TaskWorker, clock: ManualClock
) -> None:
    tasks.GATES["st"] = threading.Event()
    result = tasks.slow_sync.enqueue("st")
    await started(1)  # the timeout's timer is armed before the thread starts
    clock.advance(5)
    tasks.GATES["st"].set()
    await asyncio.wait_for(result.wait(), WAIT)
    assert result.return_value == "cancel_requested=True"


async def idle_running(worker: TaskWorker) -> None:
    """Until the worker has a job in hand."""
    await asyncio.wait_for(worker.wait_running(), WAIT)


async def test_a_job_not_started_before_it_expires_fails_unrun(
    backend: HeadraceTaskBackend, make_worker: MakeWorker, clock: ManualClock
) -> None:
    result = tasks.expiring.enqueue()
    clock.advance(60)
    worker = await make_worker()
    await asyncio.wait_for(result.wait(), WAIT)
    assert result.status == TaskResultStatus.FAILED
    assert result.errors[-1].exception_class is TaskExpired
    await idle(worker)
    assert worker.statistics().claimed == 0


# -- keys, results, owners, progress ---------------------------------------------------------------


async def test_a_key_makes_enqueue_idempotent_while_the_job_is_live(worker: TaskWorker) -> None:
    tasks.ASYNC_GATES["k"] = asyncio.Event()
    first = tasks.report.enqueue("k")
    second = tasks.report.enqueue("k")
    assert second.id == first.id
    tasks.ASYNC_GATES["k"].set()
    await asyncio.wait_for(first.wait(), WAIT)
    third = tasks.report.enqueue("k")
    assert third.id != first.id


async def test_results_are_dropped_after_result_ttl(worker: TaskWorker, clock: ManualClock) -> None:
    result = tasks.short_lived.enqueue()
    await asyncio.wait_for(result.wait(), WAIT)
    clock.advance(99)
    assert tasks.short_lived.get_result(result.id).return_value == 7
    clock.advance(1)
    with pytest.raises(TaskResultDoesNotExist):
        tasks.short_lived.get_result(result.id)


async def test_default_result_ttl_is_a_day(worker: TaskWorker, clock: ManualClock) -> None:
    result = tasks.add.enqueue(1, 2)
    await asyncio.wait_for(result.wait(), WAIT)
    clock.advance(86400 - 1)
    tasks.add.get_result(result.id)
    clock.advance(1)
    with pytest.raises(TaskResultDoesNotExist):
        tasks.add.get_result(result.id)


async def test_the_owner_comes_from_enqueued_by(backend: HeadraceTaskBackend) -> None:
    user = User(pk=42, username="ada")
    with enqueued_by(user):
        owned = tasks.add.enqueue(1, 2)
    anonymous = tasks.add.enqueue(1, 2)
    assert job_owner(owned) == "42"
    assert job_owner(tasks.add.get_result(owned.id)) == "42"
    assert job_owner(anonymous) is None


async def test_progress_is_stored_and_sent_throttled_then_the_final_message(
    backend: HeadraceTaskBackend, make_worker: MakeWorker, clock: ManualClock
) -> None:
    layer = get_channel_layer()
    assert layer is not None
    tasks.ASYNC_GATES["p"] = asyncio.Event()
    result = tasks.progressing.enqueue("p")
    channel = await layer.new_channel()
    await layer.group_add(progress_group(result.id), channel)
    worker = await make_worker()
    first = await asyncio.wait_for(layer.receive(channel), WAIT)
    assert first == {
        "type": "task.progress",
        "id": result.id,
        "done": 1,
        "total": 3,
        "info": {"stage": "one"},
    }
    await idle_running(worker)
    result.refresh()
    assert job_progress(result) == {"done": 3, "total": 3, "info": {"stage": "three"}}
    assert finished_message(result) is None
    clock.advance(0.1)  # the interval at 10 a second: the latest held-back value goes out
    latest = await asyncio.wait_for(layer.receive(channel), WAIT)
    assert latest["done"] == 3
    tasks.ASYNC_GATES["p"].set()
    final = await asyncio.wait_for(layer.receive(channel), WAIT)
    assert final == {"type": "task.finished", "id": result.id, "return_value": "done"}
    await result.arefresh()
    assert finished_message(result) == final  # what a late subscriber is sent to catch up


async def test_a_failed_job_sends_task_failed(
    backend: HeadraceTaskBackend, make_worker: MakeWorker
) -> None:
    layer = get_channel_layer()
    assert layer is not None
    result = tasks.boom.enqueue("no")
    channel = await layer.new_channel()
    await layer.group_add(progress_group(result.id), channel)
    await make_worker()
    message = await asyncio.wait_for(layer.receive(channel), WAIT)
    assert message["type"] == "task.failed"
    await result.arefresh()
    assert finished_message(result) == message
    assert message["error"]["exception_class"] == "builtins.ValueError"
    assert "no" in message["error"]["traceback"]


async def test_a_cancelled_job_sends_task_cancelled(backend: HeadraceTaskBackend) -> None:
    layer = get_channel_layer()
    assert layer is not None
    result = tasks.record.enqueue("x")
    channel = await layer.new_channel()
    await layer.group_add(progress_group(result.id), channel)
    await result.acancel()
    message = await asyncio.wait_for(layer.receive(channel), WAIT)
    assert message["type"] == "task.cancelled"
    assert finished_message(result) == message


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        (User(pk=3, username="x"), "primary key"),
        (timezone.now(), "isoformat"),
        ({1, 2}, "list"),
        (timedelta(seconds=1), "total_seconds"),
    ],
)
def test_arguments_that_are_not_json_raise_type_error_naming_them(
    backend: HeadraceTaskBackend, value: Any, hint: str
) -> None:
    with pytest.raises(TypeError, match=hint) as caught:
        tasks.add.enqueue(1, value)
    assert "argument 'b'" in str(caught.value)
    with pytest.raises(TypeError, match="argument 'b'"):
        tasks.add.enqueue(a=1, b=[value])


async def test_a_return_value_that_is_not_json_fails_the_job(worker: TaskWorker) -> None:
    result = tasks.returns_a_set.enqueue()
    await asyncio.wait_for(result.wait(), WAIT)
    assert result.status == TaskResultStatus.FAILED
    assert result.errors[-1].exception_class is TypeError


async def test_a_stored_job_with_an_unknown_task_path_fails_clearly(
    backend: HeadraceTaskBackend, worker: TaskWorker, clock: ManualClock
) -> None:
    job = Job(
        id="stored-by-an-older-release",
        task_path="tests.taskapp.tasks.renamed_long_ago",
        args=[],
        kwargs={},
        queue="default",
        priority=0,
        backend="default",
        enqueued_at=clock.time(),
        due_at=clock.time(),
    )
    backend.put_job(job)
    await idle(worker)
    result = backend.get_result(job.id)
    assert result.status == TaskResultStatus.FAILED
    assert result.errors[-1].exception_class is UnknownTask
    assert "tests.taskapp.tasks.renamed_long_ago" in result.errors[-1].traceback


def test_bad_options_raise_at_decoration(backend: HeadraceTaskBackend) -> None:
    from headrace.tasks import task

    def module_level() -> None: ...

    module_level.__qualname__ = "module_level"
    with pytest.raises(TypeError, match="did you mean 'max_retries'"):
        task(max_retry=3)(module_level)
    with pytest.raises(InvalidTask, match="max_retries"):
        task(max_retries=-1)(module_level)
    with pytest.raises(InvalidTask, match="autoretry_for"):
        task(autoretry_for=("ValueError",))(module_level)
    with pytest.raises(InvalidTask, match="timeout"):
        tasks.add.using(timeout=0)
    with pytest.raises(InvalidTask, match="priority"):
        task(priority=101)(module_level)
    with pytest.raises(InvalidTask, match="Queue 'nowhere'"):
        task(queue_name="nowhere")(module_level)
    with pytest.raises(TypeError, match="unknown task option 'retries'"):
        tasks.add.using(retries=1)
    with pytest.raises(TypeError, match="only be set when the task is decorated"):
        tasks.add.using(autoretry_for=(OSError,))


async def test_djangos_own_decorator_passes_celery_options_through(
    worker: TaskWorker,
) -> None:
    assert tasks.django_decorated_flaky.max_retries == 1
    result = tasks.django_decorated_flaky.enqueue()
    await asyncio.wait_for(result.wait(), WAIT)
    assert result.status == TaskResultStatus.FAILED
    assert result.attempts == 2


async def test_a_result_shows_the_task_as_enqueued_with_using(worker: TaskWorker) -> None:
    result = tasks.record.using(priority=7, timeout=9).enqueue("x")
    await asyncio.wait_for(result.wait(), WAIT)
    fetched = tasks.record.get_result(result.id)
    assert fetched.task.priority == 7
    assert fetched.task.timeout == 9


async def test_each_job_keeps_the_options_it_was_enqueued_with(worker: TaskWorker) -> None:
    base = tasks.record
    results = [
        base.enqueue("plain"),
        base.using(timeout=9).enqueue("nine"),
        base.using(timeout=7, priority=3).enqueue("seven"),
        base.using(timeout=9).enqueue("nine again"),
        base.enqueue("plain again"),
    ]
    for result in results:
        await asyncio.wait_for(result.wait(), WAIT)
    seen = [base.get_result(result.id).task for result in results]
    assert [(task.timeout, task.priority) for task in seen] == [
        (base.timeout, base.priority),
        (9, base.priority),
        (7, 3),
        (9, base.priority),
        (base.timeout, base.priority),
    ]


async def test_wait_gives_up_after_its_timeout(
    backend: HeadraceTaskBackend, make_worker: MakeWorker
) -> None:
    result = tasks.record.enqueue("never started")
    with pytest.raises(TimeoutError):
        await result.wait(timeout=0.01)
    assert result.status == TaskResultStatus.READY


# -- the worker ------------------------------------------------------------------------------------


async def test_a_graceful_stop_finishes_the_job_in_hand(
    backend: HeadraceTaskBackend, make_worker: MakeWorker
) -> None:
    tasks.ASYNC_GATES["stop"] = asyncio.Event()
    worker = await make_worker()
    result = tasks.held_async.enqueue("stop")
    await idle_running(worker)
    worker.stop()
    tasks.ASYNC_GATES["stop"].set()
    await asyncio.wait_for(result.wait(), WAIT)
    assert result.return_value == "done"


async def test_a_job_cancelled_by_a_stop_goes_back_to_its_queue(
    backend: HeadraceTaskBackend, make_worker: MakeWorker
) -> None:
    tasks.ASYNC_GATES["back"] = asyncio.Event()
    worker = await make_worker(shutdown_timeout=0)
    result = tasks.held_async.enqueue("back")
    await idle_running(worker)
    worker.stop()
    await asyncio.wait_for(worker.wait_stopped(), WAIT)
    assert worker.statistics().returned == 1
    result.refresh()
    assert result.status == TaskResultStatus.READY
    assert result.errors == []
    tasks.ASYNC_GATES["back"].set()
    second = await make_worker()
    await asyncio.wait_for(result.wait(), WAIT)
    assert result.return_value == "done"
    assert result.attempts == 2
    assert second.statistics().succeeded == 1


async def test_concurrency_bounds_the_jobs_in_hand(
    backend: HeadraceTaskBackend, make_worker: MakeWorker
) -> None:
    tasks.ASYNC_GATES["c"] = asyncio.Event()
    results = [tasks.held_async.enqueue("c") for _ in range(5)]
    worker = await make_worker(concurrency=2)
    await started(2)
    # Both slots are taken and the jobs never end until the gate opens, so the third job
    # cannot have been claimed: it waits in the store, not in the worker.
    assert worker.statistics().running == 2
    assert backend.ready_count(["default"]) == 3
    tasks.ASYNC_GATES["c"].set()
    for result in results:
        await asyncio.wait_for(result.wait(), WAIT)
    assert worker.statistics().succeeded == 5


async def test_sync_jobs_run_on_a_bounded_thread_pool(
    backend: HeadraceTaskBackend, make_worker: MakeWorker
) -> None:
    tasks.GATES["pool"] = threading.Event()
    results = [tasks.held_plain_sync.enqueue("pool") for _ in range(4)]
    worker = await make_worker(sync_threads=2)
    await started(2)
    # All four in hand while two threads are blocked.
    await asyncio.wait_for(worker.wait_running(4), WAIT)
    tasks.GATES["pool"].set()
    for result in results:
        await asyncio.wait_for(result.wait(), WAIT)
    # A larger pool would have started a thread per blocked job; this one ran all on two.
    assert len({ident for _, ident in tasks.CALLS}) == 2
    assert worker.statistics().succeeded == 4


async def test_progress_from_a_sync_task_reaches_the_group(
    backend: HeadraceTaskBackend, make_worker: MakeWorker
) -> None:
    layer = get_channel_layer()
    assert layer is not None
    tasks.GATES["ps"] = threading.Event()
    result = tasks.progressing_sync.enqueue("ps")
    channel = await layer.new_channel()
    await layer.group_add(progress_group(result.id), channel)
    await make_worker()
    message = await asyncio.wait_for(layer.receive(channel), WAIT)
    assert message == {
        "type": "task.progress",
        "id": result.id,
        "done": 1,
        "total": 2,
        "info": {"stage": "sync"},
    }
    tasks.GATES["ps"].set()
    final = await asyncio.wait_for(layer.receive(channel), WAIT)
    assert final["type"] == "task.finished"


def test_a_worker_refuses_an_unknown_queue(backend: HeadraceTaskBackend) -> None:
    from headrace.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match="no queue 'nowhere'"):
        TaskWorker(backend, ["nowhere"])


async def test_a_sync_job_closes_old_database_connections_around_its_run(
    worker: TaskWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    from headrace.tasks import runner

    seen: list[tuple[str, int]] = []
    real = runner.close_old_connections_unless_suspended

    def spy() -> None:
        seen.append(("close_old_connections", threading.get_ident()))
        real()

    monkeypatch.setattr(runner, "close_old_connections_unless_suspended", spy)
    result = tasks.where_sync.enqueue()
    await asyncio.wait_for(result.wait(), WAIT)
    [(_, thread)] = [call for call in tasks.CALLS if call[0] == "where_sync"]
    assert seen == [("close_old_connections", thread)] * 2


def _job_in(backend: HeadraceTaskBackend, state: JobState, clock: ManualClock) -> str:
    """A job of ``state``, reached through the store's own operations."""
    from headrace.tasks.states import Move

    job_id = tasks.record.enqueue(state.name).id
    if state is JobState.READY:
        return job_id
    if state is JobState.CANCELLED:
        backend.request_cancel(job_id)
        return job_id
    claimed = backend.claim_nowait(["default"], "walker")
    assert claimed is not None
    assert claimed.id == job_id
    if state is JobState.SUCCESSFUL:
        backend.move_job(job_id, Move.SUCCEED, return_value=None)
    elif state is JobState.FAILED:
        backend.move_job(job_id, Move.FAIL)
    return job_id


@pytest.mark.parametrize("state", list(JobState))
def test_the_store_applies_the_state_table_and_nothing_else(
    backend: HeadraceTaskBackend, clock: ManualClock, state: JobState
) -> None:
    from headrace.tasks import InvalidTransition
    from headrace.tasks.states import MOVES, Move

    for move in Move:
        job_id = _job_in(backend, state, clock)
        found = backend.get_job(job_id)
        assert found is not None
        assert found.state is state
        if (state, move) in MOVES:
            assert backend.move_job(job_id, move).state is MOVES[state, move]
        else:
            with pytest.raises(InvalidTransition, match=f"got {state.name}"):
                backend.move_job(job_id, move)
            still = backend.get_job(job_id)
            assert still is not None
            assert still.state is state
        # Leave nothing claimable for the next round.
        while (left := backend.claim_nowait(["default"], "walker")) is not None:
            backend.move_job(left.id, Move.SUCCEED)


async def test_a_task_that_calls_sys_exit_fails_and_the_worker_goes_on(
    worker: TaskWorker,
) -> None:
    result = tasks.exits.enqueue()
    await asyncio.wait_for(result.wait(), WAIT)
    assert result.status == TaskResultStatus.FAILED
    assert result.errors[-1].exception_class is SystemExit
    after = tasks.add.enqueue(1, 1)
    await asyncio.wait_for(after.wait(), WAIT)
    assert after.return_value == 2


@pytest.mark.slow
async def test_a_failing_store_is_retried_on_the_clock_and_logged_once(
    backend: HeadraceTaskBackend, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    real_claim = backend.claim
    failures = 0

    async def claim(*args: Any, **kwargs: Any) -> Any:
        nonlocal failures
        if failures < 3:
            failures += 1
            raise ConnectionError("store unreachable")
        return await real_claim(*args, **kwargs)

    backend.claim = claim  # type: ignore[method-assign]
    worker = TaskWorker(backend, jitter=lambda cap: cap)
    run = asyncio.ensure_future(worker.run())
    try:
        result = tasks.add.enqueue(1, 1)
        for _ in range(3):
            await asyncio.wait_for(clock.wait_armed(), WAIT)  # the backoff pause
            clock.advance(2)  # the longest pause there is
        await asyncio.wait_for(result.wait(), WAIT)
        assert result.return_value == 2
        assert worker.statistics().outages == 1
    finally:
        worker.stop()
        await asyncio.wait_for(run, WAIT)
    lines = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert sum("claiming a job from TASKS['default'] failed" in line for line in lines) == 1
    assert sum("works again after 3 failures" in line for line in lines) == 1
