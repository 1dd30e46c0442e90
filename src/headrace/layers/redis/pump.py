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
from collections.abc import Awaitable, Callable
from typing import Any, Final

from headrace.backoff import Backoff, supervise
from headrace.exceptions import LayerConnectionError
from headrace.layers.redis.connection import LoopConnections
from headrace.layers.redis.handover import HandOverLedger
from headrace.layers.redis.layout import Keys
from headrace.layers.redis.shared import Params
from headrace.layers.redis.wire import CONNECTION_ERRORS, Link, translate

__all__ = ["Pump"]

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
