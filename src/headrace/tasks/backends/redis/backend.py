"""The Redis task backend: durable jobs, at-least-once, with leases instead of a visibility
timeout.

::

    TASKS = {
        "default": {
            "BACKEND": "headrace.tasks.backends.redis.RedisTaskBackend",
            "QUEUES": ["default", "emails"],
            "OPTIONS": {
                "hosts": ["redis://localhost:6379/0"],   # or "layer": "default"
                "lease": 30,                             # seconds; renewed by heartbeat
                "max_deliveries": 3,
            },
        }
    }

A worker claims a job and writes its lease in one script, renews the leases it holds by
heartbeat and acknowledges with the lease's token: a job whose worker dies goes back to its
queue when the lease lapses (with a ``WorkerLost`` error), and is dead-lettered after
``max_deliveries`` such deaths; a long job on a healthy worker runs once, however long. The key
layout is in :mod:`.layout`, the scripts in :mod:`.scripts`; delivery guarantees are explained
in ``docs/explanation/task-delivery.md``.

``OPTIONS`` (besides the core's, see :mod:`headrace.tasks.backends.base`):

``hosts`` / ``cluster``
    Servers as the Redis channel layer takes them: ``redis://`` / ``rediss://`` URLs (with a
    password or an ACL user), ``(host, port)`` pairs, dicts of redis-py arguments, a dict with
    ``sentinels`` and ``master_name`` for Sentinel; ``cluster: True`` for Redis Cluster.
``layer``
    A ``CHANNEL_LAYERS`` alias whose Redis servers to use instead of ``hosts``.
``prefix`` ("headrace-tasks")
    The start of every key.
``lease`` (30), ``heartbeat_interval`` (lease / 6), ``max_deliveries`` (3)
    How long a claimed job stays a worker's without a heartbeat; how often a worker renews
    its leases (and learns of cancellations requested elsewhere); how many worker deaths a
    job survives before it is dead-lettered.
``block_timeout`` (5), ``connect_timeout`` (5)
    How long an idle worker's blocking pop waits before it is issued again; how long a
    command keeps trying to reach Redis before it raises :class:`TaskStoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from django.core import checks
from django.tasks.exceptions import TaskResultDoesNotExist
from redis.exceptions import NoScriptError, ReadOnlyError, RedisError

from headrace.backoff import Backoff, pause_for, supervise
from headrace.exceptions import ConfigurationError, HeadraceError
from headrace.process import running_loop
from headrace.tasks.backends.base import HeadraceTaskBackend
from headrace.tasks.exceptions import LeaseLost
from headrace.tasks.jobs import Job
from headrace.tasks.states import JobState, Move, advance

from .inspection import QueueInspection, QueueStatistics
from .layout import QueueKeys, check_queue_name
from .monitor import (
    RedisInspector,
    beacon,
    prune_worker_records,
    worker_records,
    write_worker_records,
)
from .scripts import ACK, CANCEL, CLAIM, CLAIM_ONE, ENQUEUE, MOVE, PROGRESS, RENEW, Script
from .settings import (
    DEFAULT_LEASE,
    DEFAULT_MAX_DELIVERIES,
    DEFAULT_PREFIX,
    OWN_OPTIONS,
    RedisTaskSettings,
    TaskStoreUnavailable,
)
from .store import (
    CONNECTION_ERRORS,
    Ack,
    LoopPart,
    close_with_loop,
    encode_changes,
    fields_of,
    job_from_fields,
    job_from_values,
    never_sent,
    number_of,
    resolve,
    shared_store,
    start_generator,
    text_of,
)

__all__ = [
    "DEFAULT_LEASE",
    "DEFAULT_MAX_DELIVERIES",
    "DEFAULT_PREFIX",
    "QueueStatistics",
    "RedisTaskBackend",
    "RedisTaskSettings",
    "RedisTaskStatistics",
    "TaskStoreUnavailable",
]

logger = logging.getLogger("headrace.tasks")

_ID_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisTaskStatistics:
    """This process's view (counters since the backend's store was made here)."""

    leases_held: int
    renewals: int  #: heartbeats that renewed this process's leases
    leases_lost: int  #: leases found gone at a heartbeat (the job was handed to another)
    stale_acks: int  #: acknowledgements ignored because their lease token was stale
    outages: int  #: times a heartbeat started failing


# -- the shared state of one TASKS entry ---------------------------------------------------------


class RedisTaskBackend(QueueInspection, HeadraceTaskBackend):
    """Jobs in Redis, run at least once (see the module docstring)."""

    def __init__(self, alias: str, params: Mapping[str, Any]) -> None:
        all_options = dict(params.get("OPTIONS") or {})
        core = {k: v for k, v in all_options.items() if k not in OWN_OPTIONS}
        super().__init__(alias, {**params, "OPTIONS": core})
        self.options = all_options
        #: Only a clock given in OPTIONS (tests) replaces the Redis server's clock.
        self._now_from_clock = "clock" in all_options
        self._settings_problems: list[str] = []
        try:
            settings = RedisTaskSettings.from_options(alias, all_options)
        except ConfigurationError as error:
            self._settings_problems = list(error.problems or [str(error)])
            settings = RedisTaskSettings()
        for queue in self.queues:
            try:
                check_queue_name(queue)
            except ConfigurationError as error:
                self._settings_problems.append(f"TASKS[{alias!r}]['QUEUES']: {error}")
        if self._settings_problems:
            raise ConfigurationError(
                "; ".join(self._settings_problems), problems=self._settings_problems
            )
        self.settings = settings
        self._store = shared_store(alias, params, settings)

    # -- calling Redis ---------------------------------------------------------------------------

    def _now(self) -> str:
        return repr(self.clock.time()) if self._now_from_clock else ""

    def _local_now(self) -> float:
        return self.clock.time()

    def _sync(self, queue: str, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run ``script`` for ``queue``; retried while Redis cannot be reached (the command
        never left), up to ``connect_timeout``; then :class:`TaskStoreUnavailable`."""
        self._send_acks_first()
        client = self._store.clients()[self._store.client_index(queue)]
        deadline = time.monotonic() + self.settings.connect_timeout
        attempt = 0
        while True:
            try:
                try:
                    return client.evalsha(script.sha, len(keys), *keys, *args)
                except NoScriptError:
                    return client.eval(script.source, len(keys), *keys, *args)
            except (*CONNECTION_ERRORS, ReadOnlyError) as error:
                # A replica's refusal (a Sentinel fail-over under way) wrote nothing either.
                if not never_sent(error) or time.monotonic() >= deadline:
                    raise TaskStoreUnavailable(
                        f"Redis for task queue {queue!r} cannot be reached ({error}); "
                        f"the {script.name} was not done"
                    ) from error
                pause = pause_for(attempt, first=0.02, cap=0.5, jitter=0.1, rand=0.5)
                attempt += 1
                if attempt == 1:
                    logger.warning(
                        "Redis for task queue %r unreachable (%s); retrying", queue, error
                    )
                time.sleep(min(pause, max(0.0, deadline - time.monotonic())))

    async def _async(
        self, part: LoopPart, queue: str, script: Script, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        client = part.connections.clients[self._store.client_index(queue)]
        try:
            try:
                return await client.evalsha(script.sha, len(keys), *keys, *args)
            except NoScriptError:
                return await client.eval(script.source, len(keys), *keys, *args)
        except CONNECTION_ERRORS as error:
            raise TaskStoreUnavailable(
                f"Redis for task queue {queue!r} cannot be reached ({error})"
            ) from error

    def _loop_part(self) -> LoopPart:
        loop = asyncio.get_running_loop()
        part = self._store.loops.get(loop)
        if part is None:
            part = self._store.loops[loop] = LoopPart(self._store.topology)
            part.closer = close_with_loop(part)
            part.starter = loop.create_task(start_generator(part.closer))
        return part

    # -- store -------------------------------------------------------------------------------------

    def put_job(self, job: Job, task: Any = None) -> tuple[Job, bool]:
        return self._put(job, task)

    def fire_slot(self, job: Job, *, entry: str, slot: float, task: Any = None) -> tuple[Job, bool]:
        """*schedule store* Add ``job`` only if ``slot`` is later than the last slot fired for
        schedule ``entry`` — the check, the record and the add are one script, so of several
        schedulers exactly one fires each slot (see :mod:`headrace.tasks.beat`)."""
        return self._put(job, task, fire=(entry, slot))

    def last_fired_slot(self, entry: str) -> float | None:
        """*schedule store* The last slot fired for schedule ``entry`` (any queue), or None."""
        self._send_acks_first()
        found: list[float] = []
        for queue in self.queues:
            client = self._store.clients()[self._store.client_index(queue)]
            value = client.hget(self._store.queue_keys(queue).fired, entry)
            if value is not None:
                found.append(float(value))
        return max(found) if found else None

    def _put(
        self, job: Job, task: Any = None, fire: tuple[str, float] | None = None
    ) -> tuple[Job, bool]:
        keys = self._store.queue_keys(job.queue)
        delay = max(0.0, job.due_at - job.enqueued_at)
        expires_in = None if job.expires_at is None else job.expires_at - job.enqueued_at
        spec = json.dumps(
            {
                "task_path": job.task_path,
                "args": job.args,
                "kwargs": job.kwargs,
                "queue": job.queue,
                "priority": job.priority,
                "backend": job.backend,
                "key": job.key,
                "owner": job.owner,
                "options": dict(job.options),
            }
        )
        job_key = keys.job(job.id)
        reply = self._sync(
            job.queue,
            ENQUEUE,
            (
                *keys.common,
                job_key,
                keys.key(job.key) if job.key is not None else job_key,
                keys.fired,
            ),
            (
                self._now(),
                keys.base,
                job.id,
                spec,
                job.priority,
                repr(delay),
                "" if expires_in is None else repr(expires_in),
                "1" if job.key is not None else "0",
                repr(self.result_ttl(job)),
                "" if fire is None else fire[0],
                "" if fire is None else repr(fire[1]),
                job.task_path,
            ),
        )
        self._store.remember(job.id, job.queue)
        if int(reply[0]) == 1:
            now = float(text_of(reply[2]))
            return job.evolve(
                enqueued_at=now,
                due_at=now + delay,
                expires_at=None if expires_in is None else now + expires_in,
            ), True
        existing = self.get_job(text_of(reply[1]))
        if existing is None:
            if fire is not None:  # the slot was fired; its job's result is gone
                return job, False
            return self._put(job, task)  # it finished and expired in between: store ours
        return existing, False

    def _find(self, job_id: str) -> tuple[str, dict[str, str]] | None:
        if not isinstance(job_id, str) or not 0 < len(job_id) <= 80:
            return None
        if not _ID_CHARS.issuperset(job_id):
            return None
        store = self._store
        self._send_acks_first()
        known = store.queue_of.get(job_id)
        queues = [known] if known is not None else []
        queues += [q for q in self.queues if q != known]
        for queue in queues:
            client = store.clients()[store.client_index(queue)]
            try:
                flat = client.execute_command("HGETALL", store.queue_keys(queue).job(job_id))
            except CONNECTION_ERRORS as error:
                raise TaskStoreUnavailable(f"Redis cannot be reached ({error})") from error
            fields = flat if isinstance(flat, dict) else fields_of(flat)
            if fields:
                fields = {text_of(k): text_of(v) for k, v in fields.items()}
                if self._now_from_clock:
                    expiry = number_of(fields, "rexp")
                    if expiry is not None and expiry <= self.clock.time():
                        return None
                store.remember(job_id, queue)
                return queue, fields
        return None

    def get_job(self, job_id: str) -> Job | None:
        found = self._find(job_id)  # sends this loop turn's acknowledgements first
        return None if found is None else job_from_fields(job_id, found[1])

    def _claim_reply(self, queue: str, reply: Any) -> tuple[list[Job], float | None, list[str]]:
        expired = [text_of(i) for i in reply[2]]
        if int(reply[0]) == 1:
            store = self._store
            taken = reply[1]
            jobs: list[Job] = []
            for index in range(0, len(taken), 2):
                job = job_from_values(taken[index + 1])
                store.leases[job.id] = (queue, text_of(taken[index]))
                store.claimed[job.id] = job
                store.remember(job.id, queue)
                jobs.append(job)
            return jobs, None, expired
        wait = text_of(reply[1])
        return [], (float(wait) if wait else None), expired

    def _claim_args(self, keys: QueueKeys, worker_id: str, count: int = 1) -> tuple[Any, ...]:
        s = self.settings
        return (self._now(), keys.base, worker_id, repr(s.lease), s.max_deliveries, count)

    def _announce_finished_by_claim(self, queue: str, ids: list[str]) -> None:
        for job_id in ids:
            job = self.get_job(job_id)
            if job is not None:
                self._finished_here(job)
                self.announce_finished(job)

    def _ordered(self, queues: Iterable[str]) -> list[str]:
        names = list(dict.fromkeys(queues))
        if len(names) > 1:  # take turns, so one busy queue cannot starve the others
            start = next(self._store.rotation) % len(names)
            names = names[start:] + names[:start]
        return names

    def claim_nowait(self, queues: Iterable[str], worker_id: str) -> Job | None:
        for queue in self._ordered(queues):
            keys = self._store.queue_keys(queue)
            reply = self._sync(queue, CLAIM, keys.common, self._claim_args(keys, worker_id))
            jobs, _, expired = self._claim_reply(queue, reply)
            self._announce_finished_by_claim(queue, expired)
            if jobs:
                self._ensure_heartbeat()
                return jobs[0]
        return None

    async def claim(
        self,
        queues: Iterable[str],
        worker_id: str,
        *,
        on_wait: Callable[[], None] | None = None,
    ) -> Job:
        part = self._loop_part()
        names = list(dict.fromkeys(queues))
        while True:
            part.woken.clear()  # a token from here on wakes the wait below
            waits: list[float] = []
            for queue in self._ordered(names):
                keys = self._store.queue_keys(queue)
                reply = await self._async(
                    part, queue, CLAIM, keys.common, self._claim_args(keys, worker_id)
                )
                jobs, wait, expired = self._claim_reply(queue, reply)
                self._announce_finished_by_claim(queue, expired)
                if jobs:
                    self._ensure_heartbeat()
                    return jobs[0]
                if wait is not None:
                    waits.append(wait)
            if on_wait is not None:
                on_wait()
            await self._wait_for_work(part, names, min(waits) if waits else None)

    async def claim_more(self, queues: Iterable[str], worker_id: str, limit: int) -> list[Job]:
        """Up to ``limit`` more jobs due now, in one script call per queue, without waiting:
        a worker that just claimed a job asks for as many as it has free slots left (never
        more, so nothing is hoarded)."""
        part = self._loop_part()
        found: list[Job] = []
        for queue in self._ordered(queues):
            if len(found) >= limit:
                break
            keys = self._store.queue_keys(queue)
            args = self._claim_args(keys, worker_id, limit - len(found))
            reply = await self._async(part, queue, CLAIM, keys.common, args)
            jobs, _, expired = self._claim_reply(queue, reply)
            self._announce_finished_by_claim(queue, expired)
            found += jobs
        return found

    async def _wait_for_work(self, part: LoopPart, queues: list[str], due: float | None) -> None:
        """Block until an enqueue pushes a wake token, ``due`` seconds pass (a delayed job or
        a lease falls due) or ``block_timeout`` passes."""
        for queue in queues:
            listener = part.listeners.get(queue)
            if listener is None or listener.done():
                part.listeners[queue] = asyncio.ensure_future(
                    supervise(  # a bug in it is logged and it runs again: never a silent stop
                        f"waiting for task queue {queue!r}",
                        functools.partial(self._listen, part, queue),
                        logger=logger,
                    )
                )
        loop = asyncio.get_running_loop()
        timed_out: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not timed_out.done():
                timed_out.set_result(None)

        # A due time is on the backend's clock (a test's manual one); the periodic re-check
        # after block_timeout is real time.
        timer = None if due is None else self.clock.call_at(self.clock.time() + due, wake)
        woken: asyncio.Future[Any] = asyncio.ensure_future(part.woken.wait())
        part.waiters += 1
        part.waiting.set()
        try:
            await asyncio.wait(
                [woken, timed_out],
                timeout=self.settings.block_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            part.waiters -= 1
            if not part.waiters:
                part.waiting.clear()
            if timer is not None:
                timer.cancel()
            woken.cancel()

    async def _listen(self, part: LoopPart, queue: str) -> None:
        """Pop the queue's wake tokens while a claim of this loop waits (one blocking
        connection per queue, kept open: cancelling a pop would cost a reconnect). A token
        that comes when nobody here waits any more is pushed back for another worker."""
        client = part.connections.clients[self._store.client_index(queue)]
        key = self._store.queue_keys(queue).wake
        backoff = Backoff(f"waiting for task queue {queue!r} on Redis", logger=logger)
        while True:
            await part.waiting.wait()
            try:
                token = await client.blpop([key], timeout=self.settings.block_timeout)
                if token is not None and not part.waiting.is_set():
                    await client.lpush(key, b"1")  # hand it on: this loop is busy now
            except CONNECTION_ERRORS as error:
                part.woken.set()  # the waiting claim meets the outage and backs off
                await backoff.failed(error)
                continue
            backoff.succeeded()
            if token is not None:
                part.woken.set()

    def claim_job(self, job_id: str, worker_id: str) -> Job | None:
        found = self._find(job_id)
        if found is None:
            return None
        queue, _ = found
        keys = self._store.queue_keys(queue)
        reply = self._sync(
            queue,
            CLAIM_ONE,
            (*keys.common, keys.job(job_id)),
            (self._now(), keys.base, job_id, worker_id, repr(self.settings.lease)),
        )
        if int(reply[0]) != 1:
            return None
        self._store.leases[job_id] = (queue, text_of(reply[1]))
        return job_from_fields(job_id, fields_of(reply[2]))

    def move_job(self, job_id: str, move: Any, **changes: Any) -> Job:
        store = self._store
        found_lease = store.leases.get(job_id)
        if found_lease is not None:
            queue, token = found_lease
            if move in (Move.SUCCEED, Move.FAIL) and job_id in store.claimed:
                part = self._running_part()
                if part is not None:
                    return self._ack(part, job_id, queue, token, move, changes)
        else:
            found = self._find(job_id)
            if found is None:
                raise TaskResultDoesNotExist(job_id)
            queue, token = found[0], ""
        keys = store.queue_keys(queue)
        pairs, delay = encode_changes(changes, self._local_now())
        reply = self._sync(
            queue,
            MOVE,
            (*keys.common, keys.job(job_id)),
            (
                self._now(),
                keys.base,
                job_id,
                move.value,
                token,
                repr(delay),
                repr(self.settings.lease),
                self.worker_id,
                *pairs,
            ),
        )
        code = int(reply[0])
        if code == -1:
            raise TaskResultDoesNotExist(job_id)
        if code == -2:
            advance(JobState(text_of(reply[1])), move)  # raises InvalidTransition
            raise AssertionError("unreachable")
        if code == -3:
            store.leases.pop(job_id, None)
            store.claimed.pop(job_id, None)
            store.gone.discard(job_id)
            store.stale_acks += 1
            raise LeaseLost(
                f"task {job_id}: '{move.value}' ignored: this worker's lease lapsed and the job "
                f"was handed on (it is {text_of(reply[1])} now)"
            )
        job = job_from_fields(job_id, fields_of(reply[1]))
        store.gone.discard(job_id)
        if job.state is JobState.RUNNING:
            store.leases[job_id] = (queue, text_of(reply[2]))
            store.claimed[job_id] = job
        else:
            store.leases.pop(job_id, None)
            store.claimed.pop(job_id, None)
        if job.is_finished:
            self._finished_here(job)
        return job

    def _running_part(self) -> LoopPart | None:
        loop = running_loop()
        return None if loop is None else self._store.loops.get(loop)

    def _ack(
        self,
        part: LoopPart,
        job_id: str,
        queue: str,
        token: str,
        move: Move,
        changes: Mapping[str, Any],
    ) -> Job:
        """Settle a job this worker holds, its acknowledgement sent with the others of this
        loop turn at the end of the turn (one round trip for many jobs; any store call made
        before then sends them first). The job as it now is comes back at once; a stale
        token is logged and counted when the reply comes (``stale_acks``), not raised."""
        store = self._store
        claimed = store.claimed.pop(job_id)
        store.leases.pop(job_id, None)
        store.gone.discard(job_id)
        now = self._local_now()
        pairs, _ = encode_changes(changes, now)
        local = claimed.evolve(
            state=advance(claimed.state, move),
            finished_at=now,
            result_expires_at=now + self.result_ttl(claimed),
            **changes,
        )
        # The ACK script's part for this job: id, move, token, number of field pairs, pairs.
        command = (job_id, move.value, token, len(pairs) // 2, *pairs)
        part.acks.append((queue, job_id, command))
        if len(part.acks) == 1:
            part.send_acks = self._send_acks
            asyncio.get_running_loop().call_soon(self._send_acks, part)
        self._finished_here(local)
        return local

    def _send_acks(self, part: LoopPart) -> None:
        """Send the acknowledgements queued in this loop turn, one ACK script call per queue
        (a callback at the end of the turn; any store call before it sends them first, so
        everything this process does reaches Redis in order). A connection failure is logged
        once per outage and retried after a pause; the jobs' leases keep them safe meanwhile
        (were this process to die first, they would run again elsewhere)."""
        store = self._store
        batch, part.acks = part.acks, []
        by_queue: dict[str, list[Ack]] = {}
        for ack in batch:
            by_queue.setdefault(ack[0], []).append(ack)
        groups = list(by_queue.values())
        for number, acks in enumerate(groups):
            try:
                replies = self._send_ack_group(acks)
            except (*CONNECTION_ERRORS, ReadOnlyError) as error:
                # This queue's acks and the rest go again after a pause (one that did land
                # before its reply was lost comes back stale, and is logged so).
                part.acks[:0] = [ack for rest in groups[number:] for ack in rest]
                backoff = store.ack_backoff
                if not backoff.failing:
                    logger.warning("%s failed (%s); retrying", backoff.what, error)
                    backoff.outages += 1
                backoff.failing = True
                backoff.failures += 1
                pause = backoff.next_pause()
                asyncio.get_running_loop().call_later(pause, self._send_acks, part)
                return
            except RedisError as error:  # the script failed: sending it again would too
                for _, job_id, _ in acks:
                    logger.error("acknowledging task %s failed: %r", job_id, error)
                continue
            for (_queue, job_id, _), (code, state) in zip(acks, replies, strict=True):
                if code == -3:
                    store.stale_acks += 1
                    logger.warning(
                        "task %s: this worker's result was ignored: its lease lapsed and the "
                        "job was handed on (it is %s now)",
                        job_id,
                        text_of(state),
                    )
                elif code == -1:
                    logger.warning(
                        "task %s finished, but Redis no longer has it (purged, or Redis lost "
                        "its data): its result is dropped",
                        job_id,
                    )
                elif code != 1:
                    logger.error("acknowledging task %s failed: it is %s", job_id, text_of(state))
        if batch:
            store.ack_backoff.succeeded()

    def _send_ack_group(self, acks: list[Ack]) -> list[tuple[int, Any]]:
        """One ACK script call for the acks of one queue: a ``(code, state)`` reply each."""
        queue = acks[0][0]
        keys = self._store.queue_keys(queue)
        client = self._store.clients()[self._store.client_index(queue)]
        args: list[Any] = [self._now(), keys.base]
        for _, _, part in acks:
            args += part
        nkeys = len(keys.common)
        try:
            codes = client.evalsha(ACK.sha, nkeys, *keys.common, *args)
        except NoScriptError:
            codes = client.eval(ACK.source, nkeys, *keys.common, *args)
        return [(int(codes[i]), codes[i + 1]) for i in range(0, len(codes), 2)]

    def _send_acks_first(self) -> None:
        """Before another store call from the worker's loop: send this turn's acks."""
        part = self._running_part()
        if part is not None and part.acks:
            self._send_acks(part)

    def _finished_here(self, job: Job) -> None:
        for callback in self._store.finish_waiters.pop(job.id, []):
            callback()

    def request_cancel(self, job_id: str) -> Job | None:
        found = self._find(job_id)
        if found is None:
            return None
        queue, fields = found
        if JobState(fields["state"]).is_finished:
            return job_from_fields(job_id, fields)
        keys = self._store.queue_keys(queue)
        reply = self._sync(
            queue, CANCEL, (*keys.common, keys.job(job_id)), (self._now(), keys.base, job_id)
        )
        if int(reply[0]) != 1:
            return None
        job = job_from_fields(job_id, fields_of(reply[1]))
        if job.is_finished:
            self._finished_here(job)
        elif job.state is JobState.RUNNING:
            watcher = self._store.watchers.get(job_id)
            if watcher is not None:
                watcher()
        return job

    def watch_job(self, job_id: str, on_cancel: Callable[[], None]) -> None:
        self._store.watchers[job_id] = on_cancel

    def unwatch_job(self, job_id: str) -> None:
        self._store.watchers.pop(job_id, None)

    def set_progress(self, job_id: str, value: Mapping[str, Any]) -> None:
        queue = self._store.queue_of.get(job_id)
        if queue is None:
            found = self._find(job_id)
            if found is None:
                return
            queue = found[0]
        key = self._store.queue_keys(queue).job(job_id)
        self._sync(queue, PROGRESS, (key,), (json.dumps(dict(value)),))

    async def wait_finished(self, job_id: str, timeout: float | None = None) -> None:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        pause = 0.005
        while True:
            job = self.get_job(job_id)
            if job is None:
                raise TaskResultDoesNotExist(job_id)
            if job.is_finished:
                return
            future: asyncio.Future[None] = loop.create_future()

            def done(future: asyncio.Future[None] = future) -> None:
                if not loop.is_closed():
                    loop.call_soon_threadsafe(resolve, future)

            self._store.finish_waiters.setdefault(job_id, []).append(done)
            wait = pause if deadline is None else min(pause, deadline - loop.time())
            if wait <= 0:
                raise TimeoutError(f"task {job_id} did not finish within {timeout} s")
            try:
                # Woken when a worker of this process finishes it, else look again after
                # ``wait`` (another process's worker finishes it without telling us).
                await asyncio.wait([future], timeout=wait)
            finally:
                waiters = self._store.finish_waiters.get(job_id)
                if waiters is not None and done in waiters:
                    waiters.remove(done)
            pause = min(pause * 2, 0.25)

    def wait_finished_sync(self, job_id: str, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.005
        while True:
            job = self.get_job(job_id)
            if job is None:
                raise TaskResultDoesNotExist(job_id)
            if job.is_finished:
                return
            event = threading.Event()
            self._store.finish_waiters.setdefault(job_id, []).append(event.set)
            wait = pause if deadline is None else min(pause, deadline - time.monotonic())
            if wait <= 0:
                raise TimeoutError(f"task {job_id} did not finish within {timeout} s")
            event.wait(wait)
            waiters = self._store.finish_waiters.get(job_id)
            if waiters is not None and event.set in waiters:
                waiters.remove(event.set)
            pause = min(pause * 2, 0.25)

    def ready_count(self, queues: Iterable[str]) -> int:
        total = 0
        now = self._local_now()
        for queue in queues:
            keys = self._store.queue_keys(queue)
            client = self._store.clients()[self._store.client_index(queue)]
            try:
                total += int(client.zcard(keys.ready))
                total += int(client.zcount(keys.delayed, "-inf", now))
            except CONNECTION_ERRORS as error:
                raise TaskStoreUnavailable(f"Redis cannot be reached ({error})") from error
        return total

    # -- heartbeat -------------------------------------------------------------------------------

    def _ensure_heartbeat(self) -> None:
        loop = running_loop()
        if loop is None:
            return  # eager mode, no loop: nothing to renew from
        part = self._loop_part()
        if part.heartbeat is None or part.heartbeat.done():
            part.heartbeat = loop.create_task(
                supervise(
                    "renewing task leases", functools.partial(self._heartbeat, part), logger=logger
                )
            )

    async def _heartbeat(self, part: LoopPart) -> None:
        """Renew this process's leases until it holds none; learn of cancellations."""
        store = self._store
        backoff = store.heartbeat_backoff
        while len(store.leases) > len(store.gone):
            await asyncio.sleep(self.settings.heartbeat_interval)
            try:
                await self.renew_leases(part)
            except (RedisError, HeadraceError, OSError) as error:
                await backoff.failed(error)
                continue
            backoff.succeeded()

    async def renew_leases(self, part: LoopPart | None = None) -> None:
        """Push every lease this process holds forward by ``lease`` (one call per queue)."""
        store = self._store
        if part is None:
            part = self._loop_part()
        by_queue: dict[str, list[str]] = {}
        for job_id, (queue, token) in list(store.leases.items()):
            if job_id not in store.gone:
                by_queue.setdefault(queue, []).extend((job_id, token))
        for queue, pairs in by_queue.items():
            keys = store.queue_keys(queue)
            reply = await self._async(
                part,
                queue,
                RENEW,
                (keys.leases, keys.stats),
                (self._now(), keys.base, repr(self.settings.lease), *pairs),
            )
            store.renewals += 1
            for job_id in map(text_of, reply[0]):
                watcher = store.watchers.get(job_id)
                if watcher is not None:
                    watcher()
            for job_id in map(text_of, reply[1]):
                if job_id in store.leases and job_id not in store.gone:
                    store.gone.add(job_id)
                    store.leases_lost += 1
                    logger.warning(
                        "the lease of task %s lapsed while this worker ran it (paused or cut "
                        "off for longer than %g s); another worker may run it again",
                        job_id,
                        self.settings.lease,
                    )

    # -- the dashboard ---------------------------------------------------------------------------

    def inspector(self) -> RedisInspector:
        """What the dashboard and ``/metrics`` read (see :mod:`.monitor`): counts, counters and
        workers from Redis, so the same for every process and kept across restarts."""
        return RedisInspector(self)

    def attach_worker_loop(self, loop: asyncio.AbstractEventLoop, layer: Any) -> None:
        """Also start the loop's beacon: its workers' records in ``B workers``."""
        super().attach_worker_loop(loop, layer)
        part = self._loop_part()
        if part.beacon is None or part.beacon.done():
            try:
                prune_worker_records(self)
            except (RedisError, OSError) as error:
                logger.warning("pruning stale task worker records failed (%s)", error)
            part.beacon = loop.create_task(
                supervise(
                    "writing task worker records",
                    functools.partial(beacon, self, loop),
                    logger=logger,
                )
            )

    def detach_worker_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Stop the loop's beacon and write its workers' last records (marked down)."""
        part = self._store.loops.get(loop)
        if part is not None and part.beacon is not None:
            part.beacon.cancel()
            part.beacon = None
        try:
            write_worker_records(self, worker_records(self, loop))
        except (RedisError, OSError) as error:
            logger.warning("writing the stopped task workers' records failed (%s)", error)
        super().detach_worker_loop(loop)

    # -- checks and introspection ----------------------------------------------------------------

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        messages = super().check(**kwargs)
        messages.extend(self._persistence_check())
        return messages

    def _persistence_check(self) -> list[checks.CheckMessage]:
        """Warn when a reachable Redis keeps nothing on disk (asked once, 0.5 s at most; an
        unreachable server or a refused INFO says nothing here: runtime errors will)."""
        found: list[checks.CheckMessage] = []
        for index, client in enumerate(self._store.clients()):
            try:
                info = client.info("persistence")
                config = client.config_get("save") if not info.get("aof_enabled") else {}
            except Exception as error:  # unreachable, or CONFIG refused by an ACL
                logger.debug("persistence check of TASKS[%r] skipped: %s", self.alias, error)
                continue
            if not info.get("aof_enabled") and not text_of(config.get("save", "")).strip():
                found.append(
                    checks.Warning(
                        f"TASKS[{self.alias!r}]: Redis server {index} runs without persistence "
                        "(no AOF, no RDB snapshots): a restart loses every queued job and result",
                        hint="Turn on appendonly (appendfsync everysec) for durable tasks.",
                        id="headrace.W110",
                    )
                )
        return found

    def statistics(self) -> RedisTaskStatistics:
        store = self._store
        return RedisTaskStatistics(
            leases_held=len(store.leases) - len(store.gone),
            renewals=store.renewals,
            leases_lost=store.leases_lost,
            stale_acks=store.stale_acks,
            outages=store.heartbeat_backoff.outages,
        )
