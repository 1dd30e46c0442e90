"""The parts of one Redis layer in one event loop, wired together.

Each event loop that uses a :class:`~headrace.layers.redis.RedisChannelLayer` gets its own
connections (:class:`LoopConnections`), hand-over bookkeeping, :class:`Reader`,
:class:`Sender`, :class:`Delays` and :class:`Reasserter`; they share the layer's process-wide
settings, counters, pending delayed messages and normal group members, which the layer passes
in. The layer registers the parts with the loop, so the loop's shutdown closes them.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncGenerator

from headrace.exceptions import LayerConnectionError
from headrace.layers.redis.connection import LoopConnections, Server
from headrace.layers.redis.delays import Delays
from headrace.layers.redis.handover import HandOverLedger
from headrace.layers.redis.layout import ORIGIN_SIZE
from headrace.layers.redis.payload import Payloads
from headrace.layers.redis.reader import Reader
from headrace.layers.redis.reassert import Reasserter
from headrace.layers.redis.sender import NormalGroups, Sender
from headrace.layers.redis.shared import Counts, Params
from headrace.layers.redis.topology import Topology

__all__ = ["LoopParts"]

logger = logging.getLogger("headrace.layers.redis")


class LoopParts:
    """The parts of one layer in one event loop, wired together."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        topology: Topology,
        servers: list[Server],
        params: Params,
        counts: Counts,
        payloads: Payloads,
        pending: list[tuple[float, int]],
        normal_groups: NormalGroups,
    ) -> None:
        self.conn = LoopConnections(
            loop, topology, servers, connect_timeout=params.connect_timeout, clock=params.clock
        )
        self.handover = HandOverLedger(secrets.token_bytes(ORIGIN_SIZE))
        self.reader = Reader(
            self.conn,
            topology,
            params,
            counts,
            payloads,
            self.handover,
            leave_groups=self._leave_groups,
            sweep=self._sweep,
            beat=self._beat,
            lost=self._lost,
        )
        self.sender = Sender(
            self.conn,
            topology,
            params,
            counts,
            payloads,
            self.handover,
            self.reader,
            normal_groups,
        )
        self.delays = Delays(self.conn, topology, params, counts, self.sender, pending)
        self.reasserter = Reasserter(
            self.conn,
            topology,
            params,
            counts,
            memberships=self.reader.memberships,
            normal_groups=normal_groups,
        )
        self.guard: AsyncGenerator[None, None] | None = None

    @property
    def closed(self) -> bool:
        return self.conn.closed

    def _beat(self) -> None:
        self.reasserter.heartbeat(lost=False)

    def _lost(self) -> None:
        self.reasserter.heartbeat(lost=True)

    async def _leave_groups(self, channel: str, groups: list[str]) -> None:
        await self.sender.leave_groups(channel, groups)

    async def _sweep(self, shard: int) -> None:
        """A reader's heartbeat: move its shard's due delayed messages. A failure other
        than the connection's is logged and left to the next heartbeat, so it never stops
        the reading."""
        try:
            await self.delays.move_due([shard])
        except LayerConnectionError:
            raise
        except Exception:
            logger.exception("Redis layer could not move due delayed messages; will retry")

    async def aclose(self) -> None:
        """Stop the pumps and timers, fail waiting readers, close the connections."""
        if self.conn.closed:
            return
        self.delays.stop()
        pumps = self.reader.close()
        await self.conn.aclose(pumps)
        self.reader.close()  # readers that started waiting meanwhile
