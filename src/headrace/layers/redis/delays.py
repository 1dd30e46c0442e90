"""Delayed messages of the Redis layer: scheduling them, and moving them when they are due.

A delayed message waits in its target's shard's sorted set (:attr:`Keys.delayed`). The
process that scheduled it keeps its due time in a process-wide heap and arms a timer in the
event loop; when it fires, one mover at a time takes every due message with the ``MOVE_DUE``
script, which delivers those for channels inside Redis and hands group messages back here.
Any reading process also sweeps its shard on each heartbeat, and :meth:`move_due` over every
shard is the safety net ``manage.py rundelay`` runs.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Iterable
from typing import Final

from headrace.layers import rules
from headrace.layers.clock import TimerHandle
from headrace.layers.redis import layout
from headrace.layers.redis.connection import LoopConnections
from headrace.layers.redis.layout import DelayedKind
from headrace.layers.redis.scripts import MOVE_DUE, SCHEDULE
from headrace.layers.redis.sender import Sender
from headrace.layers.redis.shared import Counts, Params
from headrace.layers.redis.topology import Topology

__all__ = ["Delays"]

_MOVE_BATCH: Final = 500
_MAX_STORED_CAPACITY: Final = 2**32 - 1  # a delayed entry stores its target's capacity in 4 bytes


class Delays:
    """The delayed messages of one layer in one event loop."""

    def __init__(
        self,
        conn: LoopConnections,
        topology: Topology,
        params: Params,
        counts: Counts,
        sender: Sender,
        pending: list[tuple[float, int]],
    ) -> None:
        self._conn = conn
        self._topology = topology
        self._params = params
        self._clock = params.clock
        self._capacity_of = params.capacity_of
        self._counts = counts
        self._sender = sender
        #: ``(due, shard)`` of this process's own delayed messages: a heap shared by every
        #: loop of the process.
        self._pending = pending
        self._timer: TimerHandle | None = None
        self._timer_due = 0.0
        self._moving = False  # a move of due delayed messages is in flight
        self._move_again = False  # a timer fired meanwhile: look again when it is done
        self._moved: list[asyncio.Future[None]] = []  # wait_moved() callers

    async def wait_moved(self) -> None:
        """Until every delayed message of this process due by now has been moved."""
        while self._moving or (self._pending and self._pending[0][0] <= self._clock.time()):
            if not self._moving:
                self._on_due()  # due, but its timer has not fired in this loop: move now
                if not self._moving:
                    return  # closed
            future: asyncio.Future[None] = self._conn.loop.create_future()
            self._moved.append(future)
            await future

    def stop(self) -> None:
        """Cancel the timer (the loop is closing, or Redis was flushed)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def schedule(self, kind: DelayedKind, target: str, payload: bytes, due: float) -> None:
        """Store a sealed ``payload`` for ``target`` (a channel or group), due at ``due``."""
        owner = rules.non_local_name(target) if kind is DelayedKind.PROCESS else target
        shard = self._topology.shard_of(owner)
        keys = self._topology.keys[shard]
        ttl = int((max(0.0, due - self._clock.time()) + self._params.expiry + 3600) * 1000)
        capacity = (
            0 if kind is DelayedKind.GROUP else min(self._capacity_of(target), _MAX_STORED_CAPACITY)
        )
        await self._conn.merged_script(
            shard,
            SCHEDULE,
            (keys.delayed, keys.sequence),
            (),
            (repr(due), kind.pack(capacity, target, payload), ttl),
        )
        self._counts.delayed += 1
        heapq.heappush(self._pending, (due, shard))
        self._arm()

    def _arm(self) -> None:
        if not self._pending or self._conn.closed:
            return
        due = self._pending[0][0]
        if self._timer is not None:
            if self._timer_due == due:
                return
            self._timer.cancel()
        self._timer_due = due
        self._timer = self._clock.call_at(due, self._on_due)

    def _on_due(self) -> None:
        self._timer = None
        if self._conn.closed:
            return
        if self._moving:
            self._move_again = True  # one mover at a time: under load each move takes more
            return
        self._moving = True
        self._conn.spawn(self._keep_moving())

    async def _keep_moving(self) -> None:
        """Move due messages until no timer fired during the last move."""
        try:
            while True:
                self._move_again = False
                await self.move_due()
                if not self._move_again or self._conn.closed:
                    return
        finally:
            self._moving = False
            moved, self._moved = self._moved, []
            for future in moved:
                if not future.done():
                    future.set_result(None)

    async def move_due(self, shards: Iterable[int] | None = None) -> int:
        """Take every delayed message now due from ``shards`` and deliver it; returns how
        many were taken.

        Without ``shards``: the shards where this process's own due messages wait.
        """
        now = self._clock.time()
        pending = self._pending
        # From here on this process's messages due by now are on their way, not pending. The
        # heap is popped, never rebuilt: with thousands of delayed messages in flight a full
        # pass per timer made every move cost O(pending).
        due_here: list[tuple[float, int]] = []
        while pending and pending[0][0] <= now:
            due_here.append(heapq.heappop(pending))
        if shards is None:
            shards = sorted({shard for _, shard in due_here})
        else:
            shards = list(shards)
            for entry in due_here:
                if entry[1] not in shards:
                    heapq.heappush(pending, entry)  # due elsewhere: that shard's move takes it
        moved = 0
        for shard in shards:
            keys = self._topology.keys[shard]
            while True:
                taken, delivered, refused, expired, groups, left = await self._conn.script(
                    shard,
                    MOVE_DUE,
                    (keys.delayed,),
                    repr(now),
                    _MOVE_BATCH,
                    repr(self._params.expiry),
                    self._params.ttl_ms,
                    keys.tag,
                    layout.NO_ORIGIN,
                )
                moved += taken
                self._counts.sent += delivered
                self._counts.dropped_full += refused
                self._counts.expired += expired
                # What the script leaves to us: group messages (their normal channel members
                # live on other shards), and the groups of channels found with an expired head.
                work = [
                    self._deliver_late_group(groups[index], float(groups[index + 1]), now)
                    for index in range(0, len(groups), 2)
                ]
                work += [
                    self._sender.leave_groups(
                        left[index].decode(), [g.decode() for g in left[index + 1]]
                    )
                    for index in range(0, len(left), 2)
                ]
                if work:
                    await asyncio.gather(*work)
                if taken < _MOVE_BATCH:
                    break
        self._arm()
        return moved

    async def _deliver_late_group(self, entry: bytes, due: float, now: float) -> None:
        _, group, payload = layout.parse_delayed_entry(entry)
        expires_at = max(due, now) + self._params.expiry  # as the in-memory layer: from delivery
        self._counts.group_sends += 1
        await self._sender.deliver_group(group, payload, expires_at, now)
