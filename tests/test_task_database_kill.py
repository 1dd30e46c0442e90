"""The kill test on PostgreSQL: 3 worker processes, 3,000 tasks that record their number, a
worker SIGKILLed every 2 s and replaced. Every number is recorded at least once; a number
recorded twice belongs to a job that was in flight at a kill, whose result shows WorkerLost.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from django.db import connections, transaction
from django.tasks import TaskResultStatus, task_backends

from tests.task_kill_tasks import record_id

ROOT = Path(__file__).resolve().parent.parent
TASKS = 3000
WORKERS = 3


def start_worker(database: dict[str, Any]) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.task_kill_settings",
        "HEADRACE_PG_NAME": database["NAME"],
        "HEADRACE_PG_HOST": database["HOST"],
        "HEADRACE_PG_PORT": str(database["PORT"]),
        "PYTHONPATH": str(ROOT),
    }
    code = (
        "import django; django.setup(); from django.core.management import call_command; "
        "call_command('runworker', '--tasks', '--concurrency', '8', verbosity=0)"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sigkilled_workers_lose_no_job_and_rerun_only_jobs_in_flight(
    task_postgres: str, settings: Any
) -> None:
    settings.TASKS = {
        "default": {
            "BACKEND": "headrace.tasks.backends.database.DatabaseTaskBackend",
            "QUEUES": ["default"],
            "OPTIONS": {"database": task_postgres},
        }
    }
    connection = connections[task_postgres]
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS kill_record (n integer NOT NULL)")
        cursor.execute("TRUNCATE kill_record")
    with transaction.atomic(using=task_postgres):
        ids = {record_id.enqueue(n).id: n for n in range(TASKS)}
    workers = [start_worker(connection.settings_dict) for _ in range(WORKERS)]
    kills = 0
    try:
        deadline = time.monotonic() + 90
        next_kill = None  # the first kill 2 s after the first job finished
        while True:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*) FROM headrace_taskjobresult WHERE job_id = ANY(%s)",
                    [list(ids)],
                )
                finished = cursor.fetchone()[0]
            if finished == TASKS:
                break
            assert time.monotonic() < deadline, f"only {finished} of {TASKS} finished"
            if next_kill is None and finished:
                next_kill = time.monotonic() + 2
            if next_kill is not None and time.monotonic() >= next_kill:
                victim = workers.pop(kills % WORKERS)
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                kills += 1
                workers.insert(kills % WORKERS, start_worker(connection.settings_dict))
                next_kill += 2
            time.sleep(0.05)  # polling other processes' progress, not a correctness wait
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()
    assert kills >= 3
    with connection.cursor() as cursor:
        cursor.execute("SELECT n FROM kill_record")
        recorded = Counter(n for (n,) in cursor.fetchall())
    assert set(recorded) == set(range(TASKS))  # every id at least once
    backend = task_backends["default"]
    by_number = {n: job_id for job_id, n in ids.items()}
    twice = [n for n, count in recorded.items() if count > 1]
    for n in twice:
        result = backend.get_result(by_number[n])
        assert any(
            e.exception_class_path == "headrace.tasks.exceptions.WorkerLost" for e in result.errors
        ), f"task {n} ran {recorded[n]} times without a lost worker"
    results = [backend.get_result(job_id) for job_id in ids]
    assert Counter(r.status for r in results) == {TaskResultStatus.SUCCESSFUL: TASKS}
    lost = [
        r for r in results if any(e.exception_class_path.endswith("WorkerLost") for e in r.errors)
    ]
    assert lost  # the kills did hit jobs in flight
    print(f"kills: {kills}, recorded twice or more: {len(twice)}")
