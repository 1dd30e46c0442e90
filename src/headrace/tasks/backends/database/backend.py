"""Durable tasks in the project's own database: PostgreSQL in production, SQLite to start.

::

    TASKS = {
        "default": {
            "BACKEND": "headrace.tasks.backends.database.DatabaseTaskBackend",
            "QUEUES": ["default", "emails"],
            "OPTIONS": {"database": "default", "lease": 30, "max_deliveries": 3},
        }
    }

Run ``migrate`` once (the tables are the ``headrace`` app's; layout and indexes in
:mod:`headrace.tasks.backends.database.sql`), then ``manage.py runworker --tasks``.

**Transactional enqueue.** From ordinary (sync) code, a job is a row written on Django's own
connection for ``database``: enqueued inside ``atomic()``, it exists only if that transaction
commits, and a worker cannot see it before — the "task ran before the commit" pitfall cannot
happen. (``enqueue_on_commit`` still works, and is needed only on the other backends.) Code
running on an event loop (``aenqueue``, an async view, a worker) uses the backend's own
connection instead: Django's is not usable there, and there is no transaction to join.

**Delivery** (the same guarantees as the other headrace backends): a worker claims a job and
writes its lease (a random token, its worker id, an expiry ``lease`` seconds ahead) in one
transaction; on PostgreSQL the claim takes the row ``FOR UPDATE SKIP LOCKED``, so workers never
wait on each other's claims. A heartbeat thread renews the leases of the jobs in hand every
``lease / 3`` seconds. A lease that lapses (its worker died or hung) puts the job back with a
:class:`~headrace.tasks.exceptions.WorkerLost` error; the ``max_deliveries``-th such loss
dead-letters it (``FAILED``, and a ``TaskDeadLetter`` row to retry from the admin). Settling a
job needs the lease token: a worker that wakes up after its lease passed to another gets
:class:`~headrace.tasks.exceptions.LeaseLost`, its outcome is ignored and counted
(``statistics().stale_acks``). Workers claim only free slots (no prefetch): a worker that
got a job claims up to as many more as it has free slots in one statement (``claim_more``);
delayed jobs are rows, never held in worker memory. Times come from the database's clock.

**Acknowledgements in batches.** The successes and failures a worker's loop settles in one
turn are written by one statement at the end of the turn (or before that loop's next call to
the database, so order is kept); each job keeps its lease until then. A stale one is logged
and counted there instead of raising; a failed write is logged and retried with backoff. See
:mod:`headrace.tasks.backends.database.acks`.

**Waking.** On PostgreSQL an idle worker waits on ``LISTEN headrace_tasks``; enqueue and
requeue statements send ``NOTIFY`` (delivered at commit), a timer wakes it at the next due
time, and ``poll_interval`` (default 5 s) is only a fallback. On SQLite there is no
``LISTEN``: jobs enqueued in the worker's process wake it at once, others within
``poll_interval``. SQLite suits one worker process (and any number of web processes that
enqueue); its writes are serialized by the database file's lock.

**Connections.** The backend opens its own connections (not Django's, which cannot be used on
an event loop) from the same ``DATABASES`` entry: one for workers (on PostgreSQL with
``synchronous_commit = off``: a claim, heartbeat or acknowledgement lost in a database crash
only makes the job run again — at-least-once holds), one for enqueues and reads made on an
event loop, and on PostgreSQL one that listens. Statements run on the calling thread (the
worker's loop: a round trip of a fraction of a millisecond).

``OPTIONS`` (besides those of :mod:`headrace.tasks.backends.base`): ``database`` ("default"),
``lease`` (30 s), ``max_deliveries`` (3), ``poll_interval`` (5 s on PostgreSQL, 1 s on SQLite).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from django.core import checks
from django.db import connections, transaction
from django.tasks.exceptions import TaskResultDoesNotExist

from headrace.process import running_loop
from headrace.tasks.backends.base import HeadraceTaskBackend
from headrace.tasks.backends.database import rows as records
from headrace.tasks.backends.database import sql
from headrace.tasks.backends.database.acks import Ack
from headrace.tasks.backends.database.connections import (
    DjangoExecutor,
    Executor,
    is_disconnect,
)
from headrace.tasks.backends.database.store import Waiter, store_for
from headrace.tasks.base import DEFAULT_RESULT_TTL
from headrace.tasks.exceptions import (
    LeaseLost,
    TaskCancelled,
    TaskExpired,
    WorkerLost,
)
from headrace.tasks.jobs import Job
from headrace.tasks.states import JobState, Move, advance

if TYPE_CHECKING:
    from headrace.tasks.backends.database.inspection import DatabaseInspector

__all__ = ["DatabaseTaskBackend", "DatabaseTaskStatistics"]

logger = logging.getLogger("headrace.tasks")

_OPTION_KEYS: Final = ("database", "lease", "max_deliveries", "poll_interval")
DEFAULT_LEASE: Final = 30.0
DEFAULT_MAX_DELIVERIES: Final = 3
_PURGE_EVERY: Final = 60.0  # seconds between purges of expired results and silent workers
_BATCHED_MOVES: Final = frozenset((Move.SUCCEED, Move.FAIL))
_BATCHED_CHANGES: Final = frozenset(("return_value", "errors"))


@dataclass(frozen=True, slots=True, kw_only=True)
class DatabaseTaskStatistics:
    ready: int  #: waiting jobs of the backend's queues (due or not), in the database
    running: int  #: in the database
    dead: int  #: dead letters not yet retried, in the database
    held: int  #: jobs this process's workers hold leases on
    stale_acks: int  #: settlements ignored in this process (LeaseLost)
    lost_leases: int  #: lapsed leases this process found and put back or dead-lettered


def _positive(options: Mapping[str, Any], name: str, default: float) -> tuple[float, str | None]:
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return default, f"{name} must be a positive number, got {value!r}"
    return float(value), None


class DatabaseTaskBackend(HeadraceTaskBackend):
    """Jobs as rows of the project's database (see the module docstring)."""

    warns_in_transaction = False

    def __init__(self, alias: str, params: Mapping[str, Any]) -> None:
        options = dict(params.get("OPTIONS", {}))
        mine = {name: options.pop(name) for name in _OPTION_KEYS if name in options}
        super().__init__(alias, {**params, "OPTIONS": options})
        self.options = {**self.options, **mine}
        self.database: str = mine.get("database", "default")
        problems = []
        self.lease, problem = _positive(mine, "lease", DEFAULT_LEASE)
        problems.append(problem)
        deliveries = mine.get("max_deliveries", DEFAULT_MAX_DELIVERIES)
        if type(deliveries) is not int or deliveries < 1:
            problems.append(f"max_deliveries must be a positive int, got {deliveries!r}")
            deliveries = DEFAULT_MAX_DELIVERIES
        self.max_deliveries: int = deliveries
        self._uses_db_clock = "clock" not in options
        try:
            self.vendor: str = connections[self.database].vendor
        except Exception as error:
            problems.append(f"database {self.database!r}: {error}")
            self.vendor = "sqlite"
        if self.vendor not in ("postgresql", "sqlite"):
            problems.append(
                f"database {self.database!r} is {self.vendor}; this backend runs on PostgreSQL "
                "or SQLite"
            )
            self.vendor = "sqlite"
        self.poll_interval, problem = _positive(
            mine, "poll_interval", 5.0 if self.vendor == "postgresql" else 1.0
        )
        problems.append(problem)
        self._option_problems.extend(p for p in problems if p)
        self._store = store_for(alias, params, self.database, self.vendor)
        self._sql = self._store.dialect

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        messages = super().check(**kwargs)
        if self.vendor == "sqlite" and not self._option_problems:
            messages.append(
                checks.Info(
                    f"TASKS[{self.alias!r}] keeps jobs in SQLite: run one worker process "
                    "(PostgreSQL for several)",
                    id="headrace.I103",
                )
            )
        return messages

    # -- plumbing --------------------------------------------------------------------------------

    def _now(self) -> float | None:
        """The ``now`` parameter: None lets the database's clock decide."""
        return None if self._uses_db_clock else self.clock.time()

    def _db(self, *, worker: bool = False) -> Executor:
        """Django's connection from sync code; the backend's own on an event loop (after
        writing the loop's pending acks: what a loop does reaches the database in order)."""
        loop = running_loop()
        if loop is None:
            return DjangoExecutor(self.database)
        store = self._store
        if loop in store.acks.pending:
            self._send_acks(loop)
        return store.worker if worker else store.client

    def _run(self, db: Executor, statement: str, **params: Any) -> list[dict[str, Any]]:
        params.setdefault("now", self._now())
        return [records.row(values) for values in db.execute(statement, params)]

    # -- store -----------------------------------------------------------------------------------

    def put_job(self, job: Job, task: Any = None) -> tuple[Job, bool]:
        db = self._db()
        params = {
            "job_id": job.id,
            "check_id": job.id,
            "task_path": job.task_path,
            "queue": job.queue,
            "priority": job.priority,
            "args": records.dumps(job.args),
            "kwargs": records.dumps(job.kwargs),
            "options": records.dumps(dict(job.options)),
            "owner": job.owner,
            "key": job.key,
            # Times the core computed on its clock become offsets from the store's now.
            "due": job.due_at - job.enqueued_at,
            "expires": None if job.expires_at is None else job.expires_at - job.enqueued_at,
            "empty": "[]",
        }
        for _ in range(5):
            rows = self._run(db, self._sql.insert(), **params)
            if rows:
                if isinstance(db, DjangoExecutor) and db.in_atomic_block:
                    transaction.on_commit(
                        functools.partial(self._store.wake, job.queue),
                        using=self.database,
                        robust=True,
                    )
                else:
                    self._store.wake(job.queue)
                return records.job(rows[0], self.alias), True
            found = self._run(db, self._sql.get, job_id=job.id)
            if not found and job.key is not None:
                found = self._run(db, self._sql.get_by_key, key=job.key)
            if found:
                return records.job(found[0], self.alias), False
            # The job holding the key finished between the two statements: try again.
        raise RuntimeError(f"could not store job {job.id}: its key {job.key!r} kept changing")

    def fire_slot(self, job: Job, *, entry: str, slot: float, task: Any = None) -> tuple[Job, bool]:
        """*schedule store* Fire ``slot`` of schedule ``entry`` as ``job`` unless that slot
        or a later one was fired: the slot row and the job are written in one transaction
        (see headrace.tasks.beat)."""
        db = self._db()
        with db.transaction():
            if not db.execute(self._sql.fire_slot, {"entry": entry, "slot": slot}):
                found = self._run(db, self._sql.get, job_id=job.id)
                return (records.job(found[0], self.alias) if found else job), False
            return self.put_job(job, task)

    def last_fired_slot(self, entry: str) -> float | None:
        """*schedule store* The last slot fired for schedule ``entry``, or None."""
        rows = self._db().execute(self._sql.last_fired_slot, {"entry": entry})
        return float(rows[0][0]) if rows else None

    def get_job(self, job_id: str) -> Job | None:
        rows = self._run(self._db(), self._sql.get, job_id=job_id)
        return records.job(rows[0], self.alias) if rows else None

    def claim_nowait(self, queues: Iterable[str], worker_id: str) -> Job | None:
        jobs = self._claim(list(queues), worker_id, 1, batched=False)
        return jobs[0] if jobs else None

    async def claim_more(self, queues: Iterable[str], worker_id: str, limit: int) -> list[Job]:
        """Up to ``limit`` more jobs due now, in one statement, without waiting: a worker
        that just claimed a job asks for as many as it has free slots left (never more, so
        nothing is hoarded)."""
        if limit < 1:
            return []
        return self._claim(list(dict.fromkeys(queues)), worker_id, limit, batched=True)

    def _claim(self, queues: list[str], worker_id: str, limit: int, *, batched: bool) -> list[Job]:
        """Claim up to ``limit`` due jobs under one lease token, in claim order. ``batched``:
        a worker's claim, whose success or failure may be acknowledged in a batch."""
        statement, params = self._sql.claim(queues, limit)
        token = secrets.token_hex(16)
        db = self._db(worker=True)
        params.update(now=self._now(), worker=worker_id, token=token, lease=self.lease)
        found = db.execute(statement, params)
        if not found:
            return []
        if len(found) > 1:
            found.sort(key=records.claim_order)
        jobs = [records.job(records.row(values), self.alias) for values in found]
        store = self._store
        deadline = self.clock.time() + self.lease
        with store.lock:
            for job in jobs:
                store.held[job.id] = (token, worker_id)
                if batched:
                    store.claimed[job.id] = (job, deadline)
        return jobs

    async def claim(
        self,
        queues: Iterable[str],
        worker_id: str,
        *,
        on_wait: Callable[[], None] | None = None,
    ) -> Job:
        store = self._store
        names = list(dict.fromkeys(queues))
        self._register_worker(worker_id, names)
        loop = asyncio.get_running_loop()
        while True:
            future: asyncio.Future[None] = loop.create_future()
            waiter = Waiter(loop, future, frozenset(names))
            with store.lock:
                store.waiters.append(waiter)
            timers: list[Any] = []
            try:
                store.ensure_listener()
                jobs = self._claim(names, worker_id, 1, batched=True)
                if jobs:
                    return jobs[0]
                if self._maintenance_due() and self.maintain(names):
                    continue  # jobs were put back: claim again at once
                due = self._next_due(names)
                if due is not None:
                    timers.append(self.clock.call_at(due, waiter.wake))
                timers.append(loop.call_later(self.poll_interval, waiter.wake))
                if on_wait is not None:
                    on_wait()
                await future
            finally:
                for timer in timers:
                    timer.cancel()
                with store.lock:
                    store.waiters.remove(waiter)

    def _maintenance_due(self) -> bool:
        """Whether an idle worker should run :meth:`maintain` before it waits: at most once
        a second per process (and on each heartbeat), so that a burst of wake-ups does not
        turn into a burst of maintenance statements."""
        now = self.clock.time()
        store = self._store
        with store.lock:
            if store.last_maintained is not None and now - store.last_maintained < min(
                1.0, self.lease / 3
            ):
                return False
            store.last_maintained = now
        return True

    def _next_due(self, queues: list[str]) -> float | None:
        """The next due time of a delayed job, on the backend's clock."""
        statement, params = self._sql.next_due(queues)
        [(due, now)] = self._db(worker=True).execute(statement, {"now": self._now(), **params})
        if due is None:
            return None
        return self.clock.time() + (float(due) - float(now))

    def claim_job(self, job_id: str, worker_id: str) -> Job | None:
        token = secrets.token_hex(16)
        rows = self._run(
            self._db(worker=True),
            self._sql.claim_job,
            job_id=job_id,
            worker=worker_id,
            token=token,
            lease=self.lease,
        )
        if not rows:
            return None
        with self._store.lock:
            self._store.held[job_id] = (token, worker_id)
        return records.job(rows[0], self.alias)

    def move_job(self, job_id: str, move: Any, **changes: Any) -> Job:
        unknown = [
            name for name in changes if name not in records.CHANGE_COLUMNS and name != "due_at"
        ]
        if unknown:
            raise TypeError(f"move_job cannot change {', '.join(unknown)}")
        store = self._store
        with store.lock:
            held = store.held.get(job_id)
            claimed = store.claimed.pop(job_id, None)
        if (
            claimed is not None
            and move in _BATCHED_MOVES
            and changes.keys() <= _BATCHED_CHANGES
            and self.clock.time() < claimed[1] - self.lease / 3  # the lease is surely good
            and held is not None
        ):
            loop = running_loop()
            if loop is not None:  # (a worker's loop: the ack waits for the end of its turn)
                return self._ack(loop, claimed[0], held[0], move, changes)
        if held is not None and JobState.RUNNING in sql.sources(move):
            rows = self._settle(self._db(worker=True), job_id, move, held[0], changes)
            if not rows:
                return self._stale(job_id, move, True)
        else:
            rows = self._move_unleased(job_id, move, changes)
        with store.lock:
            store.held.pop(job_id, None)
            store.pending_cancels.discard(job_id)
        job = records.job(rows[0], self.alias)
        if job.is_finished:
            self._store.finished(job_id)
        elif job.state is JobState.READY:
            self._store.wake(job.queue)
        return job

    def _ack(
        self,
        loop: asyncio.AbstractEventLoop,
        claimed: Job,
        token: str,
        move: Move,
        changes: Mapping[str, Any],
    ) -> Job:
        """Settle a job this worker claimed in the loop's next batch (see :mod:`.acks`); the
        job as it now is, at once."""
        target = advance(claimed.state, move)
        now = self.clock.time()
        ack = Ack(job_id=claimed.id, token=token, move=move, state=target, changes=changes)
        store = self._store
        store.acks.add(loop, ack, self._send_acks)
        with store.lock:
            store.pending_cancels.discard(claimed.id)
        return claimed.evolve(
            state=target,
            finished_at=now,
            result_expires_at=now + self.result_ttl(claimed),
            **changes,
        )

    def _send_acks(self, loop: asyncio.AbstractEventLoop) -> None:
        """Write the acks ``loop`` queued (at the end of its turn, or before its next call
        to the database); a failure is logged and retried with backoff (see :mod:`.acks`)."""
        store = self._store
        batch = store.acks.take(loop)
        if not batch:
            return
        try:
            settled = self._write_acks(store.worker, batch)
        except Exception as error:
            if is_disconnect(error):
                store.acks.failed(loop, batch, error, self._send_acks)
                return
            # The database refused the batch: write the acks one by one, to skip the bad one.
            settled, batch = self._write_acks_one_by_one(loop, batch)
        else:
            store.acks.succeeded()
        with store.lock:
            for ack in batch:
                store.held.pop(ack.job_id, None)
        for ack in batch:
            if ack.job_id in settled:
                store.finished(ack.job_id)
                continue
            store.stale_acks += 1
            logger.warning(
                "task %s: this worker's outcome (%s) was ignored: its lease lapsed and the job "
                "passed to another attempt",
                ack.job_id,
                ack.move.value,
            )

    def _write_acks_one_by_one(
        self, loop: asyncio.AbstractEventLoop, batch: list[Ack]
    ) -> tuple[set[str], list[Ack]]:
        """The settled ids and the acks written or stale. An ack the database refuses (a
        return value PostgreSQL cannot store, say) is logged and dropped: its job's lease
        lapses and it runs again (``WorkerLost``), dead-lettered after ``max_deliveries``.
        If the connection fails meanwhile, the acks left go back in the queue."""
        store = self._store
        settled: set[str] = set()
        done: list[Ack] = []
        for index, ack in enumerate(batch):
            try:
                settled |= self._write_acks(store.worker, [ack])
            except Exception as error:
                if is_disconnect(error):
                    store.acks.failed(loop, batch[index:], error, self._send_acks)
                    break
                logger.exception(
                    "task %s: the database refused this worker's outcome (%s); the job runs "
                    "again when its lease lapses",
                    ack.job_id,
                    ack.move.value,
                )
                with store.lock:
                    store.held.pop(ack.job_id, None)
                continue
            done.append(ack)
        return settled, done

    def _write_acks(self, db: Executor, batch: list[Ack]) -> set[str]:
        """Settle ``batch`` in one statement (PostgreSQL) or one transaction (SQLite); the
        ids of the jobs settled (the others had lost their lease)."""
        if self.vendor == "postgresql":
            params: dict[str, Any] = {
                "now": self._now(),
                "ttl": DEFAULT_RESULT_TTL,
                "ids": [ack.job_id for ack in batch],
                "tokens": [ack.token for ack in batch],
                "states": [ack.state.value for ack in batch],
                "values": [
                    records.change_value("return_value", ack.changes.get("return_value"))
                    for ack in batch
                ],
                "errors": [
                    records.change_value("errors", ack.changes["errors"])
                    if "errors" in ack.changes
                    else None
                    for ack in batch
                ],
            }
            return {job_id for (job_id,) in db.execute(self._sql.settle_batch, params)}  # type: ignore[attr-defined]
        settled = set()
        with db.transaction():
            for ack in batch:
                if self._settle(db, ack.job_id, ack.move, ack.token, ack.changes):
                    settled.add(ack.job_id)
        return settled

    def _settle(
        self, db: Executor, job_id: str, move: Move, token: str, changes: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """A worker ends its attempt: the move out of RUNNING, if its lease still holds."""
        target = advance(JobState.RUNNING, move)
        params: dict[str, Any] = {"job_id": job_id, "token": token, "state": target.value}
        keys = tuple(sorted(name for name in changes if name != "due_at"))
        for name in keys:
            params[name] = records.change_value(name, changes[name])
        if target is JobState.READY:
            now = self.clock.time()
            params["due"] = changes.get("due_at", now) - now
            return self._run(db, self._sql.requeue(keys), **params)
        if self.vendor == "postgresql":
            params["ttl"] = DEFAULT_RESULT_TTL
            return self._run(db, self._sql.finish(keys), **params)  # type: ignore[attr-defined]
        return self._finish_where(
            db,
            "job_id = %(job_id)s AND state = 'RUNNING' AND lease_token = %(token)s",
            {"job_id": job_id, "token": token},
            lambda row: {**row, **{k: changes[k] for k in keys}, "state": target.value},
        )

    def _move_unleased(
        self, job_id: str, move: Move, changes: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """Any other move of the state table (an operator's, or a test walking the table):
        from the state the job is in now, if it is still in it."""
        current = self.get_job(job_id)
        if current is None:
            raise TaskResultDoesNotExist(job_id)
        target = advance(current.state, move)  # InvalidTransition: "expected X, got Y"
        db = self._db(worker=True)
        where = "job_id = %(job_id)s AND state = %(source)s"
        params: dict[str, Any] = {"job_id": job_id, "source": current.state.value}
        keys = tuple(sorted(name for name in changes if name != "due_at"))
        if target.is_finished:
            rows = self._finish_where(
                db,
                where,
                params,
                lambda row: {**row, **{k: changes[k] for k in keys}, "state": target.value},
            )
        else:
            sets = ["state = %(state)s"]
            params["state"] = target.value
            for name in keys:
                sets.append(f"{name} = {self._sql._param(name)}")
                params[name] = records.change_value(name, changes[name])
            if "due_at" in changes:
                sets.append(f"due_at = {self._sql.now} + %(due)s")
                params["due"] = changes["due_at"] - self.clock.time()
            if target is not JobState.RUNNING:
                sets.append("lease_token = NULL, lease_worker = NULL, lease_expires_at = NULL")
            statement = (
                f"UPDATE {sql.JOB} SET {', '.join(sets)} WHERE {where} "
                f"RETURNING {self._sql.returning_live}"
            )
            rows = self._run(db, statement, **params)
        if not rows:  # it moved meanwhile: judge the move against its new state
            return self._move_unleased(job_id, move, changes)
        return rows

    def _stale(self, job_id: str, move: Move, leased: bool) -> Job:
        """Nothing matched: the lease this worker held passed on (LeaseLost), or the job
        was never this worker's (InvalidTransition when the table forbids the move)."""
        with self._store.lock:
            self._store.held.pop(job_id, None)
            self._store.claimed.pop(job_id, None)
        current = self.get_job(job_id)
        if current is None:
            raise TaskResultDoesNotExist(job_id)
        if not leased:
            advance(current.state, move)  # raises InvalidTransition when the table forbids it
        self._store.stale_acks += 1
        raise LeaseLost(
            f"task {job_id}: this worker's lease lapsed and the job passed to another attempt "
            f"(now {current.state.name}); this attempt's outcome ({move.value}) is ignored"
        )

    def _finish_where(
        self,
        db: Executor,
        where: str,
        params: Mapping[str, Any],
        change: Callable[[dict[str, Any]], dict[str, Any]],
        *,
        dead: bool = False,
    ) -> list[dict[str, Any]]:
        """Move the live rows matching ``where`` to the results, ``change``-d (two
        statements in one transaction; the generic path of finishing)."""
        done: list[dict[str, Any]] = []
        now = self._now()
        with db.transaction():
            rows = db.execute(self._sql.delete_live(where), {"now": now, **params})
            for values in rows:
                row = change(records.row(values))
                insert = {
                    column: records.column_value(column, row[column])
                    if column in sql.JSON_COLUMNS
                    else row[column]
                    for column in sql.JOB_COLUMNS
                }
                ttl = (row["options"] or {}).get("result_ttl")
                insert.update(
                    now=now,
                    ttl=DEFAULT_RESULT_TTL if ttl is None else float(ttl),
                    return_value=None
                    if row.get("return_value") is None
                    else records.dumps(row["return_value"]),
                )
                [result] = db.execute(self._sql.insert_result, insert)
                done.append(records.row(result))
                if dead:
                    db.execute(
                        self._sql.insert_dead,
                        {
                            "now": now,
                            **{
                                column: records.column_value(column, row[column])
                                if column in sql.JSON_COLUMNS
                                else row[column]
                                for column in sql.DEAD_COLUMNS
                                if column != "dead_at"
                            },
                        },
                    )
        return done

    def request_cancel(self, job_id: str) -> Job | None:
        db = self._db()
        error = records.error(TaskCancelled, "cancelled before it started")
        rows = self._finish_where(
            db,
            f"job_id = %(job_id)s AND state IN ('{JobState.READY.value}')",
            {"job_id": job_id},
            lambda row: {
                **row,
                "state": advance(JobState(row["state"]), Move.CANCEL).value,
                "cancel_requested": True,
                "errors": [*row["errors"], error],
            },
        )
        if rows:
            self._store.finished(job_id)
            return records.job(rows[0], self.alias)
        rows = self._run(db, self._sql.flag_cancel, job_id=job_id)
        if rows:
            if self.vendor == "postgresql":
                db.execute(self._sql.notify_cancel, {"job_id": job_id})  # type: ignore[attr-defined]
            self._store.cancel_requested(job_id)
            return records.job(rows[0], self.alias)
        return self.get_job(job_id)

    def watch_job(self, job_id: str, on_cancel: Callable[[], None]) -> None:
        store = self._store
        with store.lock:
            store.watchers[job_id] = on_cancel
            pending = job_id in store.pending_cancels
            store.pending_cancels.discard(job_id)
        if pending:
            on_cancel()

    def unwatch_job(self, job_id: str) -> None:
        with self._store.lock:
            self._store.watchers.pop(job_id, None)

    def set_progress(self, job_id: str, value: Mapping[str, Any]) -> None:
        progress = dict(value)
        self._db(worker=True).execute(
            self._sql.set_progress, {"job_id": job_id, "progress": records.dumps(progress)}
        )
        store = self._store
        with store.lock:  # a batched ack returns the job as claimed, with this change
            claimed = store.claimed.get(job_id)
            if claimed is not None:
                store.claimed[job_id] = (claimed[0].evolve(progress=progress), claimed[1])

    async def wait_finished(self, job_id: str, timeout: float | None = None) -> None:
        loop = asyncio.get_running_loop()
        event = asyncio.Event()

        def done() -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)

        self._add_finish_waiter(job_id, done)
        try:
            async with asyncio.timeout(timeout):
                pause = 0.05
                while not self._is_finished(job_id):
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(event.wait(), pause)
                    pause = min(pause * 2, 1.0)
        finally:
            self._remove_finish_waiter(job_id, done)

    def wait_finished_sync(self, job_id: str, timeout: float | None = None) -> None:
        event = threading.Event()
        self._add_finish_waiter(job_id, event.set)
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            pause = 0.05
            while not self._is_finished(job_id):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"task {job_id} did not finish within {timeout} s")
                event.wait(pause if left is None else min(pause, left))
                pause = min(pause * 2, 1.0)
        finally:
            self._remove_finish_waiter(job_id, event.set)

    def _is_finished(self, job_id: str) -> bool:
        job = self.get_job(job_id)
        if job is None:
            raise TaskResultDoesNotExist(job_id)
        return job.is_finished

    def _add_finish_waiter(self, job_id: str, callback: Callable[[], None]) -> None:
        with self._store.lock:
            self._store.finish_waiters.setdefault(job_id, []).append(callback)

    def _remove_finish_waiter(self, job_id: str, callback: Callable[[], None]) -> None:
        with self._store.lock:
            callbacks = self._store.finish_waiters.get(job_id)
            if callbacks and callback in callbacks:
                callbacks.remove(callback)
                if not callbacks:
                    del self._store.finish_waiters[job_id]

    def ready_count(self, queues: Iterable[str]) -> int:
        statement, params = self._sql.count_ready(list(queues))
        [(count,)] = self._db(worker=True).execute(statement, {"now": self._now(), **params})
        return int(count)

    # -- leases ----------------------------------------------------------------------------------

    def _register_worker(self, worker_id: str, queues: list[str]) -> None:
        store = self._store
        with store.lock:
            if worker_id in store.workers:
                return
            store.workers[worker_id] = queues
            start = store.heartbeat is None
            if start:
                store.heartbeat = threading.Thread(
                    target=self._beat_forever, name="headrace-task-heartbeat", daemon=True
                )
        self._beat_once(worker_id)
        if start and store.heartbeat is not None:
            store.heartbeat.start()

    def _beat_once(self, worker_id: str) -> None:
        store = self._store
        with store.lock:
            queues = store.workers.get(worker_id)
            running = sum(1 for _, w in store.held.values() if w == worker_id)
        if queues is None:
            return
        store.worker.execute(
            self._sql.heartbeat,
            {
                "now": self._now(),
                "worker": worker_id,
                "hostname": socket.gethostname()[:255],
                "pid": os.getpid(),
                "queues": records.dumps(queues),
                "running": running,
            },
        )

    def forget_worker(self, worker_id: str) -> None:
        """A worker of this process stopped: drop its heartbeat row."""
        store = self._store
        with store.lock:
            store.workers.pop(worker_id, None)
        store.worker.execute(self._sql.forget_worker, {"worker": worker_id})

    def detach_worker_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        super().detach_worker_loop(loop)
        store = self._store
        self._send_acks(loop)  # the loop stops: now or never
        left = store.acks.take(loop)
        if left:
            logger.error(
                "%d task acknowledgements could not be written before the worker stopped; "
                "those jobs run again when their leases lapse",
                len(left),
            )
            with store.lock:
                for ack in left:
                    store.held.pop(ack.job_id, None)
        with store.lock:
            idle = [w for w in store.workers if not any(h == w for _, h in store.held.values())]
        for worker_id in idle:
            try:
                self.forget_worker(worker_id)
            except Exception as error:  # it goes at the next purge anyway
                logger.warning(
                    "could not remove the heartbeat row of task worker %s (%s: %s)",
                    worker_id,
                    type(error).__name__,
                    error,
                )

    def renew_leases(self) -> None:
        """Extend the leases this process's workers hold; hand cancellations requested from
        other processes to the jobs' watchers; log leases found lost."""
        store = self._store
        with store.lock:
            held = dict(store.held)
            workers = sorted({w for _, w in held.values()} | set(store.workers))
        if not workers:
            return
        deadline = self.clock.time() + self.lease  # (taken before: the database's is later)
        statement, params = self._sql.renew(workers)
        rows = store.worker.execute(statement, {"now": self._now(), "lease": self.lease, **params})
        renewed = {job_id: (token, bool(cancel)) for job_id, token, cancel in rows}
        with store.lock:
            for job_id, (token, _) in held.items():
                claimed = store.claimed.get(job_id)
                if claimed is None:
                    continue
                found = renewed.get(job_id)
                if found is None or found[0] != token:
                    del store.claimed[job_id]  # its settlement must not be batched now
                else:
                    store.claimed[job_id] = (claimed[0], deadline)
        for job_id, (token, _) in held.items():
            found = renewed.get(job_id)
            if found is None or found[0] != token:
                logger.warning(
                    "task %s: the lease of this worker lapsed before it could be renewed; "
                    "another attempt may run it",
                    job_id,
                )
            elif found[1]:
                store.cancel_requested(job_id)

    def maintain(self, queues: Iterable[str] | None = None) -> int:
        """Renew this process's leases, put back or dead-letter jobs whose lease lapsed,
        and fail the jobs that expired unstarted; the number of jobs moved. Workers call it
        before they wait and from their heartbeat."""
        names = list(queues) if queues is not None else sorted(self.queues)
        self.renew_leases()
        moved = self._reap(names)
        return moved + self._expire(names)

    def _reap(self, queues: list[str]) -> int:
        store = self._store
        db = store.worker
        lost = records.error(
            WorkerLost,
            "the worker running this job stopped renewing its lease (it died or hung)",
        )
        statement, params = self._sql.requeue_lost(queues)
        requeued = self._run(
            db, statement, lost=records.dumps(lost), max=self.max_deliveries, **params
        )
        for row in requeued:
            logger.warning(
                "task %s (%s): its worker was lost; put back (loss %d of %d)",
                row["job_id"],
                row["task_path"],
                row["losses"],
                self.max_deliveries,
            )
            store.wake(row["queue"])
        lapsed, params = self._sql.lapsed(queues)
        dead = self._finish_where(
            db,
            f"{lapsed} AND losses + 1 >= %(max)s",
            {"max": self.max_deliveries, **params},
            lambda row: {
                **row,
                "state": JobState.FAILED.value,
                "losses": row["losses"] + 1,
                "errors": [*row["errors"], lost],
            },
            dead=True,
        )
        for row in dead:
            job = records.job(row, self.alias)
            logger.error(
                "task %s (%s): its worker was lost %d times; dead-lettered",
                job.id,
                job.task_path,
                row["losses"],
            )
            store.finished(job.id)
            self.announce_finished(job)
        store.lost_leases += len(requeued) + len(dead)
        return len(requeued) + len(dead)

    def _expire(self, queues: list[str]) -> int:
        expired, params = self._sql.expired(queues)
        error = records.error(TaskExpired, "expired before a worker took it")
        rows = self._finish_where(
            self._store.worker,
            expired,
            params,
            lambda row: {
                **row,
                "state": advance(JobState(row["state"]), Move.EXPIRE).value,
                "errors": [*row["errors"], error],
            },
        )
        for row in rows:
            job = records.job(row, self.alias)
            self._store.finished(job.id)
            self.announce_finished(job)
        return len(rows)

    def purge(self) -> None:
        """Delete results past their lifetime and heartbeat rows of silent workers."""
        from headrace.tasks.backends.database.inspection import fold_results

        db = self._store.worker
        # Each result's share of the dashboard's counters moves to headrace_taskcounter.
        fold_results(db, self.vendor, f"result_expires_at <= {self._sql.now}", {"now": self._now()})
        db.execute(self._sql.purge_workers, {"now": self._now(), "age": 10 * self.lease})

    def _beat_forever(self) -> None:
        store = self._store
        interval = self.lease / 3
        last_purge = 0.0
        failing = False
        while not store.closed.wait(interval):
            try:
                with store.lock:
                    workers = list(store.workers)
                    queues = sorted({q for qs in store.workers.values() for q in qs})
                for worker_id in workers:
                    self._beat_once(worker_id)
                self.maintain(queues or None)
                if time.monotonic() - last_purge >= _PURGE_EVERY:
                    self.purge()
                    last_purge = time.monotonic()
                if failing:
                    failing = False
                    logger.warning("task heartbeat works again")
            except Exception:
                if not failing:
                    failing = True
                    logger.exception("task heartbeat failed; retrying every %.1f s", interval)

    # -- introspection ---------------------------------------------------------------------------

    def inspector(self) -> DatabaseInspector:
        """What the dashboard and ``/metrics`` read (counters derived from the rows: see
        :mod:`headrace.tasks.backends.database.inspection`)."""
        from headrace.tasks.backends.database.inspection import DatabaseInspector

        return DatabaseInspector(self)

    def statistics(self) -> DatabaseTaskStatistics:
        from headrace.tasks.backends.database.models import TaskDeadLetter, TaskJob

        queues = sorted(self.queues)
        db = self._db()
        among, params = self._sql.among("queue", "q", queues)
        counts = dict(
            db.execute(
                f"SELECT state, count(*) FROM {TaskJob._meta.db_table} WHERE {among} "
                "GROUP BY state",
                params,
            )
        )
        [(dead,)] = db.execute(
            f"SELECT count(*) FROM {TaskDeadLetter._meta.db_table} WHERE retried_as IS NULL",
            {},
        )
        store = self._store
        with store.lock:
            held = len(store.held)
        return DatabaseTaskStatistics(
            ready=int(counts.get("READY", 0)),
            running=int(counts.get("RUNNING", 0)),
            dead=int(dead),
            held=held,
            stale_acks=store.stale_acks,
            lost_leases=store.lost_leases,
        )

    def retry_dead(self, dead_letter_id: int) -> str:
        """Enqueue a dead letter's job again, as a new job (its old result stays FAILED);
        the new job's id. Raises ``LookupError`` if there is no such dead letter."""
        from headrace.tasks.backends.database.models import TaskDeadLetter

        letter = TaskDeadLetter.objects.using(self.database).get(pk=dead_letter_id)
        if letter.retried_as:
            return letter.retried_as
        task = self.resolve_task(letter.task_path)
        task = task.using(priority=letter.priority, queue_name=letter.queue)
        result = self.enqueue_job(task, letter.args, letter.kwargs, owner=letter.owner)
        letter.retried_as = result.id
        letter.save(update_fields=["retried_as"])
        return result.id
