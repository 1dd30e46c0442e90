"""Writing group memberships back into Redis after Redis lost them.

Group membership lives in Redis (:meth:`Keys.group`), and the members themselves are known
only to the process that reads them. A Redis restart without persistence (or a fail-over
before replication, or a flush) loses the groups while every process still holds its
members and every client stays connected; group sends would then reach nobody, silently.

So each process writes back what it knows, with ``HSETNX`` (a field that is there is left as
it is, its expiry included): the process fields of the groups its inboxes announced members
of, with the expiry it learned, its alive keys, and the normal channels it added to groups.
It does so when a reader reconnects after an outage, when a heartbeat finds the process's
alive key gone before its time, and, as a safety net, at least every ``period`` seconds
(half of ``group_expiry``, at most ten minutes). Writing back is idempotent, so a spurious
trigger costs one pipeline and nothing else.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

from headrace.layers.redis import layout
from headrace.layers.redis.connection import LoopConnections
from headrace.layers.redis.sender import NormalGroups
from headrace.layers.redis.shared import Counts, Params
from headrace.layers.redis.topology import Topology
from headrace.layers.redis.wire import Command, raise_first

__all__ = ["Reasserter"]

#: ``(process, group, expires_at)``: a process's membership in a group, as it knows it.
Assertion = tuple[str, str, float]


class Reasserter:
    """Writes one event loop's group memberships back into Redis when it lost them."""

    def __init__(
        self,
        conn: LoopConnections,
        topology: Topology,
        params: Params,
        counts: Counts,
        *,
        memberships: Callable[[float], Iterable[Assertion]],
        normal_groups: NormalGroups,
    ) -> None:
        self._conn = conn
        self._topology = topology
        self._params = params
        self._counts = counts
        self._memberships = memberships  # the reader's, live ones only
        self._normal_groups = normal_groups
        self.period = min(params.group_expiry / 2, 600.0)
        self._last = -math.inf  # time.monotonic() of the last completed write-back
        self._running = False
        self._again = False
        self.runs = 0  #: write-backs completed
        self._waits: list[asyncio.Future[None]] = []  # wait_written_back() callers

    async def wait_written_back(self) -> None:
        """Until the next write-back (one that starts from now on, or is running) is done."""
        future: asyncio.Future[None] = self._conn.loop.create_future()
        self._waits.append(future)
        await future

    def heartbeat(self, *, lost: bool) -> None:
        """A reader's heartbeat: write back now if Redis ``lost`` the process's alive key (or
        the reader just reconnected), or if the last write-back is ``period`` old."""
        if lost or time.monotonic() - self._last >= self.period:
            self.request()

    def request(self) -> None:
        """Write back soon; requests made while one runs make it run once more."""
        if self._running:
            self._again = True
            return
        self._running = True
        self._conn.spawn(self._run())

    async def _run(self) -> None:
        try:
            while True:
                self._again = False
                await self.write_back()
                self._last = time.monotonic()
                self.runs += 1
                waits, self._waits = self._waits, []
                for future in waits:
                    if not future.done():
                        future.set_result(None)
                if not self._again or self._conn.closed:
                    return
        finally:
            self._running = False

    async def write_back(self) -> int:
        """Write every known membership that Redis lacks; returns how many were missing."""
        topology = self._topology
        params = self._params
        now = params.clock.time()
        batches: dict[int, list[Command]] = {}
        fields: dict[int, list[int]] = {}  # positions of the HSETNX results, per shard

        def add(shard: int, command: Command, *, counted: bool = False) -> None:
            batch = batches.setdefault(shard, [])
            if counted:
                fields.setdefault(shard, []).append(len(batch))
            batch.append(command)

        alive_set: set[tuple[int, str]] = set()
        for process, group, expires_at in self._memberships(now):
            shard = topology.shard_of(group)
            keys = topology.keys[shard]
            if (shard, process) not in alive_set:  # first: a group send checks it
                alive_set.add((shard, process))
                add(shard, ("SET", keys.alive(process), b"1", "PX", params.alive_ms))
            key = keys.group(group)
            add(
                shard,
                ("HSETNX", key, layout.process_field(process), repr(expires_at)),
                counted=True,
            )
            add(shard, ("PEXPIRE", key, params.group_ttl_ms))
        for group, channels in list(self._normal_groups.items()):
            shard = topology.shard_of(group)
            key = topology.keys[shard].group(group)
            for channel, expires_at in list(channels.items()):
                if expires_at <= now:
                    continue
                add(
                    shard,
                    ("HSETNX", key, layout.channel_field(channel), repr(expires_at)),
                    counted=True,
                )
                add(shard, ("PEXPIRE", key, params.group_ttl_ms))
                index_shard = topology.shard_of(channel)
                index = topology.keys[index_shard].groups_of(channel)
                add(index_shard, ("SADD", index, group))
                add(index_shard, ("PEXPIRE", index, params.group_ttl_ms))
        missing = 0
        for shard, commands in batches.items():
            results: list[Any] = await self._conn.batcher(shard).run(*commands)
            raise_first(results)
            missing += sum(1 for at in fields.get(shard, ()) if results[at] == 1)
        self._counts.reasserted += missing
        return missing
