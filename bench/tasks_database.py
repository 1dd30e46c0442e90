"""Database task backend benchmark: headrace's DatabaseTaskBackend against procrastinate 3.x.

Both run on the same private PostgreSQL server, which this script initdb's in a temporary
directory (durable: fsync on, the server's default settings but the port and socket) and stops
afterwards; each system has its own database on it.

Throughput: fill the queue with ``--jobs`` no-op async tasks, start ONE worker process
(``manage.py runworker --tasks`` / ``procrastinate worker``, both with ``--concurrency``), and
watch the count of finished jobs; the rate is measured between 10 % and 90 % of the jobs, so
process start-up and the tail do not count.

Latency: with an idle worker process waiting (LISTEN on both), enqueue ``--latency-jobs`` jobs
one at a time, a few milliseconds apart, each in its own transaction; enqueue -> start is the
job's start time minus its enqueue time, both from the database's clock (headrace's result
rows; procrastinate's ``procrastinate_events``).

    python bench/tasks_database.py                 # 20,000 jobs, both systems
    python bench/tasks_database.py --jobs 3000     # a smoke test

Prints JSON: tasks per second, and per CPU-second of the worker process and of worker plus
server (steadier than wall-clock rates on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from tests.postgres_server import PostgresServer  # noqa: E402


def _env(server: PostgresServer) -> dict[str, str]:
    return {
        **os.environ,
        "BENCH_PG_HOST": str(server.directory),
        "BENCH_PG_PORT": str(server.port),
        "BENCH_PG_NAME": "bench_headrace",
        "BENCH_PROCRASTINATE_DB": "bench_procrastinate",
        "DJANGO_SETTINGS_MODULE": "bench._tasks_database_settings",
        "PYTHONPATH": f"{ROOT}:{ROOT / 'src'}",
    }


def start_worker(system: str, server: PostgresServer, concurrency: int) -> subprocess.Popen[bytes]:
    if system == "headrace":
        command = [
            sys.executable,
            "-m",
            "django",
            "runworker",
            "--tasks",
            "--concurrency",
            str(concurrency),
        ]
    else:
        command = [
            sys.executable,
            "-m",
            "procrastinate",
            "--app=bench._tasks_database_app.app",
            "worker",
            "--concurrency",
            str(concurrency),
        ]
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=_env(server),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


COUNT = {
    "headrace": "SELECT count(*) FROM headrace_taskjobresult WHERE state = 'SUCCESSFUL'",
    "procrastinate": "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'",
}
DATABASE = {"headrace": "bench_headrace", "procrastinate": "bench_procrastinate"}


def reset(system: str, server: PostgresServer) -> None:
    with server.connect(DATABASE[system]) as conn:
        if system == "headrace":
            conn.execute(
                "TRUNCATE headrace_taskjob, headrace_taskjobresult, headrace_taskdeadletter, "
                "headrace_taskworkerheartbeat"
            )
        else:
            conn.execute("TRUNCATE procrastinate_jobs CASCADE")


def fill(system: str, count: int) -> None:
    if system == "headrace":
        from bench._tasks_database_app import noop
        from django.db import transaction

        with transaction.atomic():
            for _ in range(count):
                noop.enqueue()
        return
    from bench._tasks_database_app import app, procrastinate_noop

    with app.open():
        for start in range(0, count, 1000):
            procrastinate_noop.batch_defer(*[{} for _ in range(min(1000, count - start))])


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def server_cpu_seconds(server: PostgresServer) -> float:
    """CPU time of the postgres server and its backends (live ones)."""
    assert server.process is not None
    root = server.process.pid
    total = cpu_seconds(root)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == root:
            total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


def throughput(
    system: str, server: PostgresServer, jobs: int, concurrency: int
) -> dict[str, float]:
    reset(system, server)
    fill(system, jobs)
    low, high = int(jobs * 0.1), int(jobs * 0.9)
    worker = start_worker(system, server, concurrency)
    marks: dict[int, float] = {}
    cpu: dict[int, tuple[float, float]] = {}
    try:
        with server.connect(DATABASE[system]) as conn:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                [(done,)] = conn.execute(COUNT[system]).fetchall()
                now = time.monotonic()
                if done >= low and low not in marks:
                    marks[low] = now
                    cpu[low] = (cpu_seconds(worker.pid), server_cpu_seconds(server))
                    low_done = done
                if done >= high:
                    marks[high] = now
                    cpu[high] = (cpu_seconds(worker.pid), server_cpu_seconds(server))
                    high_done = done
                    break
                time.sleep(0.02)
            else:
                raise RuntimeError(f"{system}: only {done} of {jobs} jobs done")
    finally:
        stop(worker)
    done = high_done - low_done
    worker_cpu = cpu[high][0] - cpu[low][0]
    server_cpu = cpu[high][1] - cpu[low][1]
    return {
        "tasks_per_second": round(done / (marks[high] - marks[low])),
        "tasks_per_worker_cpu_second": round(done / worker_cpu) if worker_cpu else 0,
        "tasks_per_cpu_second_worker_and_server": round(done / (worker_cpu + server_cpu))
        if worker_cpu + server_cpu
        else 0,
    }


def latency(system: str, server: PostgresServer, count: int) -> dict[str, float]:
    reset(system, server)
    worker = start_worker(system, server, 10)
    try:
        time.sleep(3)  # start-up: the worker is idle and listening afterwards
        if system == "headrace":
            from bench._tasks_database_app import noop

            ids = []
            for _ in range(count):
                ids.append(noop.enqueue().id)
                time.sleep(0.005)
        else:
            from bench._tasks_database_app import app, procrastinate_noop

            with app.open():
                for _ in range(count):
                    procrastinate_noop.defer()
                    time.sleep(0.005)
        with server.connect(DATABASE[system]) as conn:
            deadline = time.monotonic() + 60
            while True:
                [(done,)] = conn.execute(COUNT[system]).fetchall()
                if done >= count or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            if system == "headrace":
                rows = conn.execute(
                    "SELECT (started_at - enqueued_at) * 1000 FROM headrace_taskjobresult"
                ).fetchall()
            else:
                rows = conn.execute(
                    "SELECT extract(epoch FROM s.at - d.at) * 1000 FROM procrastinate_events d "
                    "JOIN procrastinate_events s ON s.job_id = d.job_id "
                    "WHERE d.type = 'deferred' AND s.type = 'started'"
                ).fetchall()
    finally:
        stop(worker)
    values = sorted(float(v) for (v,) in rows)
    return {
        "jobs": len(values),
        "p50_ms": round(statistics.median(values), 2),
        "p99_ms": round(values[min(len(values) - 1, int(len(values) * 0.99))], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--latency-jobs", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--systems", nargs="+", default=["headrace", "procrastinate"])
    options = parser.parse_args()

    server = PostgresServer(durable=True)
    try:
        server.start()
        for name in DATABASE.values():
            server.create_database(name)
        os.environ.update(_env(server))
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0)
        if "procrastinate" in options.systems:
            from bench._tasks_database_app import app

            with app.open():
                app.schema_manager.apply_schema()
        report: dict[str, Any] = {
            "jobs": options.jobs,
            "concurrency": options.concurrency,
            "postgres": subprocess.run(
                [str(server.bin / "postgres"), "--version"], capture_output=True, text=True
            ).stdout.strip(),
        }
        for system in options.systems:
            report[system] = {
                **throughput(system, server, options.jobs, options.concurrency),
                "enqueue_to_start": latency(system, server, options.latency_jobs),
            }
        if {"headrace", "procrastinate"} <= set(options.systems):
            report["headrace_vs_procrastinate"] = {
                key: round(report["headrace"][key] / report["procrastinate"][key], 2)
                for key in (
                    "tasks_per_second",
                    "tasks_per_worker_cpu_second",
                    "tasks_per_cpu_second_worker_and_server",
                )
                if report["procrastinate"][key]
            }
        print(json.dumps(report, indent=2))
    finally:
        from django.db import connections

        connections.close_all()
        server.close()


if __name__ == "__main__":
    main()
