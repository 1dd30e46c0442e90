"""The dashboard over the database task backend: the inspector's answers from the tables,
``/metrics`` counting what every process did (also after a restart and after results expire),
and the live consumer.

On the real PostgreSQL server the fixtures start and on an SQLite file, on a ManualClock; a
lapsed lease is made by claiming a job for a worker that never runs it and moving the clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.tasks import task_backends
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from headrace.dashboard.consumers import DashboardConsumer
from headrace.dashboard.inspect import JobQuery, inspector_for
from headrace.layers import ManualClock
from headrace.tasks.backends.database import DatabaseTaskBackend
from headrace.tasks.backends.database.inspection import DatabaseInspector
from headrace.tasks.backends.database.models import TaskDeadLetter, TaskJobResult
from headrace.tasks.base import DEFAULT_RESULT_TTL
from headrace.tasks.states import JobState
from headrace.tasks.worker import TaskWorker
from headrace.testing import WebsocketCommunicator
from tests.dashboardapp import tasks
from tests.task_backends import QUEUES

WAIT = 10.0
LEASE = 30.0
ADD, EXPLODE, RETRIED = (
    f"tests.dashboardapp.tasks.{name}" for name in ("add", "explode", "retried_once")
)


def entry(database: str, clock: ManualClock) -> dict[str, Any]:
    return {
        "BACKEND": "headrace.tasks.backends.database.DatabaseTaskBackend",
        "QUEUES": QUEUES,
        "OPTIONS": {
            "database": database,
            "clock": clock,
            "lease": LEASE,
            "max_deliveries": 2,
            "poll_interval": 60,
        },
    }


@pytest.fixture(params=["postgres", "sqlite"])
def database(request: pytest.FixtureRequest) -> str:
    alias: str = request.getfixturevalue(f"task_{request.param}")
    return alias


@pytest.fixture
def backend(database: str, clock: ManualClock, settings: Any) -> DatabaseTaskBackend:
    settings.TASKS = {"default": entry(database, clock)}
    settings.ROOT_URLCONF = "tests.dashboardapp.urls"
    found = task_backends["default"]
    assert isinstance(found, DatabaseTaskBackend)
    return found


class Workers:
    """Task workers a test starts; each is stopped at the end (or by :meth:`stop_all`)."""

    def __init__(self) -> None:
        self.started: list[tuple[TaskWorker, asyncio.Future[None]]] = []

    def __call__(self, backend: DatabaseTaskBackend) -> TaskWorker:
        worker = TaskWorker(backend, ["default"], jitter=lambda cap: cap)
        self.started.append((worker, asyncio.ensure_future(worker.run())))
        return worker

    async def stop_all(self) -> None:
        started, self.started = self.started, []
        for worker, run in started:
            worker.stop(now=True)
            await asyncio.wait_for(run, WAIT)


@pytest.fixture
async def run_worker() -> AsyncIterator[Workers]:
    workers = Workers()
    yield workers
    await workers.stop_all()


def _dead_letter(backend: DatabaseTaskBackend, clock: ManualClock) -> str:
    """A job whose worker (in another process) is lost twice (max_deliveries=2): put back
    once, then dead."""
    # The same tables through another store, as another process would use them (not in
    # TASKS, so the dashboard does not list its jobs twice).
    other = DatabaseTaskBackend("default", entry(backend.database, clock))
    doomed = tasks.add.enqueue(5, 5)
    for attempt in range(2):
        claimed = other.claim_nowait(["default"], f"doomed-{attempt}")
        assert claimed is not None
        assert claimed.id == doomed.id
        clock.advance(LEASE + 1)
        assert backend.maintain() == 1
    return str(doomed.id)


async def _some_jobs(
    backend: DatabaseTaskBackend,
    clock: ManualClock,
    run_worker: Workers,
) -> dict[str, str]:
    """Dead-lettered, succeeded (2), failed, retried then failed, delayed and waiting jobs."""
    dead = await asyncio.to_thread(_dead_letter, backend, clock)
    done = [tasks.add.enqueue(1, 2), tasks.add.enqueue(3, 4), tasks.explode.enqueue("boom")]
    done.append(tasks.retried_once.enqueue("k"))
    worker = run_worker(backend)
    for result in done:
        await result.wait(timeout=WAIT)
    await asyncio.wait_for(worker.wait_idle(), WAIT)
    delayed = backend.enqueue_job(tasks.add, [1, 1], {}, countdown=3600)
    clock.advance(1)  # so that the newest job is known
    waiting = tasks.add.using(queue_name="emails").enqueue(0, 0)  # no worker reads "emails"
    clock.advance(5)
    return {
        "dead": dead,
        "succeeded": str(done[0].id),
        "failed": str(done[2].id),
        "retried": str(done[3].id),
        "delayed": str(delayed.id),
        "waiting": str(waiting.id),
        "worker": worker.worker_id,
    }


def _counts(inspector: DatabaseInspector) -> dict[tuple[str, str, str], int]:
    return dict(inspector.counters().counts)


async def test_the_inspector_answers_from_the_tables(
    backend: DatabaseTaskBackend,
    clock: ManualClock,
    run_worker: Workers,
) -> None:
    inspector = inspector_for(backend)
    assert isinstance(inspector, DatabaseInspector)
    ids = await _some_jobs(backend, clock, run_worker)

    queues = {q.name: q for q in await asyncio.to_thread(inspector.queues)}
    default, emails = queues["default"], queues["emails"]
    assert (default.ready, default.delayed, default.running, default.dead) == (0, 1, 0, 1)
    assert default.oldest_ready_age is None
    assert (emails.ready, emails.delayed, emails.dead, emails.oldest_ready_age) == (1, 0, 0, 5.0)

    [worker] = await asyncio.to_thread(inspector.workers)
    assert (worker.id, worker.up, worker.queues) == (ids["worker"], True, ("default",))
    assert worker.concurrency >= 1  # a worker of this process

    failed = await asyncio.to_thread(inspector.jobs, JobQuery(state=JobState.FAILED))
    assert failed.total == 3
    assert {job.id for job in failed.jobs} == {ids["dead"], ids["failed"], ids["retried"]}
    page = await asyncio.to_thread(inspector.jobs, JobQuery(task="ADD", limit=2))
    assert page.total == 5
    assert [job.id for job in page.jobs] == [ids["waiting"], ids["delayed"]]  # newest first
    found = await asyncio.to_thread(inspector.jobs, JobQuery(search=ids["failed"][:12]))
    assert [job.id for job in found.jobs] == [ids["failed"]]
    emails_page = await asyncio.to_thread(inspector.jobs, JobQuery(queue="emails"))
    assert [job.id for job in emails_page.jobs] == [ids["waiting"]]
    dead_job = await asyncio.to_thread(inspector.job, ids["dead"])
    assert dead_job is not None
    assert [e.exception_class_path for e in dead_job.errors] == [
        "headrace.tasks.exceptions.WorkerLost"
    ] * 2

    counts = await asyncio.to_thread(_counts, inspector)
    assert counts["enqueued", ADD, "default"] == 4
    assert counts["enqueued", ADD, "emails"] == 1
    assert counts["started", ADD, "default"] == 4  # two lost claims, two that succeeded
    assert counts["succeeded", ADD, "default"] == 2
    assert counts["failed", ADD, "default"] == 1  # the dead-lettered one
    assert counts["dead", ADD, "default"] == 1
    assert counts["redelivered", ADD, "default"] == 1
    assert counts["failed", EXPLODE, "default"] == 1
    assert (counts["started", RETRIED, "default"], counts["retried", RETRIED, "default"]) == (2, 1)
    assert counts.get(("cancelled", ADD, "default"), 0) == 0
    histograms = (await asyncio.to_thread(inspector.counters)).histograms
    assert histograms["runtime", ADD, "default"].count == 3  # each result's last attempt
    assert histograms["queue_wait", ADD, "default"].count == 3


async def test_the_actions_retry_cancel_and_purge_through_the_backend(
    backend: DatabaseTaskBackend,
    clock: ManualClock,
    run_worker: Workers,
) -> None:
    inspector = inspector_for(backend)
    ids = await _some_jobs(backend, clock, run_worker)

    with pytest.raises(ValueError, match="expected a finished job, got READY"):
        await asyncio.to_thread(inspector.retry, ids["delayed"])
    with pytest.raises(ValueError, match="cancel it first"):
        await asyncio.to_thread(inspector.purge, ids["waiting"])
    with pytest.raises(LookupError, match="no job"):
        await asyncio.to_thread(inspector.retry, "nope")

    again = await asyncio.to_thread(inspector.retry, ids["failed"])
    assert again != ids["failed"]
    await tasks.explode.get_result(again).wait(timeout=WAIT)
    # A dead-lettered job is retried through its dead letter, which records the new job.
    revived = await asyncio.to_thread(inspector.retry, ids["dead"])
    letter = await asyncio.to_thread(
        TaskDeadLetter.objects.using(backend.database).get, job_id=ids["dead"]
    )
    assert letter.retried_as == revived
    revived_result = tasks.add.get_result(revived)
    await revived_result.wait(timeout=WAIT)
    assert revived_result.return_value == 10

    assert await asyncio.to_thread(inspector.cancel, ids["delayed"]) is True
    before = await asyncio.to_thread(_counts, inspector)
    assert before["cancelled", ADD, "default"] == 1
    assert before["failed", EXPLODE, "default"] == 2
    # Purging a result keeps what it counted (its share moves to the counter table).
    assert await asyncio.to_thread(inspector.purge, ids["succeeded"]) is True
    assert await asyncio.to_thread(inspector.purge, ids["succeeded"]) is False
    assert await asyncio.to_thread(inspector.job, ids["succeeded"]) is None
    assert await asyncio.to_thread(_counts, inspector) == before
    histograms = (await asyncio.to_thread(inspector.counters)).histograms
    assert histograms["runtime", ADD, "default"].count == 4


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, frozenset(sample.labels.items())] = sample.value
    return found


def _metrics() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = Client().get("/metrics")
    assert response.status_code == 200
    return _samples(response.content.decode())


def _count(found: dict[Any, float], name: str, task: str, queue: str = "default") -> float:
    return found.get(
        (f"headrace_task_{name}_total", frozenset({"task": task, "queue": queue}.items())), 0.0
    )


async def test_metrics_count_from_the_database_also_after_a_restart_and_result_expiry(
    backend: DatabaseTaskBackend,
    clock: ManualClock,
    database: str,
    settings: Any,
    run_worker: Workers,
) -> None:
    await _some_jobs(backend, clock, run_worker)
    found = await asyncio.to_thread(_metrics)
    assert _count(found, "enqueued", ADD) == 4
    assert _count(found, "succeeded", ADD) == 2
    assert _count(found, "dead", ADD) == 1
    assert _count(found, "redelivered", ADD) == 1
    assert _count(found, "retried", RETRIED) == 1
    assert _count(found, "failed", EXPLODE) == 1
    length = "headrace_queue_length"
    assert found[length, frozenset({"queue": "emails", "state": "ready"}.items())] == 1
    assert found[length, frozenset({"queue": "default", "state": "delayed"}.items())] == 1

    # A restart: new settings make a new backend object with a new store (as a new process
    # would have); its new worker adds to the same counters.
    settings.TASKS = {"default": entry(database, clock)}
    restarted = task_backends["default"]
    assert isinstance(restarted, DatabaseTaskBackend)
    assert restarted is not backend
    await run_worker.stop_all()
    result = tasks.add.enqueue(2, 2)
    run_worker(restarted)
    await result.wait(timeout=WAIT)
    await run_worker.stop_all()  # before the clock jumps a day, when the delayed job falls due
    after = await asyncio.to_thread(_metrics)
    assert _count(after, "enqueued", ADD) == 5
    assert _count(after, "succeeded", ADD) == 3
    assert _count(after, "failed", EXPLODE) == 1

    # Every result expires and is purged: the counters stay where they were.
    clock.advance(DEFAULT_RESULT_TTL + 1)
    await asyncio.to_thread(restarted.purge)
    assert not await asyncio.to_thread(TaskJobResult.objects.using(database).exists)
    purged = await asyncio.to_thread(_metrics)
    for name, task in [
        ("enqueued", ADD),
        ("started", ADD),
        ("succeeded", ADD),
        ("failed", ADD),
        ("dead", ADD),
        ("redelivered", ADD),
        ("retried", RETRIED),
        ("failed", EXPLODE),
    ]:
        assert _count(purged, name, task) == _count(after, name, task), name
    runtime = "headrace_task_runtime_seconds_count"
    labels = frozenset({"task": ADD, "queue": "default"}.items())
    assert purged[runtime, labels] == after[runtime, labels] == 4


async def test_the_socket_feeds_the_database_backend_to_staff(
    backend: DatabaseTaskBackend,
    clock: ManualClock,
    run_worker: Workers,
) -> None:
    staff = User(username="staff", is_staff=True, is_active=True)  # may_view reads no table
    ids = await _some_jobs(backend, clock, run_worker)
    communicator = WebsocketCommunicator(DashboardConsumer.as_asgi(), "/headrace/ws/")
    communicator.scope["user"] = staff
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_json_to({"type": "query", "task": "explode"})
    await communicator.send_json_to({"type": "watch", "id": ids["failed"]})
    while True:  # updates until one reflects both messages
        update = await communicator.receive_json_from(WAIT)
        assert update["type"] == "update"
        if update["jobs"]["total"] == 1 and update["job"] is not None:
            break
    assert [row["id"] for row in update["jobs"]["rows"]] == [ids["failed"]]
    assert update["job"]["state"] == "FAILED"
    assert "exploded on purpose: boom" in update["job"]["errors"][-1]["traceback"]
    queues = {q["name"]: (q["ready"], q["delayed"], q["dead"]) for q in update["queues"]}
    assert queues == {"default": (0, 1, 1), "emails": (1, 0, 0)}
    assert update["totals"]["enqueued"] == 7
    assert update["totals"]["dead"] == 1
    assert [w["id"] for w in update["workers"]] == [ids["worker"]]
    await communicator.disconnect()
