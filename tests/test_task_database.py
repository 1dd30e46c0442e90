"""What the database task backend adds to the conformance suite: transactional enqueue, leases
(renewal, lapse, stale acknowledgements, dead letters), LISTEN/NOTIFY wake-ups, the admin.

On a real PostgreSQL server the fixtures start (``tests/postgres_server.py``) and on an SQLite
file. Leases are tested on a :class:`~headrace.layers.ManualClock`; the maintenance a worker's
heartbeat runs is called directly, so nothing sleeps.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connections, transaction
from django.tasks import TaskResultStatus, task_backends
from django.tasks.exceptions import TaskResultDoesNotExist
from django.test import override_settings

from headrace.layers import ManualClock
from headrace.tasks import JobState
from headrace.tasks.backends.database import DatabaseTaskBackend
from headrace.tasks.backends.database.models import (
    TaskDeadLetter,
    TaskJob,
    TaskJobResult,
    TaskWorkerHeartbeat,
)
from headrace.tasks.exceptions import LeaseLost
from headrace.tasks.states import Move
from headrace.tasks.worker import TaskWorker
from tests.task_backends import POSTGRES_ALIAS as POSTGRES
from tests.task_backends import QUEUES, SQLITE_ALIAS
from tests.taskapp import tasks

WAIT = 5
LEASE = 30.0


def entry(database: str, **options: Any) -> dict[str, Any]:
    return {
        "BACKEND": "headrace.tasks.backends.database.DatabaseTaskBackend",
        "QUEUES": QUEUES,
        "OPTIONS": {"database": database, **options},
    }


@pytest.fixture(params=["postgres", "sqlite"])
def database(request: pytest.FixtureRequest) -> str:
    alias: str = request.getfixturevalue(f"task_{request.param}")
    return alias


@pytest.fixture
def two_backends(
    database: str, settings: Any, clock: ManualClock
) -> Iterator[tuple[DatabaseTaskBackend, DatabaseTaskBackend]]:
    """Two backends on the same tables with separate stores, like two processes."""
    settings.TASKS = {
        "default": entry(database, clock=clock, lease=LEASE, max_deliveries=2, poll_interval=60),
        "other": entry(database, clock=clock, lease=LEASE, poll_interval=60),
    }
    tasks.CALLS.clear()
    tasks.ASYNC_GATES.clear()
    first, second = task_backends["default"], task_backends["other"]
    assert isinstance(first, DatabaseTaskBackend)
    assert isinstance(second, DatabaseTaskBackend)
    return first, second


@pytest.fixture
async def run_worker(
    two_backends: tuple[DatabaseTaskBackend, DatabaseTaskBackend],
) -> AsyncIterator[Callable[..., TaskWorker]]:
    started: list[tuple[TaskWorker, asyncio.Future[None]]] = []

    def make(backend: DatabaseTaskBackend | None = None, **options: Any) -> TaskWorker:
        worker = TaskWorker(backend or two_backends[0], jitter=lambda cap: cap, **options)
        started.append((worker, asyncio.ensure_future(worker.run())))
        return worker

    yield make
    for gate in tasks.ASYNC_GATES.values():
        gate.set()
    for worker, run in started:
        worker.stop(now=True)
        await asyncio.wait_for(run, WAIT)


def test_the_migrations_match_the_models() -> None:
    call_command("makemigrations", "headrace", "--check", "--dry-run", verbosity=0)


# -- transactional enqueue -------------------------------------------------------------------


@pytest.fixture
def db_clock_backend(database: str, settings: Any) -> DatabaseTaskBackend:
    """A backend on the database's own clock."""
    settings.TASKS = {"default": entry(database)}
    backend = task_backends["default"]
    assert isinstance(backend, DatabaseTaskBackend)
    return backend


def _visible_elsewhere(database: str, job_id: str) -> bool:
    """Whether another connection sees the job (a worker would)."""
    other = connections.create_connection(database)
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM headrace_taskjob WHERE job_id = %s", [job_id])
            return bool(cursor.fetchone()[0])
    finally:
        other.close()


def test_a_job_enqueued_in_a_committed_transaction_exists_from_the_commit(
    db_clock_backend: DatabaseTaskBackend, database: str
) -> None:
    with transaction.atomic(using=database):
        result = tasks.add.enqueue(1, 2)
        assert not _visible_elsewhere(database, result.id)
        assert tasks.add.get_result(result.id).status == TaskResultStatus.READY
    assert _visible_elsewhere(database, result.id)
    fetched = tasks.add.get_result(result.id)
    assert fetched.args == [1, 2]
    assert fetched.enqueued_at is not None


def test_a_job_enqueued_in_a_rolled_back_transaction_never_exists(
    db_clock_backend: DatabaseTaskBackend, database: str
) -> None:
    enqueued = []
    with pytest.raises(ZeroDivisionError), transaction.atomic(using=database):  # noqa: PT012
        enqueued.append(tasks.add.enqueue(1, 2))
        _ = 1 / 0
    [result] = enqueued
    assert not _visible_elsewhere(database, result.id)
    with pytest.raises(TaskResultDoesNotExist):
        tasks.add.get_result(result.id)
    assert db_clock_backend.ready_count(QUEUES) == 0


async def test_times_come_from_the_database_clock(db_clock_backend: DatabaseTaskBackend) -> None:
    result = tasks.record.using(countdown=3600).enqueue("later")
    job = db_clock_backend.get_job(result.id)
    assert job is not None
    assert job.due_at - job.enqueued_at == pytest.approx(3600)
    assert db_clock_backend.ready_count(QUEUES) == 0


# -- waking idle workers -----------------------------------------------------------------------


@pytest.mark.parametrize("database", ["postgres"], indirect=True)  # SQLite has no NOTIFY
async def test_an_enqueue_from_elsewhere_wakes_an_idle_worker_without_polling(
    two_backends: tuple[DatabaseTaskBackend, DatabaseTaskBackend],
    run_worker: Callable[..., TaskWorker],
    database: str,
) -> None:
    first, _second = two_backends
    worker = run_worker(first)
    await asyncio.wait_for(worker.wait_idle(), WAIT)
    # Enqueued through the other store: only NOTIFY can wake the worker before its 60 s
    # fallback poll.
    result = tasks.add.using(backend="other").enqueue(20, 22)
    await asyncio.wait_for(result.wait(), WAIT)
    assert result.return_value == 42


# -- leases --------------------------------------------------------------------------------------


async def test_a_lapsed_lease_puts_the_job_back_with_worker_lost_and_a_late_ack_is_ignored(
    two_backends: tuple[DatabaseTaskBackend, DatabaseTaskBackend],
    run_worker: Callable[..., TaskWorker],
    clock: ManualClock,
) -> None:
    first, second = two_backends
    result = tasks.add.enqueue(2, 2)
    lost = second.claim_nowait(QUEUES, "a-worker-that-will-hang")  # no heartbeat runs for it
    assert lost is not None
    assert lost.id == result.id
    clock.advance(LEASE - 1)
    assert first.maintain() == 0  # not lapsed yet
    clock.advance(2)
    assert first.maintain() == 1
    back = tasks.add.get_result(result.id)
    assert back.status == TaskResultStatus.READY
    assert [e.exception_class_path for e in back.errors] == ["headrace.tasks.exceptions.WorkerLost"]
    worker = run_worker(first)
    await asyncio.wait_for(result.wait(), WAIT)
    assert result.return_value == 4
    assert result.worker_ids == ["a-worker-that-will-hang", worker.worker_id]
    # The hung worker wakes up and reports: ignored, counted, the result unchanged.
    with pytest.raises(LeaseLost, match="ignored"):
        second.move_job(result.id, Move.SUCCEED, return_value=99)
    assert second.statistics().stale_acks == 1
    assert tasks.add.get_result(result.id).return_value == 4


async def test_a_job_whose_worker_is_lost_max_deliveries_times_is_dead_lettered(
    two_backends: tuple[DatabaseTaskBackend, DatabaseTaskBackend],
    run_worker: Callable[..., TaskWorker],
    clock: ManualClock,
) -> None:
    first, second = two_backends  # first: max_deliveries=2
    result = tasks.add.enqueue(5, 5)
    for attempt in range(2):
        assert second.claim_nowait(QUEUES, f"doomed-{attempt}") is not None
        clock.advance(LEASE + 1)
        assert first.maintain() == 1
    dead = tasks.add.get_result(result.id)
    assert dead.status == TaskResultStatus.FAILED
    assert dead.errors[-1].exception_class_path == "headrace.tasks.exceptions.WorkerLost"
    assert len(dead.errors) == 2
    letter = await asyncio.to_thread(
        TaskDeadLetter.objects.using(first.database).get, job_id=result.id
    )
    assert letter.losses == 2
    assert first.statistics().dead == 1
    # A retry is a new job (the dead one stays FAILED: the state table has no way back).
    new_id = await asyncio.to_thread(first.retry_dead, letter.pk)
    assert new_id != result.id
    assert await asyncio.to_thread(first.retry_dead, letter.pk) == new_id  # once only
    run_worker(first)
    retried = tasks.add.get_result(new_id)
    await asyncio.wait_for(retried.wait(), WAIT)
    assert retried.return_value == 10
    assert first.statistics().dead == 0


async def test_heartbeats_keep_a_long_job_leased_so_it_runs_once(
    two_backends: tuple[DatabaseTaskBackend, DatabaseTaskBackend],
    run_worker: Callable[..., TaskWorker],
    clock: ManualClock,
) -> None:
    first, second = two_backends
    tasks.ASYNC_GATES["long"] = asyncio.Event()
    result = tasks.held_async.enqueue("long")
    worker = run_worker(first)
    async with asyncio.timeout(WAIT):
        while not worker.statistics().running:
            await asyncio.sleep(0)
    for _ in range(20):  # ten leases long
        clock.advance(LEASE / 2)
        first.renew_leases()  # what the heartbeat thread does every lease / 3
        assert second.maintain() == 0  # another process finds nothing lapsed
    tasks.ASYNC_GATES["long"].set()
    await asyncio.wait_for(result.wait(), WAIT)
    assert result.attempts == 1
    assert result.errors == []


async def test_a_cancel_from_another_process_reaches_the_running_job(
    two_backends: tuple[DatabaseTaskBackend, DatabaseTaskBackend],
    run_worker: Callable[..., TaskWorker],
    database: str,
) -> None:
    first, second = two_backends
    tasks.ASYNC_GATES["c"] = asyncio.Event()
    result = tasks.held_async.enqueue("c")
    worker = run_worker(first)
    async with asyncio.timeout(WAIT):
        while not worker.statistics().running:
            await asyncio.sleep(0)
    assert second.cancel(result.id) is True  # flags the row (and NOTIFY on PostgreSQL)
    if database == SQLITE_ALIAS:
        first.renew_leases()  # SQLite: the next heartbeat brings the flag
    await asyncio.wait_for(result.wait(), WAIT)
    assert result.state is JobState.CANCELLED


def test_rows_move_from_jobs_to_results(db_clock_backend: DatabaseTaskBackend) -> None:
    result = tasks.record.enqueue("x")
    assert result.cancel() is True
    database = db_clock_backend.database
    assert not TaskJob.objects.using(database).filter(job_id=result.id).exists()
    row = TaskJobResult.objects.using(database).get(job_id=result.id)
    assert row.state == JobState.CANCELLED.value
    assert row.result_expires_at > row.finished_at


def test_bad_options_are_reported_by_the_system_check(database: str, settings: Any) -> None:
    settings.TASKS = {"default": entry(database, lease=0, max_deliveries="3")}
    messages = task_backends["default"].check()
    text = " ".join(m.msg for m in messages)
    assert "lease must be a positive number, got 0" in text
    assert "max_deliveries must be a positive int, got '3'" in text
    settings.TASKS = {"default": entry(database)}
    ids = [m.id for m in task_backends["default"].check()]
    assert ids == (["headrace.I103"] if database == SQLITE_ALIAS else [])


# -- the admin -----------------------------------------------------------------------------------


@pytest.fixture
def admin_client(db: Any, client: Any, settings: Any) -> Any:
    from django.contrib.auth.models import User

    settings.TASKS = {"default": entry("default")}
    User.objects.create_superuser("admin", "admin@example.com", "pw")
    client.login(username="admin", password="pw")
    return client


@override_settings(ROOT_URLCONF="tests.adminurls")
def test_the_admin_lists_jobs_read_only_and_cancels_them(admin_client: Any) -> None:
    result = tasks.record.enqueue("from the admin")
    page = admin_client.get("/admin/headrace/taskjob/")
    assert page.status_code == 200
    assert result.id in page.content.decode()
    change = admin_client.get(f"/admin/headrace/taskjob/{TaskJob.objects.get().pk}/change/")
    assert change.status_code == 200
    assert b'name="_save"' not in change.content  # read-only: no save button
    assert admin_client.get("/admin/headrace/taskjob/add/").status_code == 403
    response = admin_client.post(
        "/admin/headrace/taskjob/",
        {"action": "cancel", "_selected_action": [TaskJob.objects.get().pk]},
        follow=True,
    )
    assert "1 job(s) cancelled" in response.content.decode()
    assert tasks.record.get_result(result.id).state is JobState.CANCELLED
    results = admin_client.get("/admin/headrace/taskjobresult/")
    assert result.id in results.content.decode()


@override_settings(ROOT_URLCONF="tests.adminurls")
def test_the_admin_retries_dead_letters_and_failed_results(admin_client: Any) -> None:
    backend = task_backends["default"]
    assert isinstance(backend, DatabaseTaskBackend)
    letter = TaskDeadLetter.objects.create(
        job_id="dead-one",
        task_path="tests.taskapp.tasks.add",
        queue="default",
        args=[1, 2],
        kwargs={},
        errors=[],
        dead_at=0,
    )
    page = admin_client.get("/admin/headrace/taskdeadletter/")
    assert "dead-one" in page.content.decode()
    admin_client.post(
        "/admin/headrace/taskdeadletter/",
        {"action": "retry", "_selected_action": [letter.pk]},
    )
    letter.refresh_from_db()
    assert letter.retried_as
    assert tasks.add.get_result(letter.retried_as).args == [1, 2]
    failed = tasks.record.enqueue("again")
    failed.cancel()
    admin_client.post(
        "/admin/headrace/taskjobresult/",
        {"action": "retry", "_selected_action": [TaskJobResult.objects.get(job_id=failed.id).pk]},
    )
    assert TaskJob.objects.filter(task_path="tests.taskapp.tasks.record").count() == 1


@pytest.mark.slow
async def test_a_worker_reconnects_after_its_connections_are_killed(
    task_postgres: str, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.TASKS = {  # real clocks: the worker's retry backoff runs on them
        "default": entry(task_postgres, poll_interval=60),
        "other": entry(task_postgres),
    }
    first = task_backends["default"]
    assert isinstance(first, DatabaseTaskBackend)
    worker = TaskWorker(first)
    run = asyncio.ensure_future(worker.run())
    await asyncio.wait_for(worker.wait_idle(), WAIT)
    ours = first._store.worker.conn.info.backend_pid
    killer = await asyncio.to_thread(_terminate_listener_and, ours)
    assert killer >= 2  # the worker's connection and the listener's (and old stores' ones)
    result = tasks.add.using(backend="other").enqueue(3, 4)
    try:
        await asyncio.wait_for(result.wait(), WAIT)
    finally:
        worker.stop()
        await asyncio.wait_for(run, WAIT)
    assert result.return_value == 7
    assert "listening for task notifications again" in caplog.text


def _terminate_listener_and(pid: int) -> int:
    other = connections.create_connection(POSTGRES)
    try:
        with other.cursor() as cursor:
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE pid = %s OR query LIKE 'LISTEN headrace_tasks%%'",
                [pid],
            )
            return int(cursor.fetchone()[0])
    finally:
        other.close()


async def test_a_worker_shows_in_the_heartbeat_table_while_it_runs(
    two_backends: tuple[DatabaseTaskBackend, DatabaseTaskBackend],
    run_worker: Callable[..., TaskWorker],
    database: str,
) -> None:
    first, _ = two_backends
    worker = run_worker(first)
    await asyncio.wait_for(worker.wait_idle(), WAIT)
    rows = await asyncio.to_thread(_heartbeats, database)
    assert rows == [(worker.worker_id, QUEUES)]
    worker.stop()
    async with asyncio.timeout(WAIT):
        while await asyncio.to_thread(_heartbeats, database):
            await asyncio.sleep(0.01)


def _heartbeats(database: str) -> list[tuple[str, list[str]]]:
    return [
        (row.worker_id, row.queues) for row in TaskWorkerHeartbeat.objects.using(database).all()
    ]


async def test_purge_drops_expired_results_and_silent_workers(
    two_backends: tuple[DatabaseTaskBackend, DatabaseTaskBackend],
    run_worker: Callable[..., TaskWorker],
    clock: ManualClock,
    database: str,
) -> None:
    first, _ = two_backends
    result = tasks.short_lived.enqueue()  # result_ttl=100
    worker = run_worker(first)
    await asyncio.wait_for(result.wait(), WAIT)
    worker.stop()
    first._register_worker("a-silent-worker", QUEUES)
    clock.advance(10 * LEASE + 1)
    first.purge()
    assert not await asyncio.to_thread(
        TaskJobResult.objects.using(database).filter(job_id=result.id).exists
    )
    assert "a-silent-worker" not in [w for w, _ in await asyncio.to_thread(_heartbeats, database)]


def test_enqueue_inside_atomic_is_not_warned_about_here(
    db_clock_backend: DatabaseTaskBackend,
    database: str,
    settings: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings.DEBUG = True  # the other backends warn: their jobs may run before the commit
    with caplog.at_level("WARNING", logger="headrace.tasks"), transaction.atomic(using=database):
        tasks.add.enqueue(1, 1)
    assert "enqueue_on_commit" not in caplog.text


# -- claims and acknowledgements in batches ------------------------------------------------------


async def test_claim_more_never_returns_more_than_asked(
    two_backends: tuple[DatabaseTaskBackend, DatabaseTaskBackend],
) -> None:
    first, _ = two_backends
    ids = [tasks.add.enqueue(i, i).id for i in range(5)]
    urgent = tasks.urgent.enqueue("first").id  # a higher priority: claimed first
    assert await first.claim_more(QUEUES, "w", 0) == []
    batch = await first.claim_more(QUEUES, "w", 3)
    assert [job.id for job in batch] == [urgent, *ids[:2]]  # in claim order
    assert all(job.state is JobState.RUNNING for job in batch)
    rest = await first.claim_more(QUEUES, "w", 10)
    assert [job.id for job in rest] == ids[2:]
    assert await first.claim_more(QUEUES, "w", 10) == []
    assert first.statistics().held == 6


async def test_a_batch_claim_hands_each_job_to_exactly_one_of_two_competing_workers(
    two_backends: tuple[DatabaseTaskBackend, DatabaseTaskBackend],
) -> None:
    ids = {tasks.add.enqueue(i, i).id for i in range(60)}

    def claim_all(backend: DatabaseTaskBackend, worker_id: str) -> list[str]:
        async def claims() -> list[str]:  # on a loop of its own: the backend's connection
            got: list[str] = []
            while batch := await backend.claim_more(QUEUES, worker_id, 4):
                assert len(batch) <= 4
                got += [job.id for job in batch]
            return got

        return asyncio.run(claims())

    first, second = two_backends  # two stores: two connections, like two processes
    mine, theirs = await asyncio.gather(
        asyncio.to_thread(claim_all, first, "a"), asyncio.to_thread(claim_all, second, "b")
    )
    assert len(mine) + len(theirs) == len(ids)
    assert set(mine) | set(theirs) == ids
    assert not set(mine) & set(theirs)


async def test_acks_are_batched_and_written_before_the_loops_next_call(
    two_backends: tuple[DatabaseTaskBackend, DatabaseTaskBackend],
    database: str,
) -> None:
    first, _ = two_backends
    results = [tasks.add.enqueue(i, 1) for i in range(3)]
    job = await first.claim(QUEUES, "w")
    jobs = [job, *await first.claim_more(QUEUES, "w", 5)]
    assert [j.id for j in jobs] == [r.id for r in results]
    done = [first.move_job(j.id, Move.SUCCEED, return_value=j.args[0] + 1) for j in jobs]
    # The jobs as they now are, at once; the database has them after this turn of the loop.
    assert [(j.state, j.return_value) for j in done] == [
        (JobState.SUCCESSFUL, i + 1) for i in range(3)
    ]
    assert first.statistics().held == 0  # (statistics() reads the database: acks first)
    for j in jobs:
        stored = first.get_job(j.id)
        assert stored is not None
        assert (stored.state, stored.return_value) == (JobState.SUCCESSFUL, j.args[0] + 1)
    # An ack alone is written at the end of the turn, without another call from the loop.
    failing = tasks.add.enqueue(0, 0)
    claimed = await first.claim(QUEUES, "w")
    assert claimed.id == failing.id
    first.move_job(claimed.id, Move.FAIL, errors=(*claimed.errors, _an_error()))
    await asyncio.sleep(0)
    stored_row = await asyncio.to_thread(
        TaskJobResult.objects.using(database).get, job_id=failing.id
    )
    assert stored_row.state == JobState.FAILED.value
    assert [e["exception_class_path"] for e in stored_row.errors] == ["builtins.ValueError"]
    assert first.statistics().stale_acks == 0


async def test_a_batched_ack_keeps_the_progress_the_job_reported(
    two_backends: tuple[DatabaseTaskBackend, DatabaseTaskBackend],
) -> None:
    first, _ = two_backends
    result = tasks.add.enqueue(1, 1)
    job = await first.claim(QUEUES, "w")
    first.set_progress(job.id, {"done": 1})
    done = first.move_job(job.id, Move.SUCCEED, return_value=2)
    assert done.progress == {"done": 1}
    stored = first.get_job(result.id)
    assert stored is not None
    assert (stored.state, stored.progress) == (JobState.SUCCESSFUL, {"done": 1})


def _an_error() -> Any:
    from headrace.tasks.jobs import JobError

    return JobError(exception_class_path="builtins.ValueError", traceback="ValueError: no\n")


async def test_a_batched_ack_with_a_stale_token_is_ignored_and_counted(
    two_backends: tuple[DatabaseTaskBackend, DatabaseTaskBackend],
    database: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, _ = two_backends
    result = tasks.add.enqueue(1, 1)
    job = await first.claim(QUEUES, "w")
    # The lease passes to another worker behind this process's back (a clock that jumped:
    # nothing this process could see), so the ack goes into the batch and is found stale there.
    await asyncio.to_thread(_steal_lease, database, job.id)
    with caplog.at_level("WARNING", logger="headrace.tasks"):
        first.move_job(job.id, Move.SUCCEED, return_value=2)
        stored = first.get_job(job.id)  # writes the ack first
    assert stored is not None
    assert stored.state is JobState.RUNNING  # the other worker's attempt, untouched
    assert first.statistics().stale_acks == 1
    assert first.statistics().held == 0
    assert f"task {result.id}: this worker's outcome (succeed) was ignored" in caplog.text


def _steal_lease(database: str, job_id: str) -> None:
    TaskJob.objects.using(database).filter(job_id=job_id).update(
        lease_token="another", lease_worker="another-worker"
    )


async def test_a_lease_found_lost_is_settled_at_once_and_raises_lease_lost(
    two_backends: tuple[DatabaseTaskBackend, DatabaseTaskBackend],
    clock: ManualClock,
) -> None:
    first, second = two_backends
    result = tasks.add.enqueue(1, 1)
    job = await first.claim(QUEUES, "w")
    clock.advance(LEASE + 1)  # no heartbeat: the lease lapses, the job goes to another worker
    assert second.maintain() == 1
    assert second.claim_nowait(QUEUES, "other") is not None
    with pytest.raises(LeaseLost):
        first.move_job(job.id, Move.SUCCEED, return_value=2)
    assert first.statistics().stale_acks == 1
    assert first.get_job(result.id).state is JobState.RUNNING  # type: ignore[union-attr]


@pytest.mark.slow
@pytest.mark.parametrize("database", ["postgres"], indirect=True)  # a connection to kill
async def test_a_failing_ack_write_is_logged_and_retried_and_nothing_is_lost(
    database: str, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.TASKS = {"default": entry(database, poll_interval=60)}  # real clocks: backoff
    backend = task_backends["default"]
    assert isinstance(backend, DatabaseTaskBackend)
    result = tasks.add.enqueue(2, 3)
    job = await backend.claim(QUEUES, "w")
    await asyncio.to_thread(_terminate_listener_and, backend._store.worker.conn.info.backend_pid)
    recovered = threading.Event()
    watch = _OnMessage("writing task acknowledgements works again", recovered)
    logging.getLogger("headrace.tasks").addHandler(watch)
    try:
        with caplog.at_level("WARNING", logger="headrace.tasks"):
            backend.move_job(job.id, Move.SUCCEED, return_value=5)
            await asyncio.sleep(0)  # the end of the turn: the write fails on the dead connection
            assert "writing task acknowledgements failed" in caplog.text
            # The retry, after a pause, on a new connection.
            assert await asyncio.to_thread(recovered.wait, WAIT)
    finally:
        logging.getLogger("headrace.tasks").removeHandler(watch)
    assert await asyncio.to_thread(
        TaskJobResult.objects.using(database).filter(job_id=result.id).exists
    )
    assert tasks.add.get_result(result.id).return_value == 5
    assert backend.statistics().held == 0


@pytest.mark.parametrize("database", ["postgres"], indirect=True)  # SQLite stores any JSON
async def test_an_ack_the_database_refuses_is_logged_and_skipped_and_the_others_written(
    two_backends: tuple[DatabaseTaskBackend, DatabaseTaskBackend],
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, _ = two_backends
    results = [tasks.add.enqueue(i, 0) for i in range(3)]
    jobs = [await first.claim(QUEUES, "w"), *await first.claim_more(QUEUES, "w", 2)]
    values = [1, "nul \x00 in jsonb", 3]  # PostgreSQL's jsonb cannot hold U+0000
    with caplog.at_level("WARNING", logger="headrace.tasks"):
        for job, value in zip(jobs, values, strict=True):
            first.move_job(job.id, Move.SUCCEED, return_value=value)
        stored = [first.get_job(r.id) for r in results]  # writes the batch first
    assert [(j.state, j.return_value) for j in stored if j is not None] == [
        (JobState.SUCCESSFUL, 1),
        (JobState.RUNNING, None),  # its lease lapses and it runs again
        (JobState.SUCCESSFUL, 3),
    ]
    assert f"task {results[1].id}: the database refused this worker's outcome" in caplog.text
    assert first.statistics().held == 0
    assert first.statistics().stale_acks == 0


class _OnMessage(logging.Handler):
    """Sets ``event`` when a record whose message contains ``text`` is logged."""

    def __init__(self, text: str, event: threading.Event) -> None:
        super().__init__(logging.DEBUG)
        self.text = text
        self.event = event

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.event.set()
