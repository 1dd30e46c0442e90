"""What every backend object of one ``TASKS`` entry shares in a process: its connections, the
leases its workers hold, the workers waiting for jobs, and (on PostgreSQL) the thread that
LISTENs and wakes them."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from django.core.signals import setting_changed
from django.db import connections

from headrace.process import running_loop
from headrace.tasks.backends.base import Waiter
from headrace.tasks.backends.database import sql
from headrace.tasks.backends.database.acks import AckQueue
from headrace.tasks.backends.database.connections import OwnConnection, connect_postgres
from headrace.tasks.jobs import Job

__all__ = ["Store", "Waiter", "on_loop", "store_for"]

logger = logging.getLogger("headrace.tasks")


def on_loop() -> bool:
    return running_loop() is not None


class Store:
    """What every backend object of one ``TASKS`` entry shares in a process: connections,
    the leases its workers hold, waiting workers, and the heartbeat and listener threads."""

    def __init__(self, database: str, vendor: str) -> None:
        self.database = database
        self.vendor = vendor
        self.dialect = sql.dialect_for(vendor)
        self.client = OwnConnection(database, vendor, durable=True)
        self.worker = OwnConnection(database, vendor, durable=False)
        self.lock = threading.Lock()
        self.held: dict[str, tuple[str, str]] = {}  # job id -> (lease token, worker id)
        # Held jobs a worker claimed, whose settlement may be batched: job id -> (the job as
        # claimed, when its lease runs out on the backend's clock, as far as this process
        # knows; renewals move it on, a lease found lost drops the entry).
        self.claimed: dict[str, tuple[Job, float]] = {}
        self.acks = AckQueue()
        self.workers: dict[str, list[str]] = {}  # worker id -> queues, workers of this process
        self.waiters: list[Waiter] = []
        self.watchers: dict[str, Callable[[], None]] = {}
        self.pending_cancels: set[str] = set()
        self.finish_waiters: dict[str, list[Callable[[], None]]] = {}
        self.closed = threading.Event()
        self.listening = threading.Event()
        self.listener: threading.Thread | None = None
        self.heartbeat: threading.Thread | None = None
        self.stale_acks = 0
        self.lost_leases = 0
        self.last_maintained: float | None = None  # on the backend's clock
        self.started_at = time.time()

    def wake(self, queue: str | None) -> None:
        with self.lock:
            waiters = [w for w in self.waiters if queue is None or queue in w.queues]
        for waiter in waiters:
            waiter.wake()

    def finished(self, job_id: str) -> None:
        with self.lock:
            callbacks = self.finish_waiters.pop(job_id, [])
            self.watchers.pop(job_id, None)
            self.pending_cancels.discard(job_id)
        for callback in callbacks:
            callback()

    def cancel_requested(self, job_id: str) -> None:
        """Hand a cancel request to the job's watcher, or keep it for the watcher to come
        (a job just claimed, whose runner has not started watching yet)."""
        with self.lock:
            watcher = self.watchers.get(job_id)
            if watcher is None and job_id in self.held:
                self.pending_cancels.add(job_id)
        if watcher is not None:
            watcher()

    def close(self) -> None:
        """Stop the threads (they notice within half a second and close their connection)
        and close the connections."""
        self.closed.set()
        self.client.close()
        self.worker.close()

    # -- the listener (PostgreSQL) ---------------------------------------------------------

    def ensure_listener(self) -> None:
        if self.vendor != "postgresql" or self.closed.is_set():
            return
        with self.lock:
            if self.listener is None:
                self.listener = threading.Thread(
                    target=self._listen, name="headrace-task-listen", daemon=True
                )
                self.listener.start()
        self.listening.wait(5)

    def _listen(self) -> None:
        backoff = 0.1
        while not self.closed.is_set():
            conn = None
            try:
                wrapper = connections[self.database]
                conn = connect_postgres(wrapper, dict(wrapper.get_connection_params()))
                conn.execute(f"LISTEN {sql.NOTIFY_CHANNEL}")
                self.listening.set()
                if backoff > 0.1:
                    logger.warning("listening for task notifications again")
                    self.wake(None)  # notifications may have been missed meanwhile
                backoff = 0.1
                while not self.closed.is_set():
                    for notify in conn.notifies(timeout=0.5):
                        self._notified(notify.payload)
            except Exception as error:
                if self.closed.is_set():
                    return
                logger.error(
                    "task notifications: %s: %s; reconnecting in %.1f s (idle workers poll "
                    "meanwhile)",
                    type(error).__name__,
                    error,
                    backoff,
                )
                self.closed.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()

    def _notified(self, payload: str) -> None:
        kind, name = payload[:1], payload[1:]
        if kind == "q":
            self.wake(name)
        elif kind == "c":
            self.cancel_requested(name)
        else:
            logger.warning("ignoring a task notification with an unknown payload %r", payload)


_stores: dict[tuple[str, int], tuple[Mapping[str, Any], Store]] = {}
_stores_lock = threading.Lock()


def _forget_stores(*, setting: str, **kwargs: Any) -> None:
    if setting in ("TASKS", "DATABASES"):
        with _stores_lock:
            found = list(_stores.values())
            _stores.clear()
        for _, store in found:
            store.close()


setting_changed.connect(_forget_stores)


def store_for(alias: str, params: Mapping[str, Any], database: str, vendor: str) -> Store:
    """The store of a ``TASKS`` entry (one per entry and process; a settings change makes
    new ones and closes the old)."""
    with _stores_lock:
        found = _stores.get((alias, id(params)))
        if found is None:
            # Keep ``params`` alive with its store so that its id is not reused.
            found = _stores[alias, id(params)] = (params, Store(database, vendor))
    return found[1]
