"""The dashboard over the Redis task backend, on the session's real redis-server: the inspector's
answers (queues, workers, jobs, counters, histograms, actions), ``/metrics`` parsed with
prometheus_client's parser before and after a restart (new backend objects, new worker), and
the live feed. The clock is a ManualClock (the scripts take ``now`` from it), so leases lapse
when the test says so."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.tasks import task_backends
from django.test import AsyncClient, override_settings

from headrace.dashboard.consumers import DashboardConsumer
from headrace.dashboard.inspect import HISTOGRAM_BUCKETS, JobQuery, TaskInspector, inspector_for
from headrace.layers import ManualClock
from headrace.tasks.backends.redis import RedisTaskBackend
from headrace.tasks.backends.redis.layout import HISTOGRAM_BOUNDS
from headrace.tasks.backends.redis.monitor import RedisInspector
from headrace.tasks.states import JobState
from headrace.tasks.worker import TaskWorker
from headrace.testing import WebsocketCommunicator
from tests.dashboardapp import tasks
from tests.task_backends import TASK_BACKENDS

WAIT = 10.0
ADD, EXPLODE, RETRIED, HANG = (
    f"tests.dashboardapp.tasks.{name}" for name in ("add", "explode", "retried_once", "hang")
)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_000_000.0)


@pytest.fixture(params=["redis", "redis-cluster"])
def config(request: pytest.FixtureRequest, clock: ManualClock) -> Iterator[dict[str, Any]]:
    """A fresh key prefix on the session's redis-server, or on its Redis Cluster (every key the
    scripts count in must share the queue's slot); a dead letter after one lost lease."""
    made = TASK_BACKENDS[request.param](clock, max_deliveries=1, lease=30)
    with override_settings(TASKS=made, ROOT_URLCONF="tests.dashboardapp.urls"):
        yield made
        backend = task_backends["default"]
        assert isinstance(backend, RedisTaskBackend)
        backend.flush()


@pytest.fixture
async def workers(config: dict[str, Any]) -> AsyncIterator[list[Any]]:
    """Start workers with ``start()``; each is stopped (now) at the end."""
    made: list[tuple[TaskWorker, asyncio.Future[None]]] = []
    yield made
    for worker, run in made:
        worker.stop(now=True)
        await asyncio.wait_for(run, WAIT)


def start(made: list[Any]) -> tuple[TaskWorker, asyncio.Future[None]]:
    worker = TaskWorker("default", ["default"], jitter=lambda cap: cap)
    run = asyncio.ensure_future(worker.run())
    made.append((worker, run))
    return worker, run


async def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` (a Redis read) until true, for at most WAIT seconds."""

    async def poll() -> None:
        while not await asyncio.to_thread(condition):
            await asyncio.sleep(0.01)

    try:
        await asyncio.wait_for(poll(), WAIT)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def dead_letter(clock: ManualClock) -> str:
    """A job on "emails" (no worker reads it) whose worker dies: with max_deliveries=1, the
    next claim dead-letters it."""
    backend = task_backends["default"]
    result = tasks.add.using(queue_name="emails").enqueue(7, 7)
    claimed = backend.claim_nowait(["emails"], "ghost")
    assert claimed is not None
    assert claimed.id == result.id
    clock.advance(31)
    assert backend.claim_nowait(["emails"], "ghost-2") is None
    return str(result.id)


def test_the_redis_backend_gives_its_own_inspector(config: dict[str, Any]) -> None:
    inspector = inspector_for(task_backends["default"])
    assert isinstance(inspector, RedisInspector)
    assert isinstance(inspector, TaskInspector)
    assert HISTOGRAM_BOUNDS == HISTOGRAM_BUCKETS  # the scripts bucket as /metrics expects


@pytest.mark.slow
@pytest.mark.django_db
async def test_the_inspector_answers_from_redis_after_a_few_jobs(
    workers: list[Any], clock: ManualClock
) -> None:
    backend = task_backends["default"]
    inspector = inspector_for(backend)
    worker, _ = start(workers)
    done = [tasks.add.enqueue(1, 2), tasks.add.enqueue(3, 4), tasks.explode.enqueue("boom")]
    done.append(tasks.retried_once.enqueue("k"))
    for result in done:
        await result.wait(timeout=WAIT)
    delayed = backend.enqueue_job(tasks.add, [5, 5], {}, countdown=3600)
    dead_id = await asyncio.to_thread(dead_letter, clock)

    by_name = {q.name: q for q in inspector.queues()}
    default, emails = by_name["default"], by_name["emails"]
    assert (default.ready, default.delayed, default.running, default.dead) == (0, 1, 0, 0)
    assert (emails.ready, emails.delayed, emails.running, emails.dead) == (0, 0, 0, 1)
    assert default.oldest_ready_age is None

    counters = inspector.counters()
    assert counters.counts[("enqueued", ADD, "default")] == 3
    assert counters.counts[("succeeded", ADD, "default")] == 2
    assert counters.counts[("failed", EXPLODE, "default")] == 1
    assert counters.counts[("started", RETRIED, "default")] == 2
    assert counters.counts[("retried", RETRIED, "default")] == 1
    assert counters.counts[("failed", RETRIED, "default")] == 1
    assert counters.counts[("started", ADD, "emails")] == 1
    assert counters.counts[("dead", ADD, "emails")] == 1
    assert counters.total("dead") == 1
    assert counters.histograms[("runtime", ADD, "default")].count == 2
    assert counters.histograms[("queue_wait", ADD, "default")].count == 2
    assert counters.histograms[("runtime", RETRIED, "default")].count == 2  # retry + final

    failed = inspector.jobs(JobQuery(state=JobState.FAILED))
    assert {job.task_path for job in failed.jobs} == {EXPLODE, RETRIED, ADD}
    assert failed.total == 3
    exploded = inspector.jobs(JobQuery(task="EXPLODE")).jobs
    assert [job.id for job in exploded] == [done[2].id]
    job = inspector.job(done[2].id)
    assert job is not None
    assert "exploded on purpose: boom" in job.errors[-1].traceback
    assert inspector.jobs(JobQuery(queue="emails")).total == 1
    assert inspector.jobs(JobQuery(search=delayed.id[:12])).jobs[0].id == delayed.id
    assert len(inspector.jobs(JobQuery(limit=2)).jobs) == 2

    await wait_for(lambda: any(w.up for w in inspector.workers()), "the worker's record")
    (seen,) = inspector.workers()
    assert (seen.id, seen.concurrency, seen.queues, seen.up) == (
        worker.worker_id,
        worker.concurrency,
        ("default",),
        True,
    )

    # Actions: a dead letter retried leaves the dead set; a live job is cancelled; a finished
    # one is purged; a live one refused.
    again = inspector.retry(dead_id)
    assert again != dead_id
    assert {q.name: q.dead for q in inspector.queues()}["emails"] == 0
    assert inspector.job(again) is not None
    with pytest.raises(ValueError, match="cancel it first"):
        inspector.purge(delayed.id)
    assert inspector.cancel(delayed.id) is True
    assert inspector.counters().counts[("cancelled", ADD, "default")] == 1
    assert inspector.purge(done[2].id) is True
    assert inspector.job(done[2].id) is None
    assert inspector.purge(done[2].id) is False
    with pytest.raises(LookupError, match="no job"):
        inspector.retry(done[2].id)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, frozenset(sample.labels.items())] = sample.value
    return found


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


@pytest.mark.slow
@pytest.mark.django_db
async def test_metrics_come_from_redis_and_survive_a_restart(
    workers: list[Any], config: dict[str, Any], clock: ManualClock
) -> None:
    tasks.HANGING.clear()
    worker, run = start(workers)
    for result in [tasks.add.enqueue(1, 1), tasks.explode.enqueue("m")]:
        await result.wait(timeout=WAIT)
    await asyncio.to_thread(dead_letter, clock)  # (the clock jump lapses every lease held)
    tasks.hang.enqueue()
    await asyncio.to_thread(tasks.HANGING.wait, WAIT)
    before = task_backends["default"]

    # The restart: the worker stops (handing back the job it had), then new backend objects
    # and a new store (what a new process makes) run a new worker.
    worker.stop(now=True)
    await asyncio.wait_for(run, WAIT)
    tasks.HANGING.clear()
    with override_settings(TASKS={"default": dict(config["default"])}):
        assert task_backends["default"] is not before
        assert task_backends["default"]._store is not before._store
        start(workers)
        await asyncio.to_thread(tasks.HANGING.wait, WAIT)
        for result in [tasks.add.enqueue(2, 2), tasks.add.enqueue(3, 3)]:
            await result.wait(timeout=WAIT)
        inspector = inspector_for(task_backends["default"])
        await wait_for(lambda: sum(w.up for w in inspector.workers()) == 1, "the new worker")

        response = await AsyncClient().get("/metrics")
        assert response.status_code == 200
        found = samples(response.content.decode())

        def count(name: str, task: str, queue: str = "default") -> float:
            return value(found, f"headrace_task_{name}_total", task=task, queue=queue)

        assert count("enqueued", ADD) == 3
        assert count("succeeded", ADD) == 3
        assert count("failed", EXPLODE) == 1
        assert (count("started", HANG), count("redelivered", HANG)) == (2, 1)
        assert (count("dead", ADD, "emails"), count("failed", ADD, "emails")) == (1, 1)
        assert value(found, "headrace_queue_length", queue="emails", state="dead") == 1
        assert value(found, "headrace_queue_length", queue="default", state="running") == 1
        assert value(found, "headrace_task_runtime_seconds_count", task=ADD, queue="default") == 3
        ups = sorted(v for (name, _), v in found.items() if name == "headrace_worker_up")
        assert ups == [0.0, 1.0]  # the stopped worker said it was down; the new one is up
        # The restarted worker stops before the outer settings come back.
        for made, running in workers[1:]:
            made.stop(now=True)
            await asyncio.wait_for(running, WAIT)
        del workers[1:]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
async def test_the_live_feed_reads_redis(config: dict[str, Any]) -> None:
    staff = await sync_to_async(User.objects.create_user)(
        username="staff", password="pw", is_staff=True
    )
    kept = tasks.add.enqueue(1, 2)
    tasks.explode.enqueue("not listed")
    communicator = WebsocketCommunicator(DashboardConsumer.as_asgi(), "/headrace/ws/")
    communicator.scope["user"] = staff
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_json_to({"type": "query", "task": "add"})
    await communicator.send_json_to({"type": "watch", "id": kept.id})
    while True:  # updates until one reflects both messages
        update = await communicator.receive_json_from(WAIT)
        assert update["type"] == "update"
        if update["jobs"]["total"] == 1 and update["job"] is not None:
            break
    assert [row["id"] for row in update["jobs"]["rows"]] == [kept.id]
    assert update["job"]["args"] == [1, 2]
    assert update["job"]["state"] == "READY"
    assert {q["name"]: q["ready"] for q in update["queues"]} == {"default": 2, "emails": 0}
    assert update["totals"]["enqueued"] == 2
    await communicator.disconnect()
