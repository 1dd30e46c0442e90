"""One sampler per process and event loop feeding every open dashboard.

However many people watch, the backends are read once per :data:`DEFAULT_INTERVAL` (setting
``HEADRACE_DASHBOARD_INTERVAL``, seconds): the :class:`Feed` samples queues, workers,
counters and the real-time side in a thread (the sample walks the store; the loop keeps
serving meanwhile), keeps the throughput history, and wakes its subscribers, who each send
at most one update per sample — the latest, never a backlog. With nobody watching it stops
sampling, so a dashboard nobody has open costs nothing.

The samples and updates are timed (CPU time of the thread doing them): when they cost more
than :data:`DUTY` of one core — a store with a great many jobs, many people watching — the
feed waits longer between samples, so watching never takes more than that share from the
workers in the same process.

The JSON shapes sent to the browser are made here (:func:`job_json`, :func:`job_row`).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import weakref
from dataclasses import asdict
from typing import Any, Final

from django.conf import settings

from headrace.dashboard.inspect import (
    COUNTER_NAMES,
    Counters,
    JobPage,
    JobQuery,
    TaskInspector,
    inspector_for,
)
from headrace.dashboard.realtime import realtime
from headrace.tasks.jobs import Job

__all__ = [
    "DEFAULT_INTERVAL",
    "DUTY",
    "HISTORY_SECONDS",
    "HISTORY_STEP",
    "Feed",
    "feed",
    "find_job",
    "inspectors",
    "job_json",
    "job_row",
    "list_jobs",
]

logger = logging.getLogger("headrace.dashboard")

DEFAULT_INTERVAL: Final = 0.5
#: The share of one core the dashboard may take in a process (samples and updates together).
DUTY: Final = 0.03
#: The throughput chart: one point per HISTORY_STEP seconds over the last HISTORY_SECONDS.
HISTORY_STEP: Final = 1.0
HISTORY_SECONDS: Final = 300.0


def inspectors() -> list[tuple[str, TaskInspector]]:
    """(alias, inspector) for each ``TASKS`` backend that has one."""
    from django.tasks import task_backends

    found = []
    for alias in getattr(settings, "TASKS", None) or {}:
        try:
            found.append((alias, inspector_for(task_backends[alias])))
        except Exception:
            logger.debug("TASKS[%r] has no inspector; not on the dashboard", alias, exc_info=True)
    return found


def find_job(job_id: str) -> tuple[str, TaskInspector, Job] | None:
    for alias, inspector in inspectors():
        job = inspector.job(job_id)
        if job is not None:
            return alias, inspector, job
    return None


def list_jobs(query: JobQuery) -> JobPage:
    jobs: list[Job] = []
    total = 0
    for _, inspector in inspectors():
        page = inspector.jobs(query)
        jobs.extend(page.jobs)
        total += page.total
    jobs.sort(key=lambda job: job.enqueued_at, reverse=True)
    return JobPage(jobs=jobs[: query.limit], total=total)


def _short(value: Any, limit: int = 2000) -> Any:
    """A JSON value as is, or its text cut to ``limit`` characters when it is longer."""
    import json

    text = json.dumps(value, default=repr)
    return value if len(text) <= limit else text[:limit] + "…"


def job_row(job: Job) -> dict[str, Any]:
    """A job in the list (few fields)."""
    progress = job.progress or {}
    return {
        "id": job.id,
        "task": job.task_path,
        "queue": job.queue,
        "state": job.state.name,
        "attempts": len(job.worker_ids),
        "enqueued_at": job.enqueued_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "done": progress.get("done"),
        "total": progress.get("total"),
    }


def job_json(job: Job) -> dict[str, Any]:
    """One job, whole: arguments, attempts, errors with tracebacks, progress, timings."""
    return {
        **job_row(job),
        "priority": job.priority,
        "args": _short(job.args),
        "kwargs": _short(job.kwargs),
        "due_at": job.due_at,
        "expires_at": job.expires_at,
        "last_attempted_at": job.last_attempted_at,
        "retries": job.retries,
        "worker_ids": list(job.worker_ids),
        "errors": [
            {"exception_class": e.exception_class_path, "traceback": e.traceback}
            for e in job.errors
        ],
        "progress": dict(job.progress) if job.progress is not None else None,
        "return_value": _short(job.return_value),
        "cancel_requested": job.cancel_requested,
        "owner": job.owner,
        "finished": job.is_finished,
    }


def _totals(counters: Counters) -> dict[str, int]:
    return {name: counters.total(name) for name in COUNTER_NAMES}


class Feed:
    """The sampler of one event loop (see the module docstring)."""

    def __init__(self, interval: float | None = None) -> None:
        if interval is None:
            interval = float(getattr(settings, "HEADRACE_DASHBOARD_INTERVAL", DEFAULT_INTERVAL))
        if not interval > 0:
            raise ValueError(f"HEADRACE_DASHBOARD_INTERVAL must be positive, got {interval!r}")
        self.interval = interval
        self.subscribers = 0
        self.version = 0
        self.latest: dict[str, Any] | None = None
        self._changed = asyncio.Condition()
        self._runner: asyncio.Task[None] | None = None
        #: (time, succeeded, failed) every HISTORY_STEP seconds
        self._history: collections.deque[tuple[float, int, int]] = collections.deque(
            maxlen=int(HISTORY_SECONDS / HISTORY_STEP) + 1
        )
        self.samples = 0  #: samples taken (tests and the benchmark read it)
        self.cpu = 0.0  #: CPU seconds spent on samples and updates (see charge())
        self._cpu_since = 0.0

    def subscribe(self) -> None:
        self.subscribers += 1
        if self._runner is None or self._runner.done():
            self._runner = asyncio.get_running_loop().create_task(self._run())

    def unsubscribe(self) -> None:
        self.subscribers -= 1

    async def wait_newer(self, version: int) -> int:
        """Wait for a sample newer than ``version``; its version."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.version > version)
            return self.version

    async def _run(self) -> None:
        failures = 0
        while self.subscribers > 0:
            try:
                sample = await asyncio.to_thread(self.sample)
            except Exception:
                failures += 1
                if failures == 1:
                    logger.exception("sampling the task backends for the dashboard failed")
                await asyncio.sleep(min(30.0, self.interval * 2**failures))
                continue
            if failures:
                logger.info("sampling the task backends works again")
            failures = 0
            async with self._changed:
                self.latest = sample
                self.version += 1
                self._changed.notify_all()
            await asyncio.sleep(self.pause())

    def charge(self, seconds: float) -> None:
        """Count ``seconds`` of CPU spent for the dashboard (a sample, or an update)."""
        self.cpu += seconds
        self._cpu_since += seconds

    def pause(self) -> float:
        """Seconds until the next sample: the interval, or longer if the last one's samples
        and updates cost more than :data:`DUTY` of it."""
        spent, self._cpu_since = self._cpu_since, 0.0
        return max(self.interval, spent / DUTY - spent)

    def sample(self) -> dict[str, Any]:
        """One sample of every backend and of this process's real-time side (any thread)."""
        import time

        cpu = time.thread_time()
        now = time.time()
        queues: list[dict[str, Any]] = []
        workers: list[dict[str, Any]] = []
        totals = dict.fromkeys(COUNTER_NAMES, 0)
        for alias, inspector in inspectors():
            queues.extend({"backend": alias, **asdict(q)} for q in inspector.queues())
            workers.extend({"backend": alias, **asdict(w)} for w in inspector.workers())
            for name, value in _totals(inspector.counters()).items():
                totals[name] += value
        self._record(now, totals)
        self.samples += 1
        sample = {
            "at": now,
            "queues": queues,
            "workers": workers,
            "totals": totals,
            "throughput": self.throughput(now, totals),
            "realtime": realtime().as_json(),
        }
        self.charge(time.thread_time() - cpu)
        return sample

    def _record(self, now: float, totals: dict[str, int]) -> None:
        history = self._history
        if not history or now - history[-1][0] >= HISTORY_STEP:
            history.append((now, totals["succeeded"], totals["failed"]))

    def throughput(self, now: float, totals: dict[str, int]) -> list[list[float]]:
        """[time, succeeded/s, failed/s] between consecutive history points."""
        points = [*self._history]
        if points and points[-1][0] < now:
            points.append((now, totals["succeeded"], totals["failed"]))
        rates: list[list[float]] = []
        for (t0, s0, f0), (t1, s1, f1) in itertools.pairwise(points):
            span = t1 - t0
            if span > 0:
                rates.append([t1, max(0, s1 - s0) / span, max(0, f1 - f0) / span])
        return rates


_feeds: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Feed] = weakref.WeakKeyDictionary()


def feed() -> Feed:
    """The feed of the running event loop."""
    loop = asyncio.get_running_loop()
    found = _feeds.get(loop)
    if found is None:
        found = _feeds[loop] = Feed()
    return found
