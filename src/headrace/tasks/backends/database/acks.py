"""Acknowledgements in batches: the jobs a worker's loop finishes in one turn are settled by
one statement at the end of the turn.

A worker settles a job it claimed (success or failure) without waiting for the database: the
backend returns the job as it now is at once and queues an :class:`Ack` for the loop; the
queue is written when the turn ends (a ``call_soon`` callback), or earlier, when the backend
makes any other call to the database from that loop — so what one loop does reaches the
database in the order it did it. Until it is written, an acknowledged job keeps its lease
(the heartbeat renews it): if the write fails, it is logged once per outage and tried again
after a growing pause; if the process dies first, the lease lapses and the job runs again
(at-least-once, as always). An ack whose lease token no longer matches (the job passed to
another worker) settles nothing: it is logged and counted in ``statistics().stale_acks``. A
batch the database refuses (not a connection failure) is written again one ack at a time; an
ack refused alone is logged and dropped, and its job runs again when its lease lapses.

Only moves the backend can predict are batched: SUCCEED and FAIL of a job claimed by a worker
(:meth:`~.backend.DatabaseTaskBackend.claim` or ``claim_more``) whose lease is known to be
good (renewed within the last third of ``lease``); anything else is settled at once and
raises :class:`~headrace.tasks.exceptions.LeaseLost` when stale.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from headrace.backoff import Backoff
from headrace.tasks.states import JobState, Move

__all__ = ["Ack", "AckQueue"]

logger = logging.getLogger("headrace.tasks")


@dataclass(frozen=True, slots=True, kw_only=True)
class Ack:
    job_id: str
    token: str  #: the lease token the claim wrote
    move: Move
    state: JobState  #: where the move leads
    changes: Mapping[str, Any]  #: ``return_value`` or ``errors``, as given to ``move_job``


class AckQueue:
    """The acks not yet written, per event loop, and the backoff of their writes (one per
    store: every worker loop of a process shares it)."""

    def __init__(self) -> None:
        self.pending: dict[asyncio.AbstractEventLoop, list[Ack]] = {}
        self.backoff = Backoff("writing task acknowledgements", logger=logger)

    def add(
        self,
        loop: asyncio.AbstractEventLoop,
        ack: Ack,
        send: Callable[[asyncio.AbstractEventLoop], None],
    ) -> None:
        """Queue ``ack``; the first of a turn schedules ``send(loop)`` for the turn's end."""
        batch = self.pending.setdefault(loop, [])
        batch.append(ack)
        if len(batch) == 1:
            loop.call_soon(send, loop)

    def take(self, loop: asyncio.AbstractEventLoop) -> list[Ack]:
        return self.pending.pop(loop, None) or []

    def failed(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[Ack],
        error: BaseException,
        send: Callable[[asyncio.AbstractEventLoop], None],
    ) -> None:
        """Put ``batch`` back in front (order kept), log the first failure of an outage and
        try again after the backoff pause."""
        self.pending.setdefault(loop, [])[:0] = batch
        backoff = self.backoff
        if not backoff.failing:
            backoff.failing = True
            backoff.outages += 1
            logger.warning(
                "%s failed (%s: %s); %d jobs keep their leases meanwhile; retrying with backoff",
                backoff.what,
                type(error).__name__,
                error,
                len(batch),
            )
        backoff.failures += 1
        if not loop.is_closed():
            loop.call_later(backoff.next_pause(), send, loop)

    def succeeded(self) -> None:
        self.backoff.succeeded()
