"""The in-process task backend: jobs in this process's memory, no server at all.

::

    TASKS = {
        "default": {
            "BACKEND": "headrace.tasks.backends.memory.MemoryTaskBackend",
            "QUEUES": ["default", "emails"],
            "OPTIONS": {},   # see headrace.tasks.backends.base
        }
    }

Jobs live as long as the process: they are not durable (part 2 puts them on Redis). Every
backend object made for the same ``TASKS`` entry — Django makes one per thread or context —
shares one store, so a job enqueued by a request is seen by the worker that ``runserver`` or
``runworker --tasks`` runs in the same process. The store is thread-safe; its waits and
timers run on the worker's event loop.

Layout: a dict of :class:`~headrace.tasks.jobs.Job` values by id; per queue a heap of ready
jobs (highest priority first, then first ready) and a heap of delayed ones by due time; a dict
of live idempotency keys; a heap of finished results by expiry time. Heap entries are removed
lazily: an entry whose job has moved on is skipped when it reaches the top.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.core.signals import setting_changed
from django.tasks.exceptions import TaskResultDoesNotExist

from headrace.layers.clock import Clock
from headrace.tasks.backends.base import HeadraceTaskBackend, Waiter, wake_future
from headrace.tasks.exceptions import TaskCancelled, TaskExpired
from headrace.tasks.jobs import Job, JobError, copy_job, job_copier
from headrace.tasks.states import JobState, Move, advance

__all__ = ["MemoryTaskBackend", "MemoryTaskStatistics"]

_Effect = Callable[[], None]
#: A claimed job: ``_claimed(job, state, started_at, last_attempted_at, worker_ids)``.
_claimed = job_copier("state", "started_at", "last_attempted_at", "worker_ids")


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryTaskStatistics:
    ready: int  #: waiting jobs (due or not)
    running: int
    finished: int  #: finished results still kept
    enqueued: int  #: jobs added since the store was made


class _Store:
    """The shared state of one TASKS entry (see the module docstring)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.lock = threading.Lock()
        self.jobs: dict[str, Job] = {}
        self.tasks: dict[str, Any] = {}
        self.ready: dict[str, list[tuple[int, int, str]]] = {}
        self.delayed: dict[str, list[tuple[float, int, str]]] = {}
        self.entry: dict[str, int] = {}  # job id -> sequence number of its live heap entry
        self.keys: dict[str, str] = {}
        self.expiring: list[tuple[float, str]] = []
        self.waiters: list[Waiter] = []
        self.finish_waiters: dict[str, list[_Effect]] = {}
        self.watchers: dict[str, _Effect] = {}
        self.seq = itertools.count()
        self.enqueued = 0
        self.fired: dict[str, float] = {}  # schedule entry -> last slot fired (beat)

    # All methods below run with the lock held; the ones returning effects leave them to be
    # called after it is released.

    def schedule(self, job: Job, now: float) -> Sequence[_Effect]:
        seq = next(self.seq)
        queue = job.queue
        self.entry[job.id] = seq
        if job.due_at > now:
            # (A waiting worker woken below re-arms its timer for the earlier due time.)
            heapq.heappush(_heap(self.delayed, queue), (job.due_at, seq, job.id))
        else:
            heapq.heappush(_heap(self.ready, queue), (-job.priority, seq, job.id))
        return self.wake(queue) if self.waiters else ()

    def wake(self, queue: str) -> list[_Effect]:
        """The wake-ups of the workers waiting on ``queue``, each taken off the list: one
        wake-up per wait (a burst of enqueues does not wake the same worker again and again;
        it claims them all when it runs)."""
        woken = [w for w in self.waiters if queue in w.queues]
        if woken:
            self.waiters = [w for w in self.waiters if w not in woken]
        return [w.wake for w in woken]

    def promote(self, queue: str, now: float) -> None:
        heap = self.delayed.get(queue)
        while heap and heap[0][0] <= now:
            _, seq, job_id = heapq.heappop(heap)
            if self.entry.get(job_id) != seq:
                continue
            job = self.jobs[job_id]
            new = next(self.seq)
            self.entry[job_id] = new
            heapq.heappush(_heap(self.ready, queue), (-job.priority, new, job_id))

    def top(self, queue: str) -> tuple[int, int, str] | None:
        heap = self.ready.get(queue)
        while heap:
            entry = heap[0]
            if self.entry.get(entry[2]) == entry[1]:
                return entry
            heapq.heappop(heap)
        return None

    def next_due(self, queues: Iterable[str]) -> float | None:
        best: float | None = None
        for queue in queues:
            heap = self.delayed.get(queue)
            while heap and self.entry.get(heap[0][2]) != heap[0][1]:
                heapq.heappop(heap)
            if heap and (best is None or heap[0][0] < best):
                best = heap[0][0]
        return best

    def purge(self, now: float) -> None:
        while self.expiring and self.expiring[0][0] <= now:
            _, job_id = heapq.heappop(self.expiring)
            job = self.jobs.get(job_id)
            if job is not None and job.is_finished and (job.result_expires_at or 0) <= now:
                del self.jobs[job_id]
                self.tasks.pop(job_id, None)

    def finish(self, job: Job) -> Sequence[_Effect]:
        """Bookkeeping for a job that has just finished (with its ``result_expires_at``)."""
        assert job.result_expires_at is not None
        self.entry.pop(job.id, None)
        if job.key is not None and self.keys.get(job.key) == job.id:
            del self.keys[job.key]
        self.watchers.pop(job.id, None)
        heapq.heappush(self.expiring, (job.result_expires_at, job.id))
        return self.finish_waiters.pop(job.id, ())


def _heap(heaps: dict[str, list[Any]], queue: str) -> list[Any]:
    """The queue's heap in ``heaps``, made on first use (``setdefault`` would make an empty
    list on every call)."""
    heap = heaps.get(queue)
    if heap is None:
        heap = heaps[queue] = []
    return heap


_stores: dict[tuple[str, int], tuple[Mapping[str, Any], _Store]] = {}
_stores_lock = threading.Lock()


def _forget_stores(*, setting: str, **kwargs: Any) -> None:
    if setting == "TASKS":
        with _stores_lock:
            _stores.clear()


setting_changed.connect(_forget_stores)


class MemoryTaskBackend(HeadraceTaskBackend):
    """Jobs in this process's memory (see the module docstring)."""

    def __init__(self, alias: str, params: Mapping[str, Any]) -> None:
        super().__init__(alias, params)
        with _stores_lock:
            found = _stores.get((alias, id(params)))
            if found is None:
                # Keep ``params`` alive with its store so that its id is not reused.
                found = _stores[alias, id(params)] = (params, _Store(self.clock))
        self._store = found[1]
        self.clock = self._store.clock

    # -- store ----------------------------------------------------------------------------------

    def put_job(self, job: Job, task: Any = None) -> tuple[Job, bool]:
        store = self._store
        with store.lock:
            now = store.clock.time()
            store.purge(now)
            existing = store.jobs.get(job.id)
            if existing is not None:
                return existing, False
            if job.key is not None:
                live = store.keys.get(job.key)
                if live is not None:
                    return store.jobs[live], False
                store.keys[job.key] = job.id
            store.jobs[job.id] = job
            if task is not None:
                store.tasks[job.id] = task
            store.enqueued += 1
            effects = store.schedule(job, now)
        for effect in effects:
            effect()
        return job, True

    def get_job(self, job_id: str) -> Job | None:
        store = self._store
        with store.lock:
            store.purge(store.clock.time())
            return store.jobs.get(job_id)

    def task_for_job(self, job: Job) -> Any:
        task = self._store.tasks.get(job.id)  # the very object it was enqueued with
        return task if task is not None else super().task_for_job(job)

    def _claim_locked(
        self, queues: Iterable[str], worker_id: str, now: float
    ) -> tuple[Job | None, list[Job]]:
        store = self._store
        expired: list[Job] = []
        while True:
            best: tuple[int, int, str] | None = None
            for queue in queues:
                store.promote(queue, now)
                top = store.top(queue)
                if top is not None and (best is None or top < best):
                    best = top
            if best is None:
                return None, expired
            job = store.jobs[best[2]]
            heapq.heappop(store.ready[job.queue])
            del store.entry[job.id]
            if job.expires_at is not None and job.expires_at <= now:
                job = job.evolve(
                    state=advance(job.state, Move.EXPIRE),
                    errors=(*job.errors, _error(TaskExpired, "expired before a worker took it")),
                    finished_at=now,
                    result_expires_at=now + self.result_ttl(job),
                )
                waiters = store.finish(job)
                store.jobs[job.id] = job
                expired.append(job)
                for effect in waiters:
                    effect()  # thread-safe wake-ups only
                continue
            state = advance(job.state, Move.CLAIM)
            job = _claimed(job, state, now, now, (*job.worker_ids, worker_id))
            store.jobs[job.id] = job
            return job, expired

    def claim_nowait(self, queues: Iterable[str], worker_id: str) -> Job | None:
        store = self._store
        with store.lock:
            job, expired = self._claim_locked(queues, worker_id, store.clock.time())
        for gone in expired:
            self.announce_finished(gone)
        return job

    async def claim(
        self,
        queues: Iterable[str],
        worker_id: str,
        *,
        on_wait: Callable[[], None] | None = None,
    ) -> Job:
        store = self._store
        names = queues if isinstance(queues, list | tuple) else list(queues)
        while True:
            waiter: Waiter | None = None
            with store.lock:
                now = store.clock.time()
                job, expired = self._claim_locked(names, worker_id, now)
                if job is None:
                    loop = asyncio.get_running_loop()
                    waiter = Waiter(loop, loop.create_future(), frozenset(names))
                    store.waiters.append(waiter)
                    due = store.next_due(names)
            for gone in expired:
                self.announce_finished(gone)
            if job is not None:
                return job
            assert waiter is not None
            timer = store.clock.call_at(due, waiter.wake) if due is not None else None
            try:
                if on_wait is not None:
                    on_wait()
                await waiter.future
            finally:
                if timer is not None:
                    timer.cancel()
                with store.lock:
                    if waiter in store.waiters:  # (a wake-up took it off already)
                        store.waiters.remove(waiter)

    async def claim_more(self, queues: Iterable[str], worker_id: str, limit: int) -> list[Job]:
        """Up to ``limit`` more jobs due now, in one step under the store's lock and without
        waiting: a worker that has just claimed a job fills its other free slots with them
        (never more, so other workers of the store still get the rest)."""
        store = self._store
        names = queues if isinstance(queues, list | tuple) else list(queues)
        found: list[Job] = []
        gone: list[Job] = []
        with store.lock:
            now = store.clock.time()
            while len(found) < limit:
                job, expired = self._claim_locked(names, worker_id, now)
                gone += expired
                if job is None:
                    break
                found.append(job)
        for job in gone:
            self.announce_finished(job)
        return found

    def claim_job(self, job_id: str, worker_id: str) -> Job | None:
        store = self._store
        with store.lock:
            job = store.jobs.get(job_id)
            if job is None or job.state is not JobState.READY:
                return None
            store.entry.pop(job_id, None)
            now = store.clock.time()
            job = job.evolve(
                state=advance(job.state, Move.CLAIM),
                started_at=now,
                last_attempted_at=now,
                worker_ids=(*job.worker_ids, worker_id),
            )
            store.jobs[job_id] = job
            return job

    def move_job(self, job_id: str, move: Any, **changes: Any) -> Job:
        store = self._store
        effects: Sequence[_Effect] = ()
        with store.lock:
            job = store.jobs.get(job_id)
            if job is None:
                raise TaskResultDoesNotExist(job_id)
            now = store.clock.time()
            state = changes["state"] = advance(job.state, move)
            if state.is_finished:
                changes["finished_at"] = now
                changes["result_expires_at"] = now + self.result_ttl(job)
            job = copy_job(job, changes)  # (our own dict: the call made it)
            if state is JobState.READY:
                effects = store.schedule(job, now)
            elif state.is_finished:
                effects = store.finish(job)
            else:
                store.entry.pop(job_id, None)  # claimed: off the ready and delayed heaps
            store.jobs[job_id] = job
        for effect in effects:
            effect()
        return job

    def request_cancel(self, job_id: str) -> Job | None:
        store = self._store
        effects: Sequence[_Effect] = ()
        with store.lock:
            job = store.jobs.get(job_id)
            if job is None or job.is_finished:
                return job
            now = store.clock.time()
            if job.state is JobState.READY:
                job = job.evolve(
                    state=advance(job.state, Move.CANCEL),
                    cancel_requested=True,
                    errors=(*job.errors, _error(TaskCancelled, "cancelled before it started")),
                    finished_at=now,
                    result_expires_at=now + self.result_ttl(job),
                )
                effects = store.finish(job)
            else:
                job = job.evolve(cancel_requested=True)
                watcher = store.watchers.get(job_id)
                if watcher is not None:
                    effects = [watcher]
            store.jobs[job_id] = job
        for effect in effects:
            effect()
        return job

    def watch_job(self, job_id: str, on_cancel: Callable[[], None]) -> None:
        store = self._store
        with store.lock:
            store.watchers[job_id] = on_cancel
            requested = store.jobs[job_id].cancel_requested
        if requested:
            on_cancel()

    def unwatch_job(self, job_id: str) -> None:
        self._store.watchers.pop(job_id, None)  # one dict operation: atomic without the lock

    def set_progress(self, job_id: str, value: Mapping[str, Any]) -> None:
        store = self._store
        with store.lock:
            job = store.jobs.get(job_id)
            if job is not None:
                store.jobs[job_id] = job.evolve(progress=value)

    async def wait_finished(self, job_id: str, timeout: float | None = None) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def done() -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(wake_future, future)

        if not self._add_finish_waiter(job_id, done):
            return
        await asyncio.wait_for(future, timeout)

    def wait_finished_sync(self, job_id: str, timeout: float | None = None) -> None:
        event = threading.Event()
        if not self._add_finish_waiter(job_id, event.set):
            return
        if not event.wait(timeout):
            raise TimeoutError(f"task {job_id} did not finish within {timeout} s")

    def _add_finish_waiter(self, job_id: str, callback: _Effect) -> bool:
        """Register ``callback`` for when the job finishes; False if it already has."""
        store = self._store
        with store.lock:
            job = store.jobs.get(job_id)
            if job is None:
                raise TaskResultDoesNotExist(job_id)
            if job.is_finished:
                return False
            store.finish_waiters.setdefault(job_id, []).append(callback)
            return True

    def fire_slot(self, job: Job, *, entry: str, slot: float, task: Any = None) -> tuple[Job, bool]:
        """*schedule store* Fire ``slot`` of schedule ``entry`` as ``job`` if no later or
        equal slot of it was fired; the check and the record are one step under the lock,
        so of several schedulers exactly one fires each slot (see headrace.tasks.beat)."""
        store = self._store
        with store.lock:
            last = store.fired.get(entry)
            if last is not None and slot <= last:
                return store.jobs.get(job.id, job), False
            store.fired[entry] = slot
        # Only the caller that recorded the slot gets here, so the job cannot be added twice.
        return self.put_job(job, task)

    def last_fired_slot(self, entry: str) -> float | None:
        """*schedule store* The last slot fired for schedule ``entry``, or None."""
        with self._store.lock:
            return self._store.fired.get(entry)

    def ready_count(self, queues: Iterable[str]) -> int:
        store = self._store
        with store.lock:
            now = store.clock.time()
            count = 0
            for queue in queues:
                store.promote(queue, now)
                heap = store.ready.get(queue, [])
                count += sum(1 for _, seq, job_id in heap if store.entry.get(job_id) == seq)
            return count

    # -- introspection ----------------------------------------------------------------------------

    def statistics(self) -> MemoryTaskStatistics:
        store = self._store
        with store.lock:
            states = [job.state for job in store.jobs.values()]
            return MemoryTaskStatistics(
                ready=states.count(JobState.READY),
                running=states.count(JobState.RUNNING),
                finished=sum(1 for s in states if s.is_finished),
                enqueued=store.enqueued,
            )


def _error(cls: type[BaseException], message: str) -> JobError:
    return JobError(
        exception_class_path=f"{cls.__module__}.{cls.__qualname__}",
        traceback=f"{cls.__module__}.{cls.__qualname__}: {message}\n",
    )
