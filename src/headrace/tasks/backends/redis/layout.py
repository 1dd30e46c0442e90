"""Where the Redis task backend keeps its data: the key layout, in one place.

Every key of a queue shares one hash tag, ``{<queue>}``, so each queue lives in one Redis
Cluster slot and every script (see :mod:`.scripts`) touches that slot only. ``B`` below is
:func:`queue_base`, ``<prefix>:{<queue>}:`` (the prefix is the ``prefix`` option, default
``headrace-tasks``; queue names are checked by :func:`check_queue_name`, job ids by
:func:`~headrace.tasks.backends.base.check_job_id`, idempotency keys are hashed; nothing a
caller writes becomes a key unchecked).

============================  =======  ==========================================================
key                           type     holds
============================  =======  ==========================================================
``B ready``                   zset     READY jobs due now; score :func:`ready_score` (higher
                                       priority first, then first in, first out)
``B delayed``                 zset     READY jobs not yet due (countdown, run_after, retry
                                       backoff); score = due time. Moved to ``ready`` by the
                                       claim script once due: never held in worker memory
``B leases``                  zset     RUNNING jobs; score = the time their lease lapses. A
                                       worker's heartbeat pushes it forward; the claim script
                                       returns lapsed ones to ``ready`` with a WorkerLost error
``B dead``                    zset     dead letters: jobs whose worker died ``max_deliveries``
                                       times (state FAILED); score = when. Kept until retried
                                       or purged
``B done``                    zset     finished jobs; score = when their result expires
``B wake``                    list     a token per enqueue; idle workers block on it (BLPOP)
``B fired``                   hash     schedule entry -> the last slot beat fired for it (kept)
``B counts``                  hash     ``<counter>|<task path>`` -> count, the dashboard's
                                       counters by task (enqueued, started, succeeded, failed,
                                       retried, redelivered, dead, cancelled), kept
``B hist``                    hash     ``<runtime|queue_wait>|<task path>|<i>`` -> observations
                                       in bucket ``i`` of :data:`HISTOGRAM_BOUNDS` (not
                                       cumulative; ``i`` = len for +Inf), and ``...|sum``
``B workers``                 hash     worker id -> JSON (host, pid, queues, concurrency, jobs
                                       in hand, last heartbeat, up) of each worker serving the
                                       queue; written by the worker's beacon, pruned when stale
``B stats``                   hash     counters (enqueued, claimed, succeeded, failed, retried,
                                       cancelled, expired, lost, dead, returned, stale_acks) and
                                       the ``seq`` and ``token`` sequences
``B job:<id>``                hash     one job (fields in :data:`JOB_FIELDS`); expires with its
                                       result (``result_ttl``), never while it is live
``B key:<sha1 of key>``       string   the id of the live job holding an idempotency key;
                                       deleted when that job finishes
============================  =======  ==========================================================

Times are seconds since the epoch from the Redis server's clock (``TIME`` inside the scripts),
so the machines' clocks never decide when a lease lapsed or a delayed job is due. Tests may
pass a :class:`~headrace.layers.ManualClock` as the ``clock`` option: the scripts then take
``now`` from it (an argument), which is the only use of a client clock.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

from headrace.exceptions import ConfigurationError

__all__ = [
    "HISTOGRAM_BOUNDS",
    "JOB_FIELDS",
    "READ_FIELDS",
    "QueueKeys",
    "check_queue_name",
    "queue_base",
    "ready_score",
]

_QUEUE_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: Priorities are -100..100; the ready score leaves 2**44 sequence numbers per priority.
_SEQ_SPAN: Final = 2**44

#: Upper bounds (seconds) of the ``B hist`` buckets: the dashboard's ``HISTOGRAM_BUCKETS``
#: (kept here so the task package needs nothing of the dashboard; a test checks they agree).
HISTOGRAM_BOUNDS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip

#: The fields of a ``job:<id>`` hash: ``id``, ``spec`` (JSON of what never changes: task path,
#: arguments, queue, priority, owner, key, options), ``state``, ``enq``, ``due``, ``exp``
#: (expires_at), ``started``, ``finished``, ``last`` (last attempt), ``workers`` (worker ids,
#: newline-separated), ``errors`` (JSON list), ``result`` (JSON), ``retries``, ``deliv``
#: (deliveries lost to a dead worker), ``cancel`` ("1" once requested), ``progress`` (JSON),
#: ``ttl`` (result_ttl), ``rexp`` (result expiry), ``token`` (the current lease's), ``prio``,
#: ``kkey`` (its idempotency key's Redis key), ``task`` (its task path, for the counters),
#: ``back`` ("1" while it waits after a worker gave it back: its next start is a redelivery).
JOB_FIELDS: Final = (
    "id", "spec", "state", "enq", "due", "exp", "started", "finished", "last", "workers", "errors",
    "result", "retries", "deliv", "cancel", "progress", "ttl", "rexp", "token", "prio", "kkey",
    "task", "back",
)  # fmt: skip

#: The fields a :class:`~headrace.tasks.jobs.Job` is built from, in the order the claim
#: script returns them (``HMGET``: values only, no names to send back and decode).
READ_FIELDS: Final = (
    "id", "spec", "state", "enq", "due", "exp", "started", "finished", "last", "workers",
    "errors", "result", "retries", "progress", "cancel", "rexp",
)  # fmt: skip


def check_queue_name(queue: object) -> str:
    """A queue name fit for a key: 1-64 ASCII letters, digits, ``.``, ``_`` or ``-``."""
    if not isinstance(queue, str) or not _QUEUE_RE.fullmatch(queue):
        raise ConfigurationError(
            f"a Redis task queue name must be 1-64 ASCII letters, digits, '.', '_' or '-', "
            f"got {queue!r}"
        )
    return queue


def queue_base(prefix: str, queue: str) -> str:
    """``<prefix>:{<queue>}:``, the start of every key of ``queue``."""
    return f"{prefix}:{{{queue}}}:"


def ready_score(priority: int, seq: int) -> int:
    """Lower is claimed first: priority 100 before -100, then the order they became ready."""
    return (100 - priority) * _SEQ_SPAN + seq


class QueueKeys:
    """The key names of one queue (see the module docstring)."""

    __slots__ = (
        "base",
        "counts",
        "dead",
        "delayed",
        "done",
        "fired",
        "hist",
        "leases",
        "queue",
        "ready",
        "stats",
        "wake",
        "workers",
    )

    def __init__(self, prefix: str, queue: str) -> None:
        self.queue = check_queue_name(queue)
        self.base = base = queue_base(prefix, queue)
        self.ready = base + "ready"
        self.delayed = base + "delayed"
        self.leases = base + "leases"
        self.dead = base + "dead"
        self.done = base + "done"
        self.wake = base + "wake"
        self.stats = base + "stats"
        self.fired = base + "fired"
        self.counts = base + "counts"
        self.hist = base + "hist"
        self.workers = base + "workers"

    def job(self, job_id: str) -> str:
        return f"{self.base}job:{job_id}"

    def key(self, key: str) -> str:
        """The key of an idempotency key (hashed: any printable key makes a safe name)."""
        return f"{self.base}key:{hashlib.sha1(key.encode()).hexdigest()}"

    @property
    def common(self) -> tuple[str, ...]:
        """KEYS[1..7] of every script that moves jobs."""
        return (
            self.ready,
            self.delayed,
            self.leases,
            self.wake,
            self.stats,
            self.dead,
            self.done,
        )
