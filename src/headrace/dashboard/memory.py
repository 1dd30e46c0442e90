"""The :class:`~headrace.dashboard.inspect.TaskInspector` of the in-memory task backend.

The in-memory backend keeps its jobs in this process, so this adapter reads them there (under
the store's lock, one copy per call) and lists the :class:`~headrace.tasks.worker.TaskWorker`
objects of this process as its workers: a worker that runs is up, and its heartbeat is now.

Its counters are a :class:`Tally` fed by Django's task signals (``task_enqueued``,
``task_started``, ``task_finished``) and headrace's ``task_retried``, which every headrace
backend sends where the job moves. For this backend that is this process, so the counters
cover every job the store ever held; they live as long as the store does (a worker stopped
and started again keeps them; the process ending loses them, with the jobs). The Redis and
database backends count in their store instead (cluster-wide, surviving restarts).

``redelivered`` counts attempts started after a worker gave the job back (it stopped
mid-job); the in-memory store never dead-letters, so ``dead`` stays 0.
"""

from __future__ import annotations

import bisect
import heapq
import os
import socket
import threading
import weakref
from typing import Any, Final

from django.core.signals import setting_changed
from django.tasks.signals import task_enqueued, task_finished, task_started

from headrace.dashboard.inspect import (
    HISTOGRAM_BUCKETS,
    Counters,
    Histogram,
    JobPage,
    JobQuery,
    QueueStatistics,
    WorkerInfo,
)
from headrace.tasks.backends.memory import MemoryTaskBackend
from headrace.tasks.jobs import Job
from headrace.tasks.signals import task_retried
from headrace.tasks.states import JobState
from headrace.worker import WorkerState

__all__ = ["MemoryInspector", "Tally", "connect_signals", "tally_for"]

_FINISHED: Final = {
    JobState.SUCCESSFUL: "succeeded",
    JobState.FAILED: "failed",
    JobState.CANCELLED: "cancelled",
}


class Tally:
    """Counters and histograms by (name, task path, queue), thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, str], int] = {}
        self._histograms: dict[tuple[str, str, str], tuple[list[int], list[float]]] = {}

    def count(self, name: str, task: str, queue: str) -> None:
        key = (name, task, queue)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1

    def observe(self, name: str, task: str, queue: str, seconds: float) -> None:
        self.count_and_observe(None, name, task, queue, seconds)

    def count_and_observe(
        self, counter: str | None, histogram: str, task: str, queue: str, seconds: float
    ) -> None:
        """Add one to ``counter`` (unless None) and ``seconds`` to ``histogram``, under one
        lock (the receivers run for every job)."""
        index = bisect.bisect_left(HISTOGRAM_BUCKETS, seconds)
        key = (histogram, task, queue)
        with self._lock:
            if counter is not None:
                counted = (counter, task, queue)
                self._counts[counted] = self._counts.get(counted, 0) + 1
            found = self._histograms.get(key)
            if found is None:
                found = self._histograms[key] = ([0] * (len(HISTOGRAM_BUCKETS) + 1), [0.0])
            found[0][index] += 1
            found[1][0] += seconds

    def snapshot(self) -> Counters:
        with self._lock:
            counts = dict(self._counts)
            raw = [(key, list(b), s[0]) for key, (b, s) in self._histograms.items()]
        histograms = {}
        for key, buckets, total in raw:
            running = 0
            cumulative = []
            for value in buckets:
                running += value
                cumulative.append(running)
            histograms[key] = Histogram(buckets=tuple(cumulative), sum=total)
        return Counters(counts=counts, histograms=histograms)


_tallies: dict[str, Tally] = {}
_tallies_lock = threading.Lock()


def tally_for(alias: str) -> Tally:
    """The tally of the in-memory backend ``TASKS[alias]`` in this process."""
    found = _tallies.get(alias)
    if found is None:
        with _tallies_lock:
            found = _tallies.setdefault(alias, Tally())
    return found


def _forget(*, setting: str, **kwargs: Any) -> None:
    if setting == "TASKS":  # the in-memory stores are made anew: so are their counters
        with _tallies_lock:
            _tallies.clear()
            _jobs_of.clear()


# The receivers run for every job (three signals per attempt): they stay cheap by reading the
# job's floats from its store (one dict lookup) rather than the TaskResult's datetimes.

_ours: dict[Any, bool] = {}
_jobs_of: dict[str, dict[str, Job]] = {}


def _is_ours(sender: Any) -> bool:
    found = _ours.get(sender)
    if found is None:
        found = _ours[sender] = isinstance(sender, type) and issubclass(sender, MemoryTaskBackend)
    return found


def _stored_job(alias: str, job_id: str) -> Job | None:
    jobs = _jobs_of.get(alias)
    if jobs is None:
        from django.tasks import task_backends

        backend = task_backends[alias]
        if not isinstance(backend, MemoryTaskBackend):
            return None
        jobs = _jobs_of[alias] = backend._store.jobs
    return jobs.get(job_id)  # one dict read: atomic, no lock needed


def _on_enqueued(sender: Any, task_result: Any, **kwargs: Any) -> None:
    if _is_ours(sender):
        task = task_result.task
        tally_for(task_result.backend).count("enqueued", task.module_path, task.queue_name)


def _on_started(sender: Any, task_result: Any, **kwargs: Any) -> None:
    if not _is_ours(sender):
        return
    alias, task = task_result.backend, task_result.task
    path, queue = task.module_path, task.queue_name
    tally = tally_for(alias)
    job = _stored_job(alias, task_result.id)
    if job is None or job.started_at is None:
        tally.count("started", path, queue)
        return
    # Each claim adds a worker id; each retry adds an error while the job is live. An attempt
    # with more earlier claims than retries follows a worker that gave the job back.
    if len(job.worker_ids) - 1 > len(job.errors):
        tally.count("redelivered", path, queue)
    wait = job.started_at - job.due_at
    tally.count_and_observe("started", "queue_wait", path, queue, wait if wait > 0 else 0.0)


def _on_finished(sender: Any, task_result: Any, **kwargs: Any) -> None:
    if not _is_ours(sender):
        return
    alias, task = task_result.backend, task_result.task
    path, queue = task.module_path, task.queue_name
    tally = tally_for(alias)
    outcome = _FINISHED.get(getattr(task_result, "state", None), "failed")  # type: ignore[arg-type]
    job = _stored_job(alias, task_result.id)
    if job is not None and job.worker_ids and job.started_at is not None:
        finished = job.finished_at if job.finished_at is not None else job.started_at
        runtime = finished - job.started_at
        tally.count_and_observe(outcome, "runtime", path, queue, runtime if runtime > 0 else 0.0)
    else:
        tally.count(outcome, path, queue)


def _on_retried(sender: Any, task_result: Any, **kwargs: Any) -> None:
    if not _is_ours(sender):
        return
    alias, task = task_result.backend, task_result.task
    path, queue = task.module_path, task.queue_name
    tally = tally_for(alias)
    tally.count("retried", path, queue)
    job = _stored_job(alias, task_result.id)
    if job is not None and job.last_attempted_at is not None:
        from django.tasks import task_backends

        now = task_backends[alias].clock.time()  # type: ignore[attr-defined]
        tally.observe("runtime", path, queue, max(0.0, now - job.last_attempted_at))


def connect_signals() -> None:
    """Start counting (the dashboard app's ``ready()`` calls it; calling again is harmless)."""
    for signal, receiver, name in (
        (task_enqueued, _on_enqueued, "enqueued"),
        (task_started, _on_started, "started"),
        (task_finished, _on_finished, "finished"),
        (task_retried, _on_retried, "retried"),
    ):
        signal.connect(receiver, weak=False, dispatch_uid=f"headrace.dashboard.{name}")
    setting_changed.connect(_forget, dispatch_uid="headrace.dashboard.forget")


_HOST: Final = socket.gethostname()
#: When each worker of this process was last seen running (its "heartbeat" once stopped).
_last_seen: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()


def _enqueued_at(job: Job) -> float:
    return job.enqueued_at


class MemoryInspector:
    """The inspector of one :class:`MemoryTaskBackend` (see the module docstring)."""

    def __init__(self, backend: MemoryTaskBackend) -> None:
        self.backend = backend

    def _jobs(self) -> list[Job]:
        # The store is the backend's own; this adapter is its read-only window (one copy of
        # the job values under its lock, then no lock held while we look at them).
        store = self.backend._store
        with store.lock:
            store.purge(store.clock.time())
            return list(store.jobs.values())

    def queues(self) -> list[QueueStatistics]:
        now = self.backend.clock.time()
        names = list(dict.fromkeys(self.backend.queues))
        counts = {name: [0, 0, 0] for name in names}
        oldest: dict[str, float] = {}
        for job in self._jobs():
            row = counts.get(job.queue)
            if row is None:
                row = counts[job.queue] = [0, 0, 0]
            if job.state is JobState.READY:
                if job.due_at > now:
                    row[1] += 1
                else:
                    row[0] += 1
                    if job.due_at < oldest.get(job.queue, now):
                        oldest[job.queue] = job.due_at
            elif job.state is JobState.RUNNING:
                row[2] += 1
        return [
            QueueStatistics(
                name=name,
                ready=ready,
                delayed=delayed,
                running=running,
                dead=0,
                oldest_ready_age=(now - oldest[name]) if name in oldest else None,
            )
            for name, (ready, delayed, running) in counts.items()
        ]

    def workers(self) -> list[WorkerInfo]:
        from headrace.tasks.worker import task_workers

        now = self.backend.clock.time()
        found = []
        for worker in task_workers():
            if getattr(worker.backend, "_store", None) is not self.backend._store:
                continue
            up = worker.state is WorkerState.RUNNING
            if up:
                _last_seen[worker] = now  # in this process, a running worker is alive now
            seen = _last_seen.get(worker, now)
            found.append(
                WorkerInfo(
                    id=worker.worker_id,
                    host=_HOST,
                    pid=os.getpid(),
                    queues=tuple(worker.queues),
                    concurrency=worker.concurrency,
                    in_hand=worker.statistics().running,
                    last_heartbeat=seen,
                    up=up,
                )
            )
        found.sort(key=lambda w: (not w.up, w.id))
        return found

    def jobs(self, query: JobQuery) -> JobPage:
        task = query.task.lower()
        matched = [
            job
            for job in self._jobs()
            if (query.state is None or job.state is query.state)
            and (not task or task in job.task_path.lower())
            and (not query.queue or job.queue == query.queue)
            and (not query.search or query.search in job.id)
        ]
        newest = heapq.nlargest(max(0, query.limit), matched, key=_enqueued_at)
        return JobPage(jobs=newest, total=len(matched))

    def job(self, job_id: str) -> Job | None:
        return self.backend.get_job(job_id) if isinstance(job_id, str) else None

    def counters(self) -> Counters:
        return tally_for(self.backend.alias).snapshot()

    def retry(self, job_id: str) -> str:
        job = self._finished(job_id, "retry")
        task = self.backend.task_for_job(job).using(queue_name=job.queue, priority=job.priority)
        result = self.backend.enqueue_job(task, job.args, job.kwargs, owner=job.owner)
        return str(result.id)

    def cancel(self, job_id: str) -> bool:
        return self.backend.cancel(job_id)

    def purge(self, job_id: str) -> bool:
        store = self.backend._store
        with store.lock:
            job = store.jobs.get(job_id)
            if job is None:
                return False
            if not job.is_finished:
                raise ValueError(
                    f"job {job_id} is {job.state.name}: only a finished job can be purged "
                    "(cancel it first)"
                )
            del store.jobs[job_id]
            store.tasks.pop(job_id, None)
            return True

    def _finished(self, job_id: str, what: str) -> Job:
        job = self.job(job_id)
        if job is None:
            raise LookupError(f"no job {job_id!r} (unknown, or its result expired)")
        if not job.is_finished:
            raise ValueError(
                f"cannot {what} job {job_id}: expected a finished job, got {job.state.name}"
            )
        return job
