"""What ``manage.py tasks`` asks of the Redis backend: per-queue counts and counters, job
ids by state, dead letters enqueued again, queues purged (see :mod:`headrace.tasks.admin`)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from django.tasks.exceptions import TaskResultDoesNotExist

from headrace.tasks.jobs import Job
from headrace.tasks.states import JobState

from .store import SharedStore, job_from_fields, text_of

__all__ = ["COUNTERS", "QueueInspection", "QueueStatistics"]

COUNTERS: Final = (
    "enqueued",
    "claimed",
    "successful",
    "failed",
    "cancelled",
    "retried",
    "returned",
    "expired",
    "lost",
    "dead",
    "stale_acks",
    "renewals",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueStatistics:
    """One queue's state and counters, as Redis holds them (the same for every process)."""

    queue: str
    ready: int  #: due now
    delayed: int  #: waiting for their due time
    running: int  #: leased to a worker
    dead: int  #: dead letters
    finished: int  #: results still kept
    counters: Mapping[str, int]  #: enqueued, claimed, successful, failed, lost, stale_acks...


class QueueInspection:
    """The inspection methods of :class:`~.backend.RedisTaskBackend` (a mixin: it relies on
    the backend's store, clock and job methods declared below)."""

    _store: SharedStore
    _now_from_clock: bool
    queues: set[str]

    if TYPE_CHECKING:  # provided by the backend

        def _local_now(self) -> float: ...

        def _find(self, job_id: str) -> tuple[str, dict[str, str]] | None: ...

        def put_job(self, job: Job, task: Any = None) -> tuple[Job, bool]: ...

        def result_ttl(self, job: Job) -> float: ...

    def queue_statistics(self, queue: str) -> QueueStatistics:
        """The queue's counts and counters as Redis holds them."""
        keys = self._store.queue_keys(queue)
        client = self._store.clients()[self._store.client_index(queue)]
        pipe = client.pipeline(transaction=False)
        pipe.zcard(keys.ready)
        pipe.zcard(keys.delayed)
        pipe.zcard(keys.leases)
        pipe.zcard(keys.dead)
        pipe.zcount(keys.done, self._local_now() if self._now_from_clock else time.time(), "+inf")
        pipe.hgetall(keys.stats)
        ready, delayed, running, dead, finished, raw = pipe.execute()
        counters = {text_of(k): int(v) for k, v in raw.items()}
        return QueueStatistics(
            queue=queue,
            ready=ready,
            delayed=delayed,
            running=running,
            dead=dead,
            finished=finished,
            counters={name: counters.get(name, 0) for name in COUNTERS},
        )

    def job_ids(self, queue: str, state: str) -> list[str]:
        """Ids of ``queue``'s jobs in ``state``: ready, delayed, running, dead or finished."""
        keys = self._store.queue_keys(queue)
        client = self._store.clients()[self._store.client_index(queue)]
        key = {
            "ready": keys.ready,
            "delayed": keys.delayed,
            "running": keys.leases,
            "dead": keys.dead,
            "finished": keys.done,
        }.get(state)
        if key is None:
            raise ValueError(
                f"state must be ready, delayed, running, dead or finished, got {state!r}"
            )
        return [text_of(i) for i in client.zrange(key, 0, -1)]

    def retry_dead(self, job_id: str) -> str:
        """Enqueue a dead letter again as a new job (same task, arguments and options);
        the dead one leaves the dead set. Returns the new job's id."""
        from headrace.tasks.backends.base import new_job_id

        found = self._find(job_id)
        if found is None:
            raise TaskResultDoesNotExist(job_id)
        queue, fields = found
        keys = self._store.queue_keys(queue)
        client = self._store.clients()[self._store.client_index(queue)]
        if client.zscore(keys.dead, job_id) is None:
            raise ValueError(f"task {job_id} is not a dead letter")
        old = job_from_fields(job_id, fields)
        now = self._local_now()
        fresh = old.evolve(
            id=new_job_id(),
            state=JobState.READY,
            enqueued_at=now,
            due_at=now,
            expires_at=None,
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            worker_ids=(),
            errors=(),
            return_value=None,
            retries=0,
            progress=None,
            cancel_requested=False,
            result_expires_at=None,
        )
        stored, _ = self.put_job(fresh)
        client.zrem(keys.dead, job_id)
        client.pexpire(keys.job(job_id), int(self.result_ttl(old) * 1000))
        return stored.id

    def purge(self, queue: str) -> int:
        """Delete every job of ``queue`` (waiting, running, dead and finished); returns how
        many job hashes were deleted. Running jobs' acknowledgements become stale."""
        keys = self._store.queue_keys(queue)
        client = self._store.clients()[self._store.client_index(queue)]
        deleted = 0
        for state in ("ready", "delayed", "running", "dead", "finished"):
            for job_id in self.job_ids(queue, state):
                deleted += int(client.delete(keys.job(job_id)))
        client.delete(keys.ready, keys.delayed, keys.leases, keys.dead, keys.done, keys.wake)
        # scan_iter, not scan: a cluster client scans every node (SCAN's cursor is per node).
        found = list(client.scan_iter(match=keys.base + "key:*", count=500))
        for start in range(0, len(found), 500):
            client.delete(*found[start : start + 500])
        return deleted

    def flush(self) -> None:
        """Delete every key of every queue of this backend (tests)."""
        for queue in self.queues:
            self.purge(queue)
            keys = self._store.queue_keys(queue)
            client = self._store.clients()[self._store.client_index(queue)]
            client.delete(keys.stats, keys.counts, keys.hist, keys.workers)
