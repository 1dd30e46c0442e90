"""The dashboard's :class:`~headrace.dashboard.inspect.TaskInspector` over the database task
backend's tables, so ``/metrics`` and the dashboard show every process's jobs and workers.

**Counters come from the rows**, not from a tally kept beside them: every job row (live in
``headrace_taskjob`` or finished in ``headrace_taskjobresult``) already records what happened
to it, so a counter is a sum over rows, cluster-wide and surviving any restart, and the claim
and finish statements pay nothing for it. Per (task path, queue):

- ``enqueued``: one per row; ``started``: the row's claims (``worker_ids``); ``retried``: its
  ``retries``; ``succeeded``/``failed``/``cancelled``: a result's state (an expired or
  dead-lettered job is ``failed``); ``dead``: the ``headrace_taskdeadletter`` rows.
- ``redelivered``: claims that followed a lost lease, ``min(losses, claims - 1)`` per row —
  exact unless a job was both retried and lost and is waiting after the loss.
- histograms: ``runtime`` is ``finished_at - started_at`` of each result and ``queue_wait``
  ``started_at - due_at`` of each started row — the last attempt only, so a retried job adds
  one observation, not one per attempt.

A result leaves its table when its ``result_ttl`` passes (or when it is purged from the
dashboard); :func:`fold_results` adds its share to ``headrace_taskcounter`` in the transaction
that deletes it, so the counters never go down. Rows deleted by hand (the admin, SQL) take
their share with them.

The dashboard's types are imported when a method needs them, so the tasks package works
without the dashboard app installed.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

from headrace.tasks.backends.database import sql
from headrace.tasks.backends.database.connections import Executor
from headrace.tasks.jobs import Job
from headrace.tasks.states import JobState

if TYPE_CHECKING:
    from headrace.dashboard.inspect import (
        Counters,
        JobPage,
        JobQuery,
        QueueStatistics,
        WorkerInfo,
    )
    from headrace.tasks.backends.database.backend import DatabaseTaskBackend

__all__ = ["DatabaseInspector", "fold_results", "tally"]

COUNTER = "headrace_taskcounter"

_OUTCOMES: Final = {
    JobState.SUCCESSFUL.value: "succeeded",
    JobState.FAILED.value: "failed",
    JobState.CANCELLED.value: "cancelled",
}
_HISTOGRAMS: Final = ("runtime", "queue_wait")

#: A key of the tally: (name, task path, queue); names are counters, ``<histogram>_bucket_<i>``
#: (not cumulative) and ``<histogram>_sum``.
Key = tuple[str, str, str]


def _claims(vendor: str) -> str:
    return (
        "jsonb_array_length(worker_ids)"
        if vendor == "postgresql"
        else "json_array_length(worker_ids)"
    )


def _tally_columns(vendor: str, finished: str) -> str:
    """What :func:`tally` reads of a row (``finished`` is ``finished_at`` or NULL)."""
    return (
        f"task_path, queue, state, {_claims(vendor)}, retries, losses, due_at, started_at, "
        f"{finished}"
    )


def tally(
    rows: Iterable[tuple[Any, ...]], into: dict[Key, float] | None = None
) -> dict[Key, float]:
    """Add what each row (the columns of :func:`_tally_columns`) says happened to ``into``."""
    from headrace.dashboard.inspect import HISTOGRAM_BUCKETS

    found: dict[Key, float] = {} if into is None else into

    def add(name: str, task: str, queue: str, amount: float) -> None:
        key = (name, task, queue)
        found[key] = found.get(key, 0.0) + amount

    def observe(name: str, task: str, queue: str, seconds: float) -> None:
        seconds = max(0.0, seconds)
        add(f"{name}_bucket_{bisect.bisect_left(HISTOGRAM_BUCKETS, seconds)}", task, queue, 1)
        add(f"{name}_sum", task, queue, seconds)

    for task, queue, state, claims, retries, losses, due_at, started_at, finished_at in rows:
        claims = int(claims or 0)
        add("enqueued", task, queue, 1)
        if claims:
            add("started", task, queue, claims)
        if retries:
            add("retried", task, queue, int(retries))
        redelivered = min(int(losses or 0), claims - 1)
        if redelivered > 0:
            add("redelivered", task, queue, redelivered)
        outcome = _OUTCOMES.get(state)
        if outcome is not None:
            add(outcome, task, queue, 1)
        if started_at is not None:
            observe("queue_wait", task, queue, float(started_at) - float(due_at))
            if finished_at is not None:
                observe("runtime", task, queue, float(finished_at) - float(started_at))
    return found


def fold_results(db: Executor, vendor: str, where: str, params: Mapping[str, Any]) -> int:
    """Delete the results matching ``where`` and add their share of the counters to
    ``headrace_taskcounter``, in one transaction; the number of results deleted."""
    with db.transaction():
        rows = db.execute(
            f"DELETE FROM {sql.RESULT} WHERE {where} "
            f"RETURNING {_tally_columns(vendor, 'finished_at')}",
            params,
        )
        for (name, task, queue), value in tally(rows).items():
            db.execute(
                f"INSERT INTO {COUNTER} (name, task_path, queue, value) "
                "VALUES (%(name)s, %(task)s, %(queue)s, %(value)s) "
                f"ON CONFLICT (name, task_path, queue) DO UPDATE SET "
                f"value = {COUNTER}.value + excluded.value",
                {"name": name, "task": task, "queue": queue, "value": value},
            )
    return len(rows)


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


class DatabaseInspector:
    """The inspector of one :class:`DatabaseTaskBackend` (see the module docstring)."""

    def __init__(self, backend: DatabaseTaskBackend) -> None:
        self.backend = backend
        self._vendor = backend.vendor

    def _db(self) -> Executor:
        return self.backend._db()

    def _now(self, db: Executor) -> float:
        """The store's "now" (the backend's clock, or the database's)."""
        [(now,)] = db.execute(f"SELECT {self.backend._sql.now}", {"now": self.backend._now()})
        return float(now)

    def _contains(self, column: str, name: str) -> str:
        """``column`` contains the text parameter ``name`` (no LIKE: nothing to escape)."""
        if self._vendor == "postgresql":
            return f"strpos({column}, %({name})s::text) > 0"
        return f"instr({column}, %({name})s) > 0"

    def queues(self) -> list[QueueStatistics]:
        from headrace.dashboard.inspect import QueueStatistics

        db = self._db()
        now = self._now(db)
        rows = db.execute(
            "SELECT queue, state, CASE WHEN due_at <= %(t)s THEN 1 ELSE 0 END AS due, "
            f"count(*), min(due_at) FROM {sql.JOB} GROUP BY queue, state, due",
            {"t": now},
        )
        dead = dict(
            db.execute(
                f"SELECT queue, count(*) FROM {sql.DEAD} WHERE retried_as IS NULL GROUP BY queue",
                {},
            )
        )
        names = list(dict.fromkeys([*self.backend.queues, *(row[0] for row in rows), *dead]))
        counts = {name: [0, 0, 0] for name in names}
        oldest: dict[str, float] = {}
        for queue, state, due, count, first in rows:
            if state == JobState.RUNNING.value:
                counts[queue][2] += int(count)
            elif state == JobState.READY.value and due:
                counts[queue][0] += int(count)
                oldest[queue] = float(first)
            elif state == JobState.READY.value:
                counts[queue][1] += int(count)
        return [
            QueueStatistics(
                name=name,
                ready=ready,
                delayed=delayed,
                running=running,
                dead=int(dead.get(name, 0)),
                oldest_ready_age=max(0.0, now - oldest[name]) if name in oldest else None,
            )
            for name, (ready, delayed, running) in counts.items()
        ]

    def workers(self) -> list[WorkerInfo]:
        """The heartbeat table's workers: up if heard from within a lease (they beat every
        third of one). A worker that stops deletes its row; one that dies stays, down, until
        the purge. Concurrency is known for the workers of this process only (0 otherwise)."""
        from headrace.dashboard.inspect import WorkerInfo
        from headrace.tasks.worker import task_workers

        db = self._db()
        now = self._now(db)
        local = {worker.worker_id: worker.concurrency for worker in task_workers()}
        rows = db.execute(
            "SELECT worker_id, hostname, pid, queues, last_seen_at, running "
            f"FROM {sql.WORKER} ORDER BY worker_id",
            {},
        )
        found = [
            WorkerInfo(
                id=worker_id,
                host=host,
                pid=int(pid),
                queues=tuple(_json(queues) or ()),
                concurrency=local.get(worker_id, 0),
                in_hand=int(running),
                last_heartbeat=float(seen),
                up=float(seen) >= now - self.backend.lease,
            )
            for worker_id, host, pid, queues, seen, running in rows
        ]
        found.sort(key=lambda w: (not w.up, w.id))
        return found

    def jobs(self, query: JobQuery) -> JobPage:
        from headrace.dashboard.inspect import JobPage
        from headrace.tasks.backends.database import rows as records

        db = self._db()
        params: dict[str, Any] = {"t": self._now(db), "limit": max(0, query.limit)}
        where = ["1 = 1"]
        if query.state is not None:
            where.append("state = %(state)s")
            params["state"] = query.state.value
        if query.task:
            where.append(self._contains("lower(task_path)", "task"))
            params["task"] = query.task.lower()
        if query.queue:
            where.append("queue = %(queue)s")
            params["queue"] = query.queue
        if query.search:
            where.append(self._contains("job_id", "search"))
            params["search"] = query.search
        live = " AND ".join(where)
        done = f"{live} AND result_expires_at > %(t)s"
        dialect = self.backend._sql
        position = sql.ROW_COLUMNS.index("enqueued_at") + 1
        rows = db.execute(
            f"SELECT {dialect.live_columns} FROM {sql.JOB} j WHERE {live} UNION ALL "
            f"SELECT {', '.join(sql.ROW_COLUMNS)} FROM {sql.RESULT} WHERE {done} "
            f"ORDER BY {position} DESC LIMIT %(limit)s",
            params,
        )
        [(total,)] = db.execute(
            f"SELECT (SELECT count(*) FROM {sql.JOB} WHERE {live}) + "
            f"(SELECT count(*) FROM {sql.RESULT} WHERE {done})",
            params,
        )
        alias = self.backend.alias
        return JobPage(
            jobs=[records.job(records.row(values), alias) for values in rows], total=int(total)
        )

    def job(self, job_id: str) -> Job | None:
        return self.backend.get_job(job_id) if isinstance(job_id, str) else None

    def counters(self) -> Counters:
        from headrace.dashboard.inspect import COUNTER_NAMES, HISTOGRAM_BUCKETS, Counters, Histogram

        db = self._db()
        found: dict[Key, float] = {
            (name, task, queue): float(value)
            for name, task, queue, value in db.execute(
                f"SELECT name, task_path, queue, value FROM {COUNTER}", {}
            )
        }
        tally(
            db.execute(f"SELECT {_tally_columns(self._vendor, 'NULL')} FROM {sql.JOB}", {}), found
        )
        tally(
            db.execute(
                f"SELECT {_tally_columns(self._vendor, 'finished_at')} FROM {sql.RESULT}", {}
            ),
            found,
        )
        for task, queue, count in db.execute(
            f"SELECT task_path, queue, count(*) FROM {sql.DEAD} GROUP BY task_path, queue", {}
        ):
            found["dead", task, queue] = found.get(("dead", task, queue), 0.0) + int(count)
        names = set(COUNTER_NAMES)
        counts = {key: int(value) for key, value in found.items() if key[0] in names}
        histograms = {}
        for name in _HISTOGRAMS:
            keys = {(task, queue) for (n, task, queue) in found if n == f"{name}_sum"}
            for task, queue in keys:
                running = 0
                cumulative = []
                for index in range(len(HISTOGRAM_BUCKETS) + 1):
                    running += int(found.get((f"{name}_bucket_{index}", task, queue), 0))
                    cumulative.append(running)
                histograms[name, task, queue] = Histogram(
                    buckets=tuple(cumulative), sum=found[f"{name}_sum", task, queue]
                )
        return Counters(counts=counts, histograms=histograms)

    def retry(self, job_id: str) -> str:
        """A dead-lettered job is retried through its dead letter (which records the new
        job); any other finished job is enqueued again as a new job."""
        from headrace.tasks.backends.database.models import TaskDeadLetter

        job = self._finished(job_id, "retry")
        letter = (
            TaskDeadLetter.objects.using(self.backend.database)
            .filter(job_id=job_id, retried_as__isnull=True)
            .values_list("pk", flat=True)
            .first()
        )
        if letter is not None:
            return self.backend.retry_dead(letter)
        task = self.backend.task_for_job(job)
        result = self.backend.enqueue_job(task, job.args, job.kwargs, owner=job.owner)
        return str(result.id)

    def cancel(self, job_id: str) -> bool:
        return self.backend.cancel(job_id)

    def purge(self, job_id: str) -> bool:
        job = self.job(job_id)
        if job is not None and not job.is_finished:
            raise ValueError(
                f"job {job_id} is {job.state.name}: only a finished job can be purged "
                "(cancel it first)"
            )
        return fold_results(self._db(), self._vendor, "job_id = %(job_id)s", {"job_id": job_id}) > 0

    def _finished(self, job_id: str, what: str) -> Job:
        job = self.job(job_id)
        if job is None:
            raise LookupError(f"no job {job_id!r} (unknown, or its result expired)")
        if not job.is_finished:
            raise ValueError(
                f"cannot {what} job {job_id}: expected a finished job, got {job.state.name}"
            )
        return job
