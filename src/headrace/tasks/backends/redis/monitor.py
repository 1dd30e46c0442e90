"""The dashboard's window on the Redis task backend: a
:class:`~headrace.dashboard.inspect.TaskInspector` that reads everything from Redis.

What is counted where (keys in :mod:`.layout`; ``B`` = ``<prefix>:{<queue>}:``):

- **Counters** (``B counts``, ``<name>|<task path>``) are incremented by the scripts that move
  the jobs, in the same atomic step: ``enqueued`` (ENQUEUE), ``started`` (each claim),
  ``redelivered`` (a start after a worker gave the job back or its lease lapsed), ``retried``
  (a move back to READY after a failure), ``succeeded`` / ``failed`` / ``cancelled`` (the job
  finished so), ``dead`` (dead-lettered; such a job is also ``failed``). So they are
  cluster-wide, exact, and survive worker and web restarts (as long as Redis keeps its data).
- **Histograms** (``B hist``): ``queue_wait`` is observed at each claim (claim time minus
  due time), ``runtime`` when an attempt ends (finish or retry; the attempt's start to then).
  Times are the Redis server's clock. Bucket counts are exact; the sum is a float.
- **Queues**: the sizes of ``B ready``, ``B delayed``, ``B leases`` and ``B dead``; the
  oldest waiting age is that of the oldest job in ``ready`` (its due time; one ``HGET`` for
  each of the first 50 ready jobs, since the ready order is by priority first).
- **Workers** (``B workers``): each worker writes a record (host, pid, queues, concurrency,
  jobs in hand, time) every ``heartbeat_interval`` while it runs, and a last one marked down
  when it stops. A record older than ``lease`` is shown down (the worker died without saying);
  records older than a day are dropped by the next worker to start.
- **Jobs** are listed from the state sets (and ``B done`` for finished ones), newest first;
  a listing reads at most :data:`SCAN_LIMIT` job hashes per queue and says so in ``total``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any, Final

from headrace.tasks.jobs import Job
from headrace.tasks.states import JobState

from .layout import HISTOGRAM_BOUNDS
from .store import fields_of, job_from_fields, text_of

if TYPE_CHECKING:
    from headrace.dashboard.inspect import (
        Counters,
        JobPage,
        JobQuery,
        QueueStatistics,
        WorkerInfo,
    )

    from .backend import RedisTaskBackend

__all__ = [
    "SCAN_LIMIT",
    "STALE_WORKER",
    "RedisInspector",
    "beacon",
    "prune_worker_records",
    "worker_records",
    "write_worker_records",
]

logger = logging.getLogger("headrace.tasks")

#: The most job hashes one listing reads per queue (the newest ones of each state).
SCAN_LIMIT: Final = 2000
#: Worker records older than this are dropped (by the next worker to start).
STALE_WORKER: Final = 86400.0
_HOST: Final = socket.gethostname()
_STATE_SETS: Final = {
    JobState.READY: ("ready", "delayed"),
    JobState.RUNNING: ("leases",),
}


def _now(backend: RedisTaskBackend) -> float:
    return backend.clock.time() if backend._now_from_clock else time.time()


def worker_records(backend: RedisTaskBackend, loop: asyncio.AbstractEventLoop) -> dict[str, str]:
    """This process's workers of ``backend``'s store running on ``loop``, as the JSON records
    of ``B workers`` (by worker id)."""
    from headrace.tasks.worker import task_workers
    from headrace.worker import WorkerState

    now = _now(backend)
    records = {}
    for worker in task_workers():
        if getattr(worker.backend, "_store", None) is not backend._store:
            continue
        if getattr(worker, "_loop", None) is not loop:
            continue
        records[worker.worker_id] = json.dumps(
            {
                "host": _HOST,
                "pid": os.getpid(),
                "queues": list(worker.queues),
                "concurrency": worker.concurrency,
                "in_hand": worker.statistics().running,
                "beat": now,
                "up": worker.state is WorkerState.RUNNING,
            }
        )
    return records


def _queues_of(records: dict[str, str]) -> dict[str, list[str]]:
    by_queue: dict[str, list[str]] = {}
    for worker_id, record in records.items():
        for queue in json.loads(record)["queues"]:
            by_queue.setdefault(queue, []).append(worker_id)
    return by_queue


def write_worker_records(backend: RedisTaskBackend, records: dict[str, str]) -> None:
    """Write ``records`` into the ``B workers`` of each queue they serve (synchronously)."""
    store = backend._store
    for queue, ids in _queues_of(records).items():
        if queue not in backend.queues:
            continue
        client = store.clients()[store.client_index(queue)]
        client.hset(store.queue_keys(queue).workers, mapping={i: records[i] for i in ids})


def prune_worker_records(backend: RedisTaskBackend) -> None:
    """Drop worker records older than :data:`STALE_WORKER`."""
    store = backend._store
    now = _now(backend)
    for queue in backend.queues:
        client = store.clients()[store.client_index(queue)]
        key = store.queue_keys(queue).workers
        stale = []
        for worker_id, raw in client.hgetall(key).items():
            try:
                beat = float(json.loads(raw)["beat"])
            except (ValueError, KeyError, TypeError):
                beat = 0.0  # undecodable: drop it
            if now - beat > STALE_WORKER:
                stale.append(worker_id)
        if stale:
            client.hdel(key, *stale)


async def beacon(backend: RedisTaskBackend, loop: asyncio.AbstractEventLoop) -> None:
    """Write this loop's worker records every ``heartbeat_interval`` (run under
    :func:`headrace.backoff.supervise`, which logs and restarts it if it fails)."""
    store = backend._store
    while True:
        records = worker_records(backend, loop)
        part = store.loops.get(loop)
        if part is not None and records:
            for queue, ids in _queues_of(records).items():
                if queue not in backend.queues:
                    continue
                client = part.connections.clients[store.client_index(queue)]
                await client.hset(
                    store.queue_keys(queue).workers, mapping={i: records[i] for i in ids}
                )
        await asyncio.sleep(backend.settings.heartbeat_interval)


class RedisInspector:
    """The :class:`~headrace.dashboard.inspect.TaskInspector` of one
    :class:`~.backend.RedisTaskBackend` (see the module docstring)."""

    def __init__(self, backend: RedisTaskBackend) -> None:
        self.backend = backend

    def _client(self, queue: str) -> Any:
        store = self.backend._store
        return store.clients()[store.client_index(queue)]

    def _names(self) -> list[str]:
        return sorted(self.backend.queues)

    def queues(self) -> list[QueueStatistics]:
        from headrace.dashboard.inspect import QueueStatistics

        now = _now(self.backend)
        found = []
        for queue in self._names():
            keys = self.backend._store.queue_keys(queue)
            pipe = self._client(queue).pipeline(transaction=False)
            pipe.zcard(keys.ready)
            pipe.zcard(keys.delayed)
            pipe.zcard(keys.leases)
            pipe.zcard(keys.dead)
            pipe.zrange(keys.ready, 0, 49)
            ready, delayed, running, dead, first = pipe.execute()
            oldest = None
            if first:
                pipe = self._client(queue).pipeline(transaction=False)
                for job_id in first:
                    pipe.hget(keys.job(text_of(job_id)), "due")
                dues = [float(d) for d in pipe.execute() if d is not None]
                if dues:
                    oldest = max(0.0, now - min(dues))
            found.append(
                QueueStatistics(
                    name=queue,
                    ready=int(ready),
                    delayed=int(delayed),
                    running=int(running),
                    dead=int(dead),
                    oldest_ready_age=oldest,
                )
            )
        return found

    def workers(self) -> list[WorkerInfo]:
        from headrace.dashboard.inspect import WorkerInfo

        now = _now(self.backend)
        lease = self.backend.settings.lease
        latest: dict[str, dict[str, Any]] = {}
        for queue in self._names():
            raw = self._client(queue).hgetall(self.backend._store.queue_keys(queue).workers)
            for worker_id, value in raw.items():
                try:
                    record = json.loads(value)
                    beat = float(record["beat"])
                except (ValueError, KeyError, TypeError) as error:
                    logger.warning(
                        "queue %s: undecodable worker record %r skipped (%s)",
                        queue,
                        text_of(worker_id),
                        error,
                    )
                    continue
                known = latest.get(text_of(worker_id))
                if known is None or beat > float(known["beat"]):
                    latest[text_of(worker_id)] = record
        found = [
            WorkerInfo(
                id=worker_id,
                host=str(record.get("host", "")),
                pid=int(record.get("pid", 0)),
                queues=tuple(record.get("queues", ())),
                concurrency=int(record.get("concurrency", 0)),
                in_hand=int(record.get("in_hand", 0)),
                last_heartbeat=float(record["beat"]),
                up=bool(record.get("up")) and now - float(record["beat"]) <= lease,
            )
            for worker_id, record in latest.items()
        ]
        found.sort(key=lambda w: (not w.up, w.id))
        return found

    def _ids(self, queue: str, state: JobState | None) -> list[str]:
        keys = self.backend._store.queue_keys(queue)
        if state is None:
            sets = ["ready", "delayed", "leases", "dead", "done"]
        elif state in _STATE_SETS:
            sets = list(_STATE_SETS[state])
        else:
            sets = ["done"] + (["dead"] if state is JobState.FAILED else [])
        pipe = self._client(queue).pipeline(transaction=False)
        for name in sets:
            pipe.zrevrange(getattr(keys, name), 0, SCAN_LIMIT - 1)
        ids: list[str] = []
        for found in pipe.execute():
            ids.extend(text_of(i) for i in found)
        return ids

    def jobs(self, query: JobQuery) -> JobPage:
        from headrace.dashboard.inspect import JobPage

        task = query.task.lower()
        matched: list[Job] = []
        for queue in self._names():
            if query.queue and queue != query.queue:
                continue
            ids = [i for i in dict.fromkeys(self._ids(queue, query.state)) if query.search in i]
            keys = self.backend._store.queue_keys(queue)
            pipe = self._client(queue).pipeline(transaction=False)
            for job_id in ids:
                pipe.hgetall(keys.job(job_id))
            for job_id, flat in zip(ids, pipe.execute(), strict=True):
                fields = flat if isinstance(flat, dict) else fields_of(flat)
                if not fields:
                    continue  # expired between the two reads
                try:
                    job = job_from_fields(
                        job_id, {text_of(k): text_of(v) for k, v in fields.items()}
                    )
                except (ValueError, KeyError, TypeError) as error:
                    logger.warning("task %s: undecodable job hash skipped (%s)", job_id, error)
                    continue
                if query.state is not None and job.state is not query.state:
                    continue
                if task and task not in job.task_path.lower():
                    continue
                matched.append(job)
        matched.sort(key=lambda job: job.enqueued_at, reverse=True)
        return JobPage(jobs=matched[: max(0, query.limit)], total=len(matched))

    def job(self, job_id: str) -> Job | None:
        return self.backend.get_job(job_id) if isinstance(job_id, str) else None

    def counters(self) -> Counters:
        from headrace.dashboard.inspect import Counters, Histogram

        counts: dict[tuple[str, str, str], int] = {}
        raw_histograms: dict[tuple[str, str, str], tuple[list[int], float]] = {}
        for queue in self._names():
            keys = self.backend._store.queue_keys(queue)
            pipe = self._client(queue).pipeline(transaction=False)
            pipe.hgetall(keys.counts)
            pipe.hgetall(keys.hist)
            raw_counts, raw_hist = pipe.execute()
            for field, value in raw_counts.items():
                name, _, path = text_of(field).partition("|")
                counts[(name, path, queue)] = int(value)
            for field, value in raw_hist.items():
                name, _, rest = text_of(field).partition("|")
                path, _, index = rest.rpartition("|")
                found = raw_histograms.setdefault(
                    (name, path, queue), ([0] * (len(HISTOGRAM_BOUNDS) + 1), 0.0)
                )
                if index == "sum":
                    raw_histograms[(name, path, queue)] = (found[0], float(value))
                elif index.isdigit() and int(index) <= len(HISTOGRAM_BOUNDS):
                    found[0][int(index)] = int(value)
        histograms = {}
        for key, (buckets, total) in raw_histograms.items():
            cumulative, running = [], 0
            for value in buckets:
                running += value
                cumulative.append(running)
            histograms[key] = Histogram(buckets=tuple(cumulative), sum=total)
        return Counters(counts=counts, histograms=histograms)

    def retry(self, job_id: str) -> str:
        """A dead letter goes back through :func:`headrace.tasks.admin.retry_dead_letters`
        (what ``manage.py tasks retry`` does: it leaves the dead set); another finished job is
        enqueued again with the same task, arguments, queue and priority."""
        from headrace.tasks.admin import retry_dead_letters

        job = self._finished(job_id, "retry")
        keys = self.backend._store.queue_keys(job.queue)
        if self._client(job.queue).zscore(keys.dead, job_id) is not None:
            return retry_dead_letters(self.backend, [job_id])[job_id]
        task = self.backend.task_for_job(job).using(queue_name=job.queue, priority=job.priority)
        result = self.backend.enqueue_job(task, job.args, job.kwargs, owner=job.owner)
        return str(result.id)

    def cancel(self, job_id: str) -> bool:
        """What :meth:`headrace.tasks.TaskResult.cancel` does (``manage.py tasks cancel``
        calls the same backend method)."""
        return self.backend.cancel(job_id)

    def purge(self, job_id: str) -> bool:
        job = self.job(job_id)
        if job is None:
            return False
        if not job.is_finished:
            raise ValueError(
                f"job {job_id} is {job.state.name}: only a finished job can be purged "
                "(cancel it first)"
            )
        keys = self.backend._store.queue_keys(job.queue)
        pipe = self._client(job.queue).pipeline(transaction=False)
        pipe.zrem(keys.done, job_id)
        pipe.zrem(keys.dead, job_id)
        pipe.delete(keys.job(job_id))
        return bool(pipe.execute()[2])

    def _finished(self, job_id: str, what: str) -> Job:
        job = self.job(job_id)
        if job is None:
            raise LookupError(f"no job {job_id!r} (unknown, or its result expired)")
        if not job.is_finished:
            raise ValueError(
                f"cannot {what} job {job_id}: expected a finished job, got {job.state.name}"
            )
        return job
