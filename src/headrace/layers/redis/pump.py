"""A pump: the task of one event loop that takes entries from one Redis list for its readers.

A pump reads one *source*'s list on one shard: a normal channel's list, or one of a
process's inboxes. It takes at most as many entries as there are ``receive()`` calls waiting
(``wanted``) from a normal channel, so a process never hoards messages its siblings could
read; a process pump takes in its inbox as entries arrive (only this process reads it), so
each member's capacity applies when a group message arrives. Entries go to the
:class:`~headrace.layers.redis.reader.Reader` (``take_in``). A process pump also heartbeats
(the process's alive key) and sweeps its shard's due delayed messages; a channel pump ends
when nobody has waited for ``block_timeout``. Redis failures are logged once per
outage and retried with backoff; a pump never ends a consumer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Final

from headrace.backoff import Backoff, supervise
from headrace.exceptions import LayerConnectionError
from headrace.layers import rules
from headrace.layers.redis.connection import LoopConnections
from headrace.layers.redis.handover import HandOverLedger
from headrace.layers.redis.layout import Keys
from headrace.layers.redis.shared import Params
from headrace.layers.redis.topology import Topology
from headrace.layers.redis.wire import CONNECTION_ERRORS, Link, translate

__all__ = ["Pump", "Pumps"]

logger = logging.getLogger("headrace.layers.redis")

#: A process pump takes up to this many entries at once, whether or not readers wait: only
#: this process can read its inbox, so nothing is taken from a sibling, and group messages
#: must meet each member's capacity when they arrive, not when the member reads.
_DRAIN: Final = 256


class Pump:
    """Feeds one loop's readers of ``source`` from its list on ``shard`` (see the module)."""

    __slots__ = (
        "_alive_key",
        "_beat",
        "_blocked",
        "_conn",
        "_done",
        "_handover",
        "_lost",
        "_params",
        "_sweep",
        "_take_in",
        "_wakeup",
        "_wanted",
        "blocking",
        "key",
        "popping",
        "process",
        "settle",
        "shard",
        "source",
        "task",
    )

    def __init__(
        self,
        conn: LoopConnections,
        params: Params,
        handover: HandOverLedger,
        keys: Keys,
        *,
        source: str,
        shard: int,
        home: bool,
        wakeup: asyncio.Event,
        wanted: Callable[[], int],
        take_in: Callable[[list[bytes]], None],
        sweep: Callable[[int], Awaitable[object]],
        blocked: Callable[[], None],
        beat: Callable[[], None],
        lost: Callable[[], None],
        done: Callable[[Pump], None],
    ) -> None:
        self._conn = conn
        self._params = params
        self._handover = handover
        self.source = source
        self.shard = shard
        self.process = "!" in source
        self.key = keys.inbox(source) if self.process else keys.channel(source)
        self._alive_key = keys.alive(source)
        # A process's direct messages (the ones the hand-over counts) are on its home shard.
        self.settle = home
        self._wakeup = wakeup
        self._wanted = wanted
        self._take_in = take_in
        self._sweep = sweep
        self._done = done
        self._blocked = blocked
        self._beat = beat  # a heartbeat went through
        self._lost = lost  # Redis may have lost this process's groups
        #: Blocked in Redis (a BLPOP in flight) for the readers waiting.
        self.blocking = False
        #: The non-blocking pop in flight, if any: a sender of this loop may wait for it,
        #: since it settles the hand-over bookkeeping.
        self.popping: asyncio.Future[list[Any]] | None = None
        self.task = conn.loop.create_task(self._supervised())

    @property
    def name(self) -> tuple[str, int]:
        """``(source, shard)``; a normal channel's pump is ``(channel, 0)``."""
        return (self.source, self.shard if self.process else 0)

    async def _supervised(self) -> None:
        """Run the pump; if it crashes (a bug, a surprise from Redis), log it and run it
        again with backoff: a reader must never stop silently."""
        try:
            await supervise(
                f"the Redis layer's reader of {self.source!r}",
                self._run,
                logger=logger,
                backoff=Backoff(
                    f"the Redis layer's reader of {self.source!r}",
                    logger=logger,
                    clock=self._params.clock,
                ),
            )
        finally:
            self._done(self)

    async def _run(self) -> None:
        conn = self._conn
        params = self._params
        batcher = conn.batcher(self.shard)
        wakeup = self._wakeup
        wanted_now = self._wanted
        process = self.process
        linger = params.heartbeat_interval if process else params.block_timeout
        next_beat = 0.0
        beats = 0
        # Capped at 1 s: after an outage a reader is back (and its groups written back into
        # Redis) within about a second of the server.
        backoff = Backoff(
            f"reading {self.source!r} from Redis", logger=logger, cap=1.0, clock=params.clock
        )
        link = conn.open_link(self.shard)  # blocking pops hold a connection: one of its own
        try:
            while not conn.closed:
                try:
                    if backoff.failing or (process and time.monotonic() >= next_beat):
                        # A heartbeat; after a failure also the probe that the server is back
                        # (a blocking pop could take block_timeout to tell).
                        lost = False
                        if process:
                            next_beat = time.monotonic() + params.heartbeat_interval
                            alive = self._alive_key
                            (exists, _) = await batcher.call(
                                ("EXISTS", alive), ("SET", alive, b"1", "PX", params.alive_ms)
                            )
                            lost = beats > 0 and exists == 0  # gone before its time
                            beats += 1
                        else:
                            await batcher.call(("PING",))
                        if backoff.failing:
                            backoff.succeeded()
                            lost = True  # the server may have restarted: write groups back
                        if lost:
                            self._lost()
                        elif process:
                            self._beat()
                        if process:
                            await self._sweep(self.shard)
                    wanted = wanted_now()
                    if wanted <= 0 and not process:
                        # Nobody waits: take nothing (no hoarding), wait for a reader.
                        wakeup.clear()
                        try:
                            await asyncio.wait_for(wakeup.wait(), linger)
                        except TimeoutError:
                            if not process and wanted_now() <= 0:
                                return
                        continue
                    entries = await self._pop(link, wanted)
                except (*CONNECTION_ERRORS, LayerConnectionError) as error:
                    await backoff.failed(error)  # logged once per outage
                    continue
                if entries:
                    self._take_in(entries)
        finally:
            await conn.close_link(link)

    async def _pop(self, link: Link, wanted: int) -> list[bytes]:
        """Take up to ``wanted`` entries, blocking (up to ``block_timeout``) while the list is
        empty, and settle the local hand-over bookkeeping on the way."""
        blpop = ("BLPOP", self.key, self._params.block_timeout)
        handover = self._handover
        source = self.source
        if wanted <= 1 and handover.nothing_to_settle(source, self.name):
            # One reader and nothing to settle: an inbox's own entries are counted out
            # exactly as they come in (only this process reads it), and none of this loop's
            # messages to a normal channel can still be queued. Block at once: a pop first
            # would cost a round trip per receive.
            return await self._block(link, blpop)
        mark = handover.mark(source)
        count = max(wanted, _DRAIN) if self.process else wanted
        popping = self.popping = self._conn.batcher(self.shard).call(("LPOP", self.key, count))
        try:
            (entries,) = await popping
        finally:
            if self.popping is popping:
                self.popping = None
        if isinstance(entries, Exception):
            raise translate(entries)
        if entries:
            return list(entries)
        # Everything this loop wrote before the pop was taken: only what it wrote since may
        # still be queued.
        handover.found_empty(source, self.name, mark, settle=self.settle)
        return await self._block(link, blpop)

    async def _block(self, link: Link, blpop: tuple[str, str, float]) -> list[bytes]:
        self.blocking = True
        self._blocked()
        try:
            (popped,) = await link.execute([blpop])
        finally:
            self.blocking = False
        if isinstance(popped, Exception):
            raise translate(popped)  # e.g. WRONGTYPE: someone wrote another type there
        return [popped[1]] if popped else []


class Pumps:
    """The pumps of one event loop, by ``(source, shard)`` (see :class:`Pump`)."""

    def __init__(
        self,
        conn: LoopConnections,
        topology: Topology,
        params: Params,
        handover: HandOverLedger,
        *,
        waiting: Counter[str],
        take_in_process: Callable[[str, int, list[bytes]], None],
        take_in_channel: Callable[[str, list[bytes]], None],
        sweep: Callable[[int], Awaitable[object]],
        beat: Callable[[], None],
        lost: Callable[[], None],
    ) -> None:
        self._conn = conn
        self._topology = topology
        self._params = params
        self._handover = handover
        self._waiting = waiting  # the reader's receive() calls waiting, per source
        self._take_in_process = take_in_process
        self._take_in_channel = take_in_channel
        self._sweep = sweep
        self._on_beat = beat
        self._on_lost = lost
        self._running: dict[tuple[str, int], Pump] = {}
        self._wakeups: dict[str, asyncio.Event] = {}
        self._wake_checks: set[str] = set()  # sources whose idle pump may need waking
        self._changed: asyncio.Event | None = None  # while wait_blocked() waits

    def pumping(self, channel: str) -> bool:
        """True when a pump of this loop reads normal ``channel``."""
        return (channel, 0) in self._running

    def popping(self, source: str) -> asyncio.Future[list[Any]] | None:
        """A non-blocking pop of ``source`` in flight, if any (it settles the hand-over)."""
        for shard in range(self._topology.shards if "!" in source else 1):
            pump = self._running.get((source, shard))
            if pump is not None and pump.popping is not None:
                return pump.popping
        return None

    async def wait_blocked(self, channel: str, waits: Callable[[], bool]) -> None:
        """Until ``waits()`` and every pump feeding ``channel`` is blocked in Redis."""
        source = rules.non_local_name(channel)
        shards = range(self._topology.shards) if "!" in channel else (0,)
        while True:
            pumps = [self._running.get((source, shard)) for shard in shards]
            if waits() and all(pump is not None and pump.blocking for pump in pumps):
                return
            if self._changed is None:
                self._changed = asyncio.Event()
            self._changed.clear()
            await self._changed.wait()

    def tasks(self) -> list[asyncio.Task[None]]:
        return [pump.task for pump in self._running.values()]

    def ensure(self, channel: str, source: str) -> None:
        """Start the pumps that feed ``receive(channel)`` if they are not running; wake an
        idle one."""
        if "!" in channel:
            for shard in range(self._topology.shards):
                if (source, shard) not in self._running:
                    self._start(source, shard)
        elif (source, 0) not in self._running:
            self._start(source, self._topology.shard_of(channel))
        wakeup = self._wakeups.get(source)
        if wakeup is not None and not wakeup.is_set() and source not in self._wake_checks:
            # Wake an idle pump at the end of this loop pass, and only if a reader still
            # waits then: a sender of this loop often hands the message over first (a
            # producer and a consumer in one process), and an idle pump woken for nothing
            # costs more than the message.
            self._wake_checks.add(source)
            self._conn.loop.call_soon(self._wake, source)

    def _start(self, source: str, shard: int) -> None:
        process = "!" in source
        take_in = (
            partial(self._take_in_process, source, shard)
            if process
            else partial(self._take_in_channel, source)
        )
        pump = Pump(
            self._conn,
            self._params,
            self._handover,
            self._topology.keys[shard],
            source=source,
            shard=shard,
            home=self._topology.shard_of(source) == shard,
            wakeup=self._wakeups.setdefault(source, asyncio.Event()),
            wanted=partial(self._waiting.__getitem__, source),
            take_in=take_in,
            sweep=self._sweep,
            blocked=self.changed,
            beat=self._on_beat,
            lost=self._on_lost,
            done=self._done,
        )
        self._running[pump.name] = pump

    def changed(self) -> None:
        """A reader started waiting, or a pump blocked: :meth:`wait_blocked` looks again."""
        if self._changed is not None:
            self._changed.set()

    def _done(self, pump: Pump) -> None:
        if self._running.get(pump.name) is pump:
            del self._running[pump.name]
            if not pump.process:
                self._wakeups.pop(pump.source, None)

    def _wake(self, source: str) -> None:
        self._wake_checks.discard(source)
        wakeup = self._wakeups.get(source)
        if wakeup is not None and self._waiting[source] > 0:
            wakeup.set()
