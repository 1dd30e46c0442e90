"""``bench/tasks.py --with-dashboard``: what watching costs the task worker.

10,000 jobs sit in the in-memory backend (parked a day ahead), and one worker runs no-op tasks
on the same event loop as the dashboard's WebSocket consumer — as ``runserver`` runs them. Three
set-ups, each measured in alternating rounds in one process:

- ``plain``: the dashboard app's counting receivers disconnected (a project without
  ``headrace.dashboard``);
- ``counting``: the receivers connected (what ``/metrics`` needs), no dashboard open;
- ``open``: counting, and a staff member's dashboard connected (one
  :class:`~headrace.dashboard.consumers.DashboardConsumer`, driven in-process, sampling every
  ``HEADRACE_DASHBOARD_INTERVAL``, 0.5 s).

The goal (issue 17) compares ``open`` with ``counting``: what opening the dashboard costs.
``plain`` shows what the counting itself costs.

Two figures per set-up:

- ``max_per_s`` / ``max_per_cpu_s``: jobs enqueued as fast as possible while the worker runs
  them (as ``throughput`` in bench/tasks.py);
- ``paced``: 1,000 jobs a second for ``--seconds``; the CPU milliseconds this process used per
  job, and for ``open`` the updates the dashboard received (count, per second, the longest gap
  between two, and the median time to build and send one).
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from typing import Any

from bench import _tasks_app as app
from django.tasks.signals import task_enqueued, task_finished, task_started

from headrace.dashboard.consumers import DashboardConsumer
from headrace.dashboard.feed import feed
from headrace.dashboard.memory import connect_signals
from headrace.tasks.signals import task_retried
from headrace.tasks.worker import TaskWorker
from headrace.testing import WebsocketCommunicator

RESIDENT = 10_000
RATE = 1_000


class _Staff:
    is_authenticated = True
    is_active = True
    is_staff = True

    def get_username(self) -> str:
        return "bench"


def _counting(on: bool) -> None:
    if on:
        connect_signals()
        return
    for signal, uid in (
        (task_enqueued, "enqueued"),
        (task_started, "started"),
        (task_finished, "finished"),
        (task_retried, "retried"),
    ):
        signal.disconnect(dispatch_uid=f"headrace.dashboard.{uid}")


class _Dashboard:
    """One open dashboard: a consumer on this loop and a reader of its updates."""

    def __init__(self) -> None:
        self.communicator = WebsocketCommunicator(DashboardConsumer.as_asgi(), "/headrace/ws/")
        self.communicator.scope["user"] = _Staff()
        self.arrivals: list[float] = []
        self._reader: asyncio.Task[None] | None = None

    async def open(self) -> None:
        connected, _ = await self.communicator.connect()
        assert connected
        await self.communicator.send_json_to({"type": "query", "state": "", "task": ""})
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        while True:
            message = await self.communicator.receive_json_from(timeout=30)
            if message.get("type") == "update":
                self.arrivals.append(time.perf_counter())

    async def close(self) -> None:
        assert self._reader is not None
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        await self.communicator.disconnect()


async def _max_throughput(jobs: int) -> tuple[float, float]:
    worker = TaskWorker("default")
    run = asyncio.ensure_future(worker.run())
    await asyncio.to_thread(worker.wait_started, 10)
    started, cpu = time.perf_counter(), time.process_time()
    for n in range(jobs):
        app.noop_forgotten.enqueue()
        if n % 500 == 499:
            await asyncio.sleep(0)
    await worker.wait_idle()
    elapsed, used = time.perf_counter() - started, time.process_time() - cpu
    worker.stop()
    await run
    return jobs / elapsed, jobs / used


async def _paced(seconds: float) -> tuple[float, float]:
    """CPU milliseconds per job at RATE jobs a second, and jobs done per second."""
    worker = TaskWorker("default")
    run = asyncio.ensure_future(worker.run())
    await asyncio.to_thread(worker.wait_started, 10)
    batch = RATE // 100  # ten jobs every 10 ms
    cpu = time.process_time()
    start = time.perf_counter()
    sent = 0
    while sent < RATE * seconds:
        for _ in range(batch):
            app.noop_forgotten.enqueue()
        sent += batch
        due = start + sent / RATE
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
    await worker.wait_idle()
    used, elapsed = time.process_time() - cpu, time.perf_counter() - start
    worker.stop()
    await run
    return used / sent * 1000, sent / elapsed


async def run(jobs: int, rounds: int, seconds: float) -> dict[str, Any]:
    from datetime import UTC, datetime, timedelta

    later = app.parked.using(run_after=datetime.now(UTC) + timedelta(days=1))
    for _ in range(RESIDENT):
        later.enqueue()
    await _max_throughput(min(2_000, jobs))  # warm up
    setups = ("plain", "counting", "open")
    results: dict[str, dict[str, list[float]]] = {
        s: {"max": [], "cpu": [], "paced_ms": [], "paced_rate": []} for s in setups
    }
    updates: dict[str, Any] = {}
    for _ in range(rounds):
        for setup in setups:
            _counting(setup != "plain")
            dashboard = _Dashboard() if setup == "open" else None
            if dashboard is not None:
                await dashboard.open()
            per_s, per_cpu = await _max_throughput(jobs)
            before = len(dashboard.arrivals) if dashboard else 0
            cpu_before = feed().cpu
            paced_start = time.perf_counter()
            paced, paced_rate = await _paced(seconds)
            paced_time = time.perf_counter() - paced_start
            results[setup]["max"].append(per_s)
            results[setup]["cpu"].append(per_cpu)
            results[setup]["paced_ms"].append(paced)
            results[setup]["paced_rate"].append(paced_rate)
            if dashboard is not None:
                arrivals = dashboard.arrivals[before:]
                gaps = [b - a for a, b in itertools.pairwise(arrivals)]
                updates = {
                    "received": len(arrivals),
                    "per_s": round(len(arrivals) / paced_time, 2),
                    "longest_gap_s": round(max(gaps), 3) if gaps else None,
                    "dashboard_cpu_share_pct": round(
                        100 * (feed().cpu - cpu_before) / paced_time, 2
                    ),
                }
                await dashboard.close()
    _counting(True)
    out: dict[str, Any] = {"resident_jobs": RESIDENT, "paced_rate_per_s": RATE}
    for setup in setups:
        out[setup] = {
            "max_per_s": round(statistics.median(results[setup]["max"])),
            "max_per_cpu_s": round(statistics.median(results[setup]["cpu"])),
            "paced_cpu_ms_per_job": round(statistics.median(results[setup]["paced_ms"]), 4),
            "paced_done_per_s": round(statistics.median(results[setup]["paced_rate"])),
        }
    out["open"]["dashboard_updates_while_paced"] = updates
    plain, opened = out["plain"], out["open"]
    out["drop_open_vs_counting_pct"] = round(
        100 * (1 - opened["max_per_cpu_s"] / out["counting"]["max_per_cpu_s"]), 1
    )
    out["drop_open_vs_plain_pct"] = round(
        100 * (1 - opened["max_per_cpu_s"] / plain["max_per_cpu_s"]), 1
    )
    # The goal: opening the dashboard costs the worker less than 5 % of its throughput
    # (against the same process with the dashboard closed; the counting is reported apart).
    out["goal"] = {"drop_below_pct": 5, "met": out["drop_open_vs_counting_pct"] < 5}
    return out
