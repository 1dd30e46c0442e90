"""The Redis task backend beyond the conformance suite: leases, worker deaths, stale acks,
idempotency under contention, outages and settings — against real redis-server processes and,
where a worker must die, real ``runworker --tasks`` processes.

Tests wait on conditions (:func:`tests.redis_servers.wait_until`, ``wait_*`` hooks), never on
sleeps; the worker processes read their settings from ``tests/redis_task_settings.py``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.checks import Warning as CheckWarning
from django.tasks import TaskResultStatus, task_backends

from headrace.exceptions import ConfigurationError
from headrace.tasks import JobState
from headrace.tasks.backends.redis import RedisTaskBackend, TaskStoreUnavailable
from headrace.tasks.worker import TaskWorker
from tests.redis_servers import RedisServer, servers, wait_until
from tests.task_backends import fail_over
from tests.taskapp import redis_jobs, tasks

ROOT = Path(__file__).resolve().parent.parent
WORKER_LOST = "headrace.tasks.exceptions.WorkerLost"


@pytest.fixture
def server(request: pytest.FixtureRequest) -> RedisServer:
    return servers(request.config).standalone()


@pytest.fixture
def mark() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def use_redis(settings: Any, server: RedisServer, prefix: str, **options: Any) -> RedisTaskBackend:
    settings.TASKS = {
        "default": {
            "BACKEND": "headrace.tasks.backends.redis.RedisTaskBackend",
            "QUEUES": ["default", "emails"],
            "OPTIONS": {"hosts": [server.url], "prefix": prefix, **options},
        }
    }
    backend = task_backends["default"]
    assert isinstance(backend, RedisTaskBackend)
    return backend


class Workers:
    """``runworker --tasks`` processes on the test's server and prefix."""

    def __init__(self, server: RedisServer, prefix: str, directory: Path) -> None:
        self.server = server
        self.prefix = prefix
        self.directory = directory
        self.started: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        *,
        concurrency: int = 4,
        shutdown_timeout: float = 5,
        lease: float = 1,
        heartbeat: float = 0.2,
        max_deliveries: int = 3,
    ) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.redis_task_settings",
            "PYTHONPATH": str(ROOT),
            "HEADRACE_TEST_REDIS": self.server.url,
            "HEADRACE_TEST_PREFIX": self.prefix,
            "HEADRACE_TEST_LEASE": str(lease),
            "HEADRACE_TEST_HEARTBEAT": str(heartbeat),
            "HEADRACE_TEST_MAX_DELIVERIES": str(max_deliveries),
        }
        log = self.directory / f"worker-{len(self.started)}.log"
        process = subprocess.Popen(
            [
                sys.executable, "-m", "django", "runworker", "--tasks", "default",
                "--concurrency", str(concurrency), "--shutdown-timeout", str(shutdown_timeout),
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
        )  # fmt: skip
        self.started.append(process)
        return process

    def close(self) -> None:
        for process in self.started:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
                process.kill()
            process.wait(10)


@pytest.fixture
def workers(server: RedisServer, mark: str, tmp_path: Path) -> Iterator[Workers]:
    found = Workers(server, mark, tmp_path)
    yield found
    found.close()


# -- leases and worker deaths ---------------------------------------------------------------------


@pytest.mark.slow
def test_killed_workers_lose_no_job_and_repeat_only_the_jobs_in_hand(
    settings: Any, server: RedisServer, mark: str, workers: Workers
) -> None:
    backend = use_redis(settings, server, mark, max_deliveries=20)
    ids = [redis_jobs.record_id.enqueue(mark, n, 0.05).id for n in range(3000)]
    concurrency = 10
    running = [workers.start(concurrency=concurrency, max_deliveries=20) for _ in range(3)]
    client = server.client()
    kills = 0
    # A kill (SIGKILL, then a replacement) each time another 500 ids are recorded: about every
    # 2 s at this pace, and never before the workers got going.
    for threshold in range(500, 3000, 500):
        wait_until(lambda t=threshold: client.llen(f"{mark}:seen") >= t, "progress", 60)
        victim = running.pop(0)
        victim.kill()
        victim.wait(10)
        kills += 1
        running.append(workers.start(concurrency=concurrency, max_deliveries=20))

    def all_done() -> bool:
        return backend.queue_statistics("default").counters["successful"] >= 3000

    wait_until(all_done, "every job to succeed", 90)
    seen = Counter(int(n) for n in client.lrange(f"{mark}:seen", 0, -1))
    assert set(seen) == set(range(3000))
    stats = backend.queue_statistics("default")
    assert stats.counters["successful"] == 3000
    assert stats.ready == stats.running == stats.dead == 0
    repeated = [n for n, count in seen.items() if count > 1]
    assert len(repeated) <= kills * concurrency  # at most the jobs in hand at the kills
    for number in repeated:
        result = redis_jobs.record_id.get_result(ids[number])
        assert result.status == TaskResultStatus.SUCCESSFUL
        assert WORKER_LOST in [e.exception_class_path for e in result.errors]
    lost = stats.counters["lost"]
    assert lost >= len(repeated)
    assert lost <= kills * concurrency


@pytest.mark.slow
def test_a_paused_workers_late_acknowledgement_is_ignored(
    settings: Any, server: RedisServer, mark: str, workers: Workers
) -> None:
    backend = use_redis(settings, server, mark)
    client = server.client()
    result = redis_jobs.hold.enqueue(mark)
    first = workers.start(lease=0.5, heartbeat=0.1)
    wait_until(lambda: client.llen(f"{mark}:started") == 1, "the first worker to start it")
    os.kill(first.pid, signal.SIGSTOP)
    second = workers.start(lease=0.5, heartbeat=0.1)
    wait_until(lambda: client.llen(f"{mark}:started") == 2, "the lease to lapse and move on")
    client.rpush(f"{mark}:release:{second.pid}", 1)
    wait_until(lambda: backend.get_job(result.id).is_finished, "the second worker to finish")  # type: ignore[union-attr]
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == second.pid
    assert [e.exception_class_path for e in result.errors] == [WORKER_LOST]

    os.kill(first.pid, signal.SIGCONT)
    client.rpush(f"{mark}:release:{first.pid}", 1)

    def stale_ack_counted() -> bool:
        return backend.queue_statistics("default").counters["stale_acks"] == 1

    wait_until(stale_ack_counted, "the first worker's late acknowledgement")
    assert client.llen(f"{mark}:finished") == 2  # it did run to the end...
    result.refresh()  # ...and changed nothing
    assert result.return_value == second.pid
    assert backend.queue_statistics("default").counters["successful"] == 1


@pytest.mark.slow
def test_a_task_that_kills_its_worker_is_dead_lettered_after_max_deliveries(
    settings: Any, server: RedisServer, mark: str, workers: Workers
) -> None:
    backend = use_redis(settings, server, mark, max_deliveries=3)
    client = server.client()
    result = redis_jobs.die.enqueue(mark)
    for delivery in range(1, 4):
        process = workers.start(lease=0.5, heartbeat=0.1, max_deliveries=3)
        assert process.wait(30) == 1  # os._exit(1) in the task
        assert client.llen(f"{mark}:died") == delivery
    workers.start(lease=0.5, heartbeat=0.1, max_deliveries=3)  # reaps the third lapse

    def dead() -> bool:
        return backend.job_ids("default", "dead") == [result.id]

    wait_until(dead, "the job to be dead-lettered")
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert [e.exception_class_path for e in result.errors] == [WORKER_LOST] * 3
    assert client.llen(f"{mark}:died") == 3  # never delivered a fourth time
    assert "delivery 3 of at most 3" in result.errors[-1].traceback


@pytest.mark.slow
def test_sigterm_hands_the_jobs_in_hand_back_within_the_shutdown_timeout(
    settings: Any, server: RedisServer, mark: str, workers: Workers
) -> None:
    backend = use_redis(settings, server, mark)
    client = server.client()
    result = redis_jobs.hold_async.enqueue(mark)
    process = workers.start(shutdown_timeout=0.3)
    wait_until(lambda: client.llen(f"{mark}:started") == 1, "the worker to start it")
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    job = backend.get_job(result.id)
    assert job is not None
    assert job.state is JobState.READY
    assert job.errors == ()  # handed back, not failed, and not a retry
    assert job.retries == 0
    assert backend.job_ids("default", "ready") == [result.id]
    assert backend.queue_statistics("default").counters["returned"] == 1


@pytest.mark.slow
async def test_a_job_ten_times_longer_than_the_lease_runs_once_on_a_healthy_worker(
    settings: Any, server: RedisServer, mark: str
) -> None:
    backend = use_redis(settings, server, mark, lease=0.1, heartbeat_interval=0.02)
    tasks.CALLS.clear()
    gate = tasks.ASYNC_GATES["long"] = asyncio.Event()
    result = tasks.held_async.enqueue("long")
    first = TaskWorker(backend)
    second = TaskWorker(backend)  # would take the job if its lease lapsed
    runs = [asyncio.ensure_future(w.run()) for w in (first, second)]
    try:
        while backend.statistics().renewals < 50:  # 50 heartbeats: 10 leases' worth
            await asyncio.sleep(0.02)
        gate.set()
        await asyncio.wait_for(result.wait(), 5)
    finally:
        first.stop()
        second.stop()
        await asyncio.wait_for(asyncio.gather(*runs), 5)
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.errors == []
    assert len(result.worker_ids) == 1
    assert [c for c in tasks.CALLS if c[0] == "held_async"] == [("held_async", result.id)]
    assert backend.queue_statistics("default").counters["lost"] == 0


async def test_workers_claim_only_their_free_slots(
    settings: Any, server: RedisServer, mark: str
) -> None:
    """Two workers of 3 slots and 10 jobs that wait: 6 leased, 4 left for anyone else (a
    prefetching worker would hold more than it runs, and claim_more() must keep to its limit)."""
    backend = use_redis(settings, server, mark)
    tasks.CALLS.clear()
    gate = tasks.ASYNC_GATES["slots"] = asyncio.Event()
    results = [tasks.held_async.enqueue("slots") for _ in range(10)]
    workers = [TaskWorker(backend, concurrency=3) for _ in range(2)]
    runs = [asyncio.ensure_future(w.run()) for w in workers]
    try:
        for worker in workers:
            await asyncio.wait_for(worker.wait_running(3), 5)
        stats = backend.queue_statistics("default")
        assert (stats.running, stats.ready) == (6, 4)
        assert backend.statistics().leases_held == 6
        gate.set()
        for result in results:
            await asyncio.wait_for(result.wait(), 5)
    finally:
        for worker in workers:
            worker.stop()
        await asyncio.wait_for(asyncio.gather(*runs), 5)
    assert sum(w.statistics().claimed for w in workers) == 10


async def test_one_acknowledgement_call_settles_a_loop_turns_jobs_each_on_its_own(
    settings: Any, server: RedisServer, mark: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A loop turn's acknowledgements go to Redis as one script call; inside it each job is
    settled or refused on its own: a stale lease token is ignored and counted, a job Redis
    no longer has is logged, and neither stops the others."""
    from headrace.tasks.states import Move

    backend = use_redis(settings, server, mark)
    client = server.client()
    keys = backend._store.queue_keys("default")
    for label in ("kept", "handed-on", "purged", "failed"):
        tasks.record.enqueue(label)
    jobs = await backend.claim_more(["default"], "w1", 4)
    assert [job.args for job in jobs] == [["kept"], ["handed-on"], ["purged"], ["failed"]]
    kept, handed_on, purged, failed = jobs
    client.hset(keys.job(handed_on.id), "token", "another worker's")
    client.delete(keys.job(purged.id))
    for job in (kept, handed_on, purged):
        backend.move_job(job.id, Move.SUCCEED, return_value={"label": job.args[0]})
    backend.move_job(failed.id, Move.FAIL, errors=())
    await asyncio.sleep(0)  # the end of the turn: the acknowledgements go
    done = backend.get_job(kept.id)
    assert done is not None
    assert (done.state, done.return_value) == (JobState.SUCCESSFUL, {"label": "kept"})
    assert done.result_expires_at is not None
    assert backend.get_job(failed.id).state is JobState.FAILED  # type: ignore[union-attr]
    assert backend.get_job(handed_on.id).state is JobState.RUNNING  # type: ignore[union-attr]
    assert backend.get_job(purged.id) is None
    assert backend.statistics().stale_acks == 1
    counters = backend.queue_statistics("default").counters
    assert (counters["stale_acks"], counters["successful"], counters["failed"]) == (1, 1, 1)
    assert f"task {handed_on.id}: this worker's result was ignored" in caplog.text
    assert f"task {purged.id} finished, but Redis no longer has it" in caplog.text
    assert client.zscore(keys.leases, kept.id) is None
    assert client.zscore(keys.done, kept.id) is not None


@pytest.mark.slow
async def test_acknowledgements_that_met_an_outage_are_sent_once_redis_is_back(
    settings: Any, request: pytest.FixtureRequest, mark: str, caplog: pytest.LogCaptureFixture
) -> None:
    from headrace.tasks.states import Move

    own = servers(request.config).new("--appendonly", "yes", name="tasks-ack-outage")
    backend = use_redis(settings, own, mark, connect_timeout=0.3)
    for label in ("one", "two"):
        tasks.record.enqueue(label)
    jobs = await backend.claim_more(["default"], "w1", 2)
    assert len(jobs) == 2
    own.stop()
    for job in jobs:
        backend.move_job(job.id, Move.SUCCEED, return_value=job.args[0])
    await asyncio.sleep(0)  # the end of the turn: sending them fails; they wait
    assert backend._store.ack_backoff.outages == 1
    assert "acknowledging tasks on Redis" in caplog.text
    own.start()  # with its data (append-only file)
    for job in jobs:  # a store call sends the waiting acknowledgements first
        found = backend.get_job(job.id)
        assert found is not None
        assert (found.state, found.return_value) == (JobState.SUCCESSFUL, job.args[0])
    assert backend.statistics().stale_acks == 0
    assert not backend._store.ack_backoff.failing


def test_a_lapsed_lease_returns_the_job_then_dead_letters_it_with_a_finished_signal(
    settings: Any, server: RedisServer, mark: str
) -> None:
    from django.tasks.signals import task_finished

    from headrace.layers import ManualClock

    clock = ManualClock()
    backend = use_redis(settings, server, mark, clock=clock, lease=10, max_deliveries=2)
    finished: list[Any] = []

    def on_finished(sender: Any, task_result: Any, **kwargs: Any) -> None:
        finished.append(task_result)

    task_finished.connect(on_finished)
    try:
        job_id = tasks.record.enqueue("doomed").id
        assert backend.claim_nowait(["default"], "first").id == job_id  # type: ignore[union-attr]
        clock.advance(9.9)
        assert backend.claim_nowait(["default"], "second") is None  # lease still good
        clock.advance(0.2)
        again = backend.claim_nowait(["default"], "second")  # lapsed: handed on
        assert again is not None
        assert again.id == job_id
        assert [e.exception_class_path for e in again.errors] == [WORKER_LOST]
        assert finished == []
        clock.advance(10.1)
        assert backend.claim_nowait(["default"], "third") is None  # second death: dead
        assert backend.job_ids("default", "dead") == [job_id]
        [result] = finished
        assert result.id == job_id
        assert result.status == TaskResultStatus.FAILED
        assert [e.exception_class_path for e in result.errors] == [WORKER_LOST] * 2
    finally:
        task_finished.disconnect(on_finished)


# -- idempotency, outages, settings -------------------------------------------------------------


def test_200_concurrent_enqueues_with_one_key_make_one_job(
    settings: Any, server: RedisServer, mark: str
) -> None:
    backend = use_redis(settings, server, mark)
    barrier = threading.Barrier(200)
    ids: list[str] = []

    def enqueue(n: int) -> None:
        barrier.wait(10)
        ids.append(tasks.record.using(key="one-report").enqueue(f"call {n}").id)

    threads = [threading.Thread(target=enqueue, args=(n,)) for n in range(200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(ids) == 200
    assert len(set(ids)) == 1
    assert backend.job_ids("default", "ready") == [ids[0]]
    assert backend.queue_statistics("default").counters["enqueued"] == 1


@pytest.mark.slow
async def test_an_enqueue_that_cannot_reach_redis_raises_and_workers_come_back(
    settings: Any, request: pytest.FixtureRequest, mark: str, caplog: pytest.LogCaptureFixture
) -> None:
    own = servers(request.config).new(name="tasks-outage")
    backend = use_redis(settings, own, mark, connect_timeout=0.3, block_timeout=0.2)
    worker = TaskWorker(backend)
    run = asyncio.ensure_future(worker.run())
    try:
        first = tasks.add.enqueue(1, 1)
        await asyncio.wait_for(first.wait(), 5)
        own.stop()
        with pytest.raises(TaskStoreUnavailable, match="cannot be reached"):
            tasks.add.enqueue(2, 2)
        own.start()  # empty again: it keeps nothing on disk
        second = tasks.add.enqueue(3, 3)
        await asyncio.wait_for(second.wait(), 10)
        assert second.return_value == 6
        outages = [
            r.getMessage() for r in caplog.records if "retrying with backoff" in r.getMessage()
        ]
        # The worker noticed the outage (whichever of its waiting reader or its claim met it
        # first logs it) and said so once; then it came back by itself (above).
        assert outages, caplog.text
    finally:
        worker.stop()
        await asyncio.wait_for(run, 5)


@pytest.mark.slow
async def test_jobs_keep_running_through_a_sentinel_fail_over(
    settings: Any, request: pytest.FixtureRequest, mark: str
) -> None:
    _, _, sentinel = servers(request.config).sentinel()
    host = {"sentinels": [("127.0.0.1", sentinel.port)], "master_name": "mymaster"}
    settings.TASKS = {
        "default": {
            "BACKEND": "headrace.tasks.backends.redis.RedisTaskBackend",
            "QUEUES": ["default", "emails"],
            "OPTIONS": {"hosts": [host], "prefix": mark, "connect_timeout": 15},
        }
    }
    backend = task_backends["default"]
    worker = TaskWorker(backend, jitter=lambda cap: cap)
    run = asyncio.ensure_future(worker.run())
    try:
        before = [tasks.add.enqueue(n, n) for n in range(20)]
        for result in before:
            await asyncio.wait_for(result.wait(), 10)
        await asyncio.to_thread(fail_over, sentinel)
        after = [await asyncio.to_thread(tasks.add.enqueue, n, 1) for n in range(20)]
        for n, result in enumerate(after):
            await asyncio.wait_for(result.wait(), 30)
            assert result.return_value == n + 1
    finally:
        worker.stop()
        await asyncio.wait_for(run, 10)


def test_check_warns_when_redis_keeps_nothing_on_disk(
    settings: Any, request: pytest.FixtureRequest, server: RedisServer, mark: str
) -> None:
    backend = use_redis(settings, server, mark)  # the test servers run with --save ""
    warnings = [m for m in backend.check() if isinstance(m, CheckWarning)]
    assert [m.id for m in warnings] == ["headrace.W110"]
    durable = servers(request.config).new("--appendonly", "yes", name="tasks-aof")
    backend = use_redis(settings, durable, mark)
    assert [m.id for m in backend.check() if isinstance(m, CheckWarning)] == []


def test_layer_option_reuses_a_channel_layers_servers(
    settings: Any, server: RedisServer, mark: str
) -> None:
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "headrace.layers.redis.RedisChannelLayer",
            "CONFIG": {"hosts": [server.url]},
        }
    }
    settings.TASKS = {
        "default": {
            "BACKEND": "headrace.tasks.backends.redis.RedisTaskBackend",
            "QUEUES": ["default"],
            "OPTIONS": {"layer": "default", "prefix": mark},
        }
    }
    backend = task_backends["default"]
    assert isinstance(backend, RedisTaskBackend)
    assert backend.settings.hosts == (server.url,)
    result = tasks.record.enqueue("through the layer's server")
    assert server.client().exists(f"{mark}:{{default}}:job:{result.id}") == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"lease": 0}, "['lease'] must be a positive number, got 0"),
        ({"lease": 5, "heartbeat_interval": 5}, "must be shorter than the lease"),
        ({"max_deliveries": 0}, "['max_deliveries'] must be an int >= 1, got 0"),
        ({"prefix": "a b"}, "['prefix'] must be 1-64 ASCII letters"),
        ({"hosts": "redis://x"}, "['hosts'] must be a non-empty list"),
        ({"layer": "nope"}, "no CHANNEL_LAYERS alias 'nope'"),
    ],
)
def test_bad_options_raise_naming_the_option(
    settings: Any, server: RedisServer, options: dict[str, Any], message: str
) -> None:
    params = {
        "BACKEND": "headrace.tasks.backends.redis.RedisTaskBackend",
        "QUEUES": ["default"],
        "OPTIONS": options,
    }
    with pytest.raises(ConfigurationError) as raised:
        RedisTaskBackend("default", params)
    assert message in str(raised.value)


def test_a_queue_name_unfit_for_a_key_is_refused(server: RedisServer) -> None:
    params = {
        "BACKEND": "headrace.tasks.backends.redis.RedisTaskBackend",
        "QUEUES": ["good", "bad{tag}"],
        "OPTIONS": {"hosts": [server.url]},
    }
    with pytest.raises(ConfigurationError, match=r"'bad\{tag\}'"):
        RedisTaskBackend("default", params)


def test_an_unknown_or_malformed_result_id_does_not_exist(
    settings: Any, server: RedisServer, mark: str
) -> None:
    from django.tasks.exceptions import TaskResultDoesNotExist

    use_redis(settings, server, mark)
    for bad in ("no-such-job", "x" * 81, "a:b*", "{default}"):
        with pytest.raises(TaskResultDoesNotExist):
            tasks.record.get_result(bad)
