"""Direct messages a process holds in memory that its counts in Redis still include.

A process channel's capacity is checked by the sender's script against the process's counts
in Redis (:meth:`Keys.counts`). A process takes its inbox in as entries arrive; a direct
message that no ``receive()`` takes at once waits in the reader's buffer and must go on
counting there, or a channel nobody reads would never be full. :class:`HeldCounts` keeps,
per channel, how many buffered messages are still counted in Redis, and forgets them there
(one ``DECREMENT`` script call per process, at the end of the loop pass) as the buffer
shrinks: never more held than buffered.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from headrace.layers import rules
from headrace.layers.redis.connection import LoopConnections
from headrace.layers.redis.scripts import DECREMENT
from headrace.layers.redis.topology import Topology

__all__ = ["HeldCounts"]


class HeldCounts:
    """Per channel, buffered direct messages still counted in Redis (one event loop)."""

    __slots__ = ("_conn", "_soon", "_topology", "_uncounted", "held")

    def __init__(self, conn: LoopConnections, topology: Topology) -> None:
        self._conn = conn
        self._topology = topology
        #: Per channel (read-only for others: ``channel in held`` is the reader's fast check).
        self.held: Counter[str] = Counter()
        self._uncounted: dict[str, Counter[str]] = {}  # to forget at the end of the pass
        self._soon = False

    def __contains__(self, channel: str) -> bool:
        return channel in self.held

    def hold(self, channel: str) -> None:
        """A direct message for ``channel`` was buffered: it stays counted in Redis."""
        self.held[channel] += 1

    def release(self, channel: str, buffered: int) -> None:
        """``channel``'s buffer holds ``buffered`` messages now: forget the excess."""
        held = self.held[channel]
        if held <= buffered:
            return
        if buffered:
            self.held[channel] = buffered
        else:
            del self.held[channel]
        process = rules.non_local_name(channel)
        self._uncounted.setdefault(process, Counter())[channel] += held - buffered
        if not self._soon:
            self._soon = True
            self._conn.loop.call_soon(self._send)

    def forget(self, process: str, taken: Counter[str]) -> None:
        """Forget ``taken`` messages per channel in ``process``'s counts (one script call)."""
        home = self._topology.shard_of(process)
        args: list[Any] = []
        for channel, count in taken.items():
            if count:
                args += [channel, count]
        if args:
            self._conn.batcher(home).call_nowait(
                ("EVALSHA", DECREMENT.sha, 1, self._topology.keys[home].counts(process), *args)
            )

    def clear(self) -> None:
        """Redis was flushed: nothing is counted there any more."""
        self.held.clear()
        self._uncounted.clear()

    def _send(self) -> None:
        self._soon = False
        uncounted, self._uncounted = self._uncounted, {}
        for process, taken in uncounted.items():
            self.forget(process, taken)
