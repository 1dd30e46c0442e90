"""The Redis channel layer: channels, groups and delays shared by many processes and machines.

How it works (the key layout is in :mod:`headrace.layers.redis.layout`, the scripts in
:mod:`headrace.layers.redis.scripts`):

- A normal channel is a Redis list; any process may read it (worker pools compete for it).
- All process-specific channels (``name!client``) of one process share one *inbox* list; the
  process takes entries in and fans them out to its local readers.
- ``group_send`` is one script call: for each live process with members it appends the
  serialized message once to that process's inbox; no member list travels and the sender's
  cost does not depend on the group's size. The process knows its own members because
  ``group_add``/``group_discard`` of its channels are written into the same inbox, in order,
  before any later group message.
- Commands issued while a batch is in flight go out together as the next pipeline; a reader
  takes at most as many entries as there are receive() calls waiting (no hoarding).
- A send to a channel this loop itself reads, with nothing older of this loop's queued for
  it in Redis, is handed to the local reader directly (see :mod:`.handover`).
- Delayed messages wait in a sorted set and are taken atomically by whichever process is due.
- Everything carries a Redis TTL as a safety net; the layer's clock decides expiry.

Delivery is at most once: a message is taken from Redis before it is handed to a reader, so a
process that dies in between loses it, and a command interrupted by a connection failure is
not repeated (it may or may not have happened). See docs/explanation/redis-design.md.

This class is the facade: it checks names and messages, and hands the work to the parts of
the event loop it runs in (:class:`LoopParts`: connections, a :class:`Sender`, a
:class:`Reader` and :class:`Delays`), which are made for each loop that uses the layer and
closed with the loop, so a layer used from ``async_to_sync`` leaks nothing. What the parts
of all loops share is process-wide: the settings (:class:`Params`), the counters
(:class:`Counts`), this process's pending delayed messages and its normal group members.
"""

from __future__ import annotations

import asyncio
import logging
import re
import weakref
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar, Final

from redis.backoff import NoBackoff
from redis.retry import Retry

from headrace.exceptions import InvalidChannelName
from headrace.layers import rules
from headrace.layers.base import BaseChannelLayer
from headrace.layers.clock import Clock
from headrace.layers.config import Capabilities
from headrace.layers.redis.config import RedisConfig
from headrace.layers.redis.connection import (
    Server,
    forget_guard,
    register_with_loop,
)
from headrace.layers.redis.layout import DelayedKind
from headrace.layers.redis.parts import LoopParts
from headrace.layers.redis.payload import Payloads
from headrace.layers.redis.sender import NormalGroups
from headrace.layers.redis.shared import Counts, Params, RedisLayerStatistics
from headrace.layers.redis.topology import Topology
from headrace.layers.redis.wire import Message, translate
from headrace.process import running_loop

__all__ = ["RedisChannelLayer"]


_SCAN_COUNT: Final = 1000
logger = logging.getLogger("headrace.layers.redis")
_CLIENT_PREFIX_RE: Final = re.compile(r"[0-9a-f]{12}")  # as BaseChannelLayer makes them
#: The layers of this OS process by client prefix: their process channels are this process's.
_LAYERS_OF_THIS_PROCESS: weakref.WeakValueDictionary[str, RedisChannelLayer] = (
    weakref.WeakValueDictionary()
)


class RedisChannelLayer(BaseChannelLayer):
    """A channel layer on Redis, for several processes and machines.

    CONFIG keys (those shared with channels_redis mean the same):

    - ``hosts``: a list of ``redis://``/``rediss://``/``unix://`` URLs, ``(host, port)``
      pairs, or dicts of redis-py arguments (``{"address": url, ...}``); a dict with
      ``sentinels`` and ``master_name`` (and ``sentinel_kwargs``) for Sentinel. Several
      hosts are independent shards chosen by a consistent hash. Default ``localhost:6379``.
    - ``cluster``: True when ``hosts`` are start-up nodes of a Redis Cluster;
      ``cluster_buckets`` (8) hash tags spread the keys over its masters.
    - ``prefix`` (``"asgi"``): every key starts with it; ``flush()`` deletes only those.
    - ``expiry``, ``group_expiry``, ``capacity``, ``channel_capacity``, ``max_message_size``.
    - ``symmetric_encryption_keys``: encrypt messages with Fernet; the first key encrypts,
      all of them decrypt (rotate by putting the new key first).
    - ``heartbeat_interval`` (10 s), ``block_timeout`` (5 s), ``connect_timeout`` (5 s):
      how often a reading process proves it is alive, how long a blocking pop waits, and how
      long a command keeps trying to connect before raising ``LayerConnectionError``.
    """

    config_class: ClassVar[type[RedisConfig]] = RedisConfig
    capabilities: ClassVar[Capabilities] = Capabilities(
        groups=True, flush=True, delay=True, moves_due=True
    )
    extensions: ClassVar[list[str]] = capabilities.extensions
    process_wide: ClassVar[bool] = False
    config: RedisConfig

    def __init__(
        self,
        hosts: Sequence[object] | None = None,
        *,
        config: RedisConfig | None = None,
        clock: Clock | None = None,
        **settings: Any,
    ) -> None:
        """Configure from ``config`` (a :class:`RedisConfig`) or from CONFIG keys, not both."""
        if hosts is not None:
            settings["hosts"] = hosts
        super().__init__(config=config, clock=clock, **settings)
        config = self.config
        self.prefix = config.prefix
        self.heartbeat_interval = config.heartbeat_interval
        self.block_timeout = config.block_timeout
        self.connect_timeout = config.connect_timeout
        self._payloads = Payloads(config.symmetric_encryption_keys)
        self._topology = Topology(
            config.hosts,
            prefix=config.prefix,
            cluster=config.cluster,
            cluster_buckets=config.cluster_buckets,
            common={
                "socket_connect_timeout": self.connect_timeout,
                "socket_timeout": self.block_timeout + 10,
                "socket_keepalive": True,
                "retry": Retry(NoBackoff(), 0),
            },
        )
        self._servers = [Server(spec.name) for spec in self._topology.hosts]
        self._params = Params(
            clock=self.clock,
            capacity_of=self.capacity_of,
            expiry=self.expiry,
            group_expiry=self.group_expiry,
            heartbeat_interval=self.heartbeat_interval,
            block_timeout=self.block_timeout,
            connect_timeout=self.connect_timeout,
        )
        self._counts = Counts()
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopParts] = (
            weakref.WeakKeyDictionary()
        )
        self._pending: list[tuple[float, int]] = []  # (due, shard) of own delayed messages
        self._normal_groups: NormalGroups = {}
        self._own_default = f"specific.{self.client_prefix}!"  # new_channel()'s, the usual
        _LAYERS_OF_THIS_PROCESS[self.client_prefix] = self

    # -- per-loop parts ----------------------------------------------------------------------

    def _parts(self) -> LoopParts:
        loop = asyncio.get_running_loop()
        parts = self._states.get(loop)
        if parts is None or parts.conn.closed:
            parts = self._states[loop] = LoopParts(
                loop,
                topology=self._topology,
                servers=self._servers,
                params=self._params,
                counts=self._counts,
                payloads=self._payloads,
                pending=self._pending,
                normal_groups=self._normal_groups,
            )
            parts.guard = register_with_loop(parts)
        return parts

    # -- sending -----------------------------------------------------------------------------

    async def send(
        self,
        channel: str,
        message: Message,
        *,
        delay: float | timedelta | None = None,
        at: float | datetime | None = None,
    ) -> None:
        rules.check_channel_name(channel)
        data = self._freeze(message)
        due = self._due_time(delay, at)
        parts = self._parts()
        if due is not None:
            kind = DelayedKind.PROCESS if "!" in channel else DelayedKind.CHANNEL
            await parts.delays.schedule(kind, channel, self._payloads.seal(data), due)
            return
        sender = parts.sender
        if sender.send_nowait(channel, data):  # delivered in this loop, as a pop would have
            await asyncio.sleep(0)  # let the reader run before the next send
            return
        await sender.send(channel, data)

    async def group_send(
        self,
        group: str,
        message: Message,
        *,
        delay: float | timedelta | None = None,
        at: float | datetime | None = None,
    ) -> None:
        rules.check_group_name(group)
        payload = self._payloads.seal(self._freeze(message))
        due = self._due_time(delay, at)
        parts = self._parts()
        if due is not None:
            await parts.delays.schedule(DelayedKind.GROUP, group, payload, due)
            return
        self._counts.group_sends += 1
        now = self.clock.time()
        await parts.sender.deliver_group(group, payload, now + self.expiry, now)

    # -- groups ------------------------------------------------------------------------------

    async def group_add(self, group: str, channel: str) -> None:
        rules.check_group_name(group)
        rules.check_channel_name(channel)
        await self._parts().sender.group_add(group, channel)

    async def group_discard(self, group: str, channel: str) -> None:
        rules.check_group_name(group)
        rules.check_channel_name(channel)
        await self._parts().sender.group_discard(group, channel)

    # -- receiving ---------------------------------------------------------------------------

    async def receive(self, channel: str) -> Message:
        rules.check_channel_name(channel)
        if "!" in channel and not channel.startswith(self._own_default):
            self._check_own(channel)
        reader = self._parts().reader
        message = reader.receive_nowait(channel)
        return message if message is not None else await reader.receive(channel)

    def _check_own(self, channel: str) -> None:
        """Only the process named in a process channel reads it: receiving on another
        process's channel (or a made-up client part) would wait forever, so it is refused at
        once. Names in the shape ``new_channel()`` makes (``prefix.<12 hex digits>!...``) are
        checked; any layer instance of this OS process counts as this process (the registry
        makes one per event loop). Hand-written process names (``proc!x``) are read as before.
        """
        process = rules.non_local_name(channel)
        client = process[:-1].rpartition(".")[2]
        if client == self.client_prefix:
            return
        if _CLIENT_PREFIX_RE.fullmatch(client) and _LAYERS_OF_THIS_PROCESS.get(client) is None:
            raise InvalidChannelName(
                f"cannot receive on {channel!r}: it is a process-specific channel of another "
                f"process ({process!r}); receive() only on channels that new_channel() of "
                "a layer in this process returned"
            )

    async def wait_reading(self, channel: str) -> None:
        """Until a ``receive(channel)`` of this event loop waits, blocked in Redis: a message
        sent from now on reaches it through Redis. For tests that need a reader to wait
        first; bound it with ``asyncio.timeout``."""
        rules.check_channel_name(channel)
        await self._parts().reader.wait_reading(channel)

    async def new_channel(self, prefix: str = "specific") -> str:
        return self._new_channel_name(prefix)

    # -- delayed delivery --------------------------------------------------------------------

    async def move_due(self) -> int:
        """Deliver every delayed message now due, whichever process scheduled it.

        Each process moves its own delayed messages when they are due, and reading processes
        sweep their home shard on every heartbeat; this is for a process that wants to be
        the safety net (``manage.py rundelay``), so that the messages of a process that died
        before their due time do not wait for a heartbeat. Safe to run anywhere, any number
        of times: each message is moved once. Returns how many were moved.
        """
        return await self._parts().delays.move_due(range(self._topology.shards))

    async def wait_moved(self) -> None:
        """Until every delayed message this process scheduled that is due by the layer's
        clock has been moved to its channel or group (after ``ManualClock.advance()``, the
        moves run in the background)."""
        await self._parts().delays.wait_moved()

    async def wait_written_back(self) -> None:
        """Until this event loop next writes its group memberships back into Redis (after a
        reader reconnects, or a heartbeat finds the process's keys gone; see
        docs/explanation/redis-design.md). For tests; bound it with ``asyncio.timeout``."""
        await self._parts().reasserter.wait_written_back()

    # -- housekeeping ------------------------------------------------------------------------

    async def flush(self) -> None:
        """Delete every key under this layer's prefix (SCAN + UNLINK; never KEYS/FLUSHDB)."""
        parts = self._parts()
        pattern = f"{self.prefix}:*"
        for client in parts.conn.connections.clients:
            batch: list[Any] = []
            async for key in client.scan_iter(match=pattern, count=_SCAN_COUNT):
                batch.append(key)
                if len(batch) >= _SCAN_COUNT:
                    await self._unlink(client, batch)
                    batch = []
            if batch:
                await self._unlink(client, batch)
        parts.reader.forget()
        parts.handover.forget()
        self._normal_groups.clear()
        self._pending.clear()
        parts.delays.stop()

    async def _unlink(self, client: Any, keys: list[Any]) -> None:
        if self._topology.cluster:
            for key in keys:  # keys of different slots: one at a time
                await client.unlink(key)
        else:
            await client.unlink(*keys)

    async def close(self) -> None:
        """Close this event loop's connections and readers. Queued messages stay in Redis."""
        loop = running_loop()
        if loop is None:
            return
        parts = self._states.pop(loop, None)
        if parts is None:
            return
        await parts.aclose()
        if parts.guard is not None:
            forget_guard(parts.guard)

    async def close_pools(self) -> None:
        """channels_redis' name for :meth:`close` (code ported from it calls this at the end of
        ``async_to_sync`` blocks and in test teardown)."""
        await self.close()

    def statistics(self) -> RedisLayerStatistics:
        channels: set[str] = set()
        # Groups this process knows to have members: those it added normal channels to, and
        # those its processes' inboxes announced (a group spanning two inboxes counts twice).
        groups = len(self._normal_groups)
        for parts in list(self._states.values()):
            channels.update(parts.reader.channels())
            groups += parts.reader.group_count()
        counts = self._counts
        return RedisLayerStatistics(
            sent=counts.sent,
            received=counts.received,
            rejected_full=counts.rejected_full,
            dropped_full=counts.dropped_full,
            expired=counts.expired,
            group_sends=counts.group_sends,
            delayed=counts.delayed,
            delayed_pending=len(self._pending),
            channels=len(channels),
            groups=groups,
            undecodable=sum(counts.undecodable.values()),
            undecodable_by_kind={str(kind): n for kind, n in counts.undecodable.items()},
            reasserted=counts.reasserted,
        )

    async def queue_length(self, channel: str) -> int:
        """Messages waiting unread in ``channel``: queued in Redis plus taken in by this loop.

        For a normal channel every process's messages are counted (entries past their expiry
        that no reader has swept yet included); for a ``!`` channel, the direct messages in
        its process's inbox. One round trip; used to notice channels nobody reads.
        """
        rules.check_channel_name(channel)
        parts = self._parts()
        topology = self._topology
        owner = rules.non_local_name(channel) if "!" in channel else channel
        shard = topology.shard_of(owner)
        keys = topology.keys[shard]
        if "!" in channel:
            command: tuple[str, ...] = ("HGET", keys.counts(owner), channel)
        else:
            command = ("LLEN", keys.channel(channel))
        (queued,) = await parts.conn.batcher(shard).run(command)
        if isinstance(queued, Exception):
            raise translate(queued)
        return int(queued or 0) + parts.reader.buffered(channel)
