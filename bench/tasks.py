"""Task benchmark: the in-process backend in one process, no-op tasks.

Two figures, each on one event loop with one :class:`~headrace.tasks.worker.TaskWorker`
(its default concurrency, 100) and the in-memory backend, as ``runserver`` runs them:

- ``throughput``: ``--jobs`` no-op tasks enqueued from the loop while the worker runs them;
  tasks per second from the first ``enqueue`` until the last job has finished (each job is
  enqueued, claimed, run, and its result stored — the whole life of a job). Measured for a
  coroutine task (runs on the worker's loop) and for a plain function (runs on the worker's
  thread pool). ``..._per_cpu_s`` divides by the CPU time this process used instead of the
  wall time: on a shared machine it moves less from run to run.
- ``enqueue_to_start``: with the worker idle, one job at a time: the time from just before
  ``enqueue()`` to the first line of the task function (``perf_counter`` in both), over
  ``--samples`` jobs: p50, p90, p99.

The progress messages and the final ``task.finished`` group message go to an in-memory channel
layer with no listener, as for a job nobody watches.

    python bench/tasks.py                    # 20,000 jobs per throughput run, 2,000 samples
    python bench/tasks.py --quick            # a smoke test
    python bench/tasks.py --profile          # also cProfile the async throughput run (stderr)

Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import platform
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

os.environ["DJANGO_SETTINGS_MODULE"] = "bench._tasks_settings"

import django  # noqa: E402

django.setup()

from bench import _tasks_app as app  # noqa: E402

from headrace.tasks.worker import TaskWorker  # noqa: E402

#: The issue's goals.
GOAL_PER_S = 50_000
GOAL_P50_MS = 0.2


async def throughput(
    task: Any, jobs: int, *, profile: cProfile.Profile | None = None
) -> tuple[float, float]:
    """Tasks per second of wall time and per second of this process's CPU time: enqueue
    ``jobs`` while one worker runs them, until all have finished."""
    worker = TaskWorker("default")
    run = asyncio.ensure_future(worker.run())
    await asyncio.to_thread(worker.wait_started, 10)
    if profile is not None:
        profile.enable()
    started = time.perf_counter()
    cpu_started = time.process_time()
    for n in range(jobs):
        task.enqueue()
        if n % 500 == 499:
            await asyncio.sleep(0)  # let the worker in, as a server's loop would
    await worker.wait_idle()  # every job claimed, run and settled
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    if profile is not None:
        profile.disable()
    worker.stop()
    await run
    return jobs / elapsed, jobs / cpu


async def enqueue_to_start(samples: int) -> list[float]:
    """Milliseconds from before ``enqueue()`` to the task's first line, one job at a time."""
    worker = TaskWorker("default")
    run = asyncio.ensure_future(worker.run())
    await asyncio.to_thread(worker.wait_started, 10)
    delays: list[float] = []
    for _ in range(samples + 50):
        await worker.wait_idle()
        app.started = asyncio.Event()
        before = time.perf_counter()
        app.stamp_start.enqueue()
        await app.started.wait()
        delays.append((app.started_at - before) * 1000)
    worker.stop()
    await run
    return delays[50:]  # the first ones warm up the store and the loop


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "jobs": args.jobs,
        "samples": args.samples,
    }
    # Warm up imports, the store and the signal receivers' caches.
    await throughput(app.noop_async, min(2000, args.jobs))
    profile = cProfile.Profile() if args.profile else None
    runs = [await throughput(app.noop_async, args.jobs) for _ in range(args.rounds)]
    out["throughput_async_per_s"] = round(statistics.median(r[0] for r in runs))
    out["throughput_async_runs"] = [round(r[0]) for r in runs]
    out["throughput_async_per_cpu_s"] = round(statistics.median(r[1] for r in runs))
    if profile is not None:
        await throughput(app.noop_async, args.jobs, profile=profile)
    sync_runs = [await throughput(app.noop_sync, args.jobs) for _ in range(args.rounds)]
    out["throughput_sync_per_s"] = round(statistics.median(r[0] for r in sync_runs))
    out["throughput_sync_per_cpu_s"] = round(statistics.median(r[1] for r in sync_runs))
    delays = await enqueue_to_start(args.samples)
    out["enqueue_to_start_ms"] = {
        "p50": round(percentile(delays, 0.50), 4),
        "p90": round(percentile(delays, 0.90), 4),
        "p99": round(percentile(delays, 0.99), 4),
    }
    out["goals"] = {
        "throughput_per_s": GOAL_PER_S,
        "throughput_met": out["throughput_async_per_s"] >= GOAL_PER_S,
        "enqueue_to_start_p50_ms": GOAL_P50_MS,
        "enqueue_to_start_met": out["enqueue_to_start_ms"]["p50"] <= GOAL_P50_MS,
    }
    if profile is not None:
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(25)
        print(text.getvalue(), file=sys.stderr)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--samples", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1,000 jobs, 200 samples, 1 round")
    parser.add_argument("--profile", action="store_true", help="cProfile one run (to stderr)")
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.jobs, arguments.samples, arguments.rounds = 1_000, 200, 1
    print(json.dumps(asyncio.run(main(arguments)), indent=2))
