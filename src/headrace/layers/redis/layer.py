"""The Redis channel layer: channels, groups and delays shared by many processes and machines.

How it works (the key layout and the scripts are in :mod:`headrace.layers.redis.scripts`):

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
  it in Redis, is handed to the local reader directly (see ``_can_hand_over``).
- Delayed messages wait in a sorted set and are taken atomically by whichever process is due.
- Everything carries a Redis TTL as a safety net; the layer's clock decides expiry.

Delivery is at most once: a message is taken from Redis before it is handed to a reader, so a
process that dies in between loses it, and a command interrupted by a connection failure is
not repeated (it may or may not have happened). See docs/explanation/redis-design.md.

State that belongs to an event loop (connections, readers, the pumps that feed them) is kept
per loop and closed with the loop, so a layer used from ``async_to_sync`` leaks nothing.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import heapq
import weakref
from collections import deque
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar, Final

from redis.backoff import NoBackoff
from redis.retry import Retry

from headrace.exceptions import (
    ChannelFull,
    ConfigurationError,
)
from headrace.layers import rules
from headrace.layers.base import BaseChannelLayer, LayerStatistics
from headrace.layers.clock import Clock
from headrace.layers.codec import decode
from headrace.layers.config import Capabilities
from headrace.layers.handoff import Handoff
from headrace.layers.redis import scripts
from headrace.layers.redis.config import RedisConfig
from headrace.layers.redis.connection import (
    Batcher,
    LoopState,
    Message,
    close_with_loop,
    raise_first,
    translate,
)
from headrace.layers.redis.reading import Reading
from headrace.layers.redis.scripts import (
    DELIVER,
    GROUP_SEND,
    MOVE_DUE,
    PUSH_DIRECT,
    SCHEDULE,
    Script,
)
from headrace.layers.redis.topology import Topology

__all__ = ["RedisChannelLayer"]


_MOVE_BATCH: Final = 500
_SCAN_COUNT: Final = 1000
_MAX_STORED_CAPACITY: Final = 2**32 - 1  # a delayed entry stores its target's capacity in 4 bytes
_NO_ORIGIN: Final = bytes(4)  # moved entries belong to no loop's hand-over bookkeeping


class RedisChannelLayer(Reading, BaseChannelLayer):
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
        self._crypter = _crypter(config.symmetric_encryption_keys)
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
        self._scripts_loaded = [False] * len(self._topology.hosts)
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopState] = (
            weakref.WeakKeyDictionary()
        )
        # Garbage-collection TTLs (milliseconds of real time; the clock decides expiry).
        self._ttl_ms = int(max(self.expiry * 2, self.expiry + 300) * 1000)
        self._group_ttl_ms = int((self.group_expiry + 300) * 1000)
        self._alive_ms = int(self.heartbeat_interval * 3 * 1000)
        self._pending: list[tuple[float, int]] = []  # (due, shard) of own delayed messages
        self._normal_groups: dict[str, set[str]] = {}
        self._outage_logged = False
        self._sent = self._received = self._rejected_full = self._dropped_full = 0
        self._expired = self._group_sends = self._delayed = 0

    # -- per-loop state ----------------------------------------------------------------------

    def _state(self) -> LoopState:
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None or state.closed:
            state = LoopState(self, loop)
            self._states[loop] = state
            guard = close_with_loop(state)
            state.guard = guard
            starting = guard.asend(None)  # registers with the loop's async-generator hooks
            try:
                starting.send(None)
            except StopIteration:
                pass
        return state

    def _host_name(self, index: int) -> str:
        hosts = self._topology.hosts
        return hosts[min(index, len(hosts) - 1)].name

    def _batcher(self, state: LoopState, shard: int) -> Batcher:
        return state.batchers[self._topology.client_of[shard]]

    async def _script(
        self, state: LoopState, shard: int, script: Script, keys: Sequence[str], *args: Any
    ) -> Any:
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        (result,) = await self._batcher(state, shard).run(command)
        if isinstance(result, Exception):
            raise translate(result)
        return result

    async def _merged_script(
        self,
        state: LoopState,
        shard: int,
        script: Script,
        keys: tuple[str, ...],
        common: tuple[Any, ...],
        args: tuple[Any, ...],
        variant: str = "",
    ) -> tuple[Any, int]:
        """Run ``script`` merged with the calls on the same keys (and ``variant``) waiting
        for the same batch.

        ``common`` arguments are taken from the first of the merged calls; ``args`` of each
        are appended in calling order. Returns the result and this call's position.
        """
        head = ("EVALSHA", script.sha, len(keys), *keys, *common)
        result, position = await self._batcher(state, shard).merge(
            (script.name, variant, *keys), head, args
        )
        if isinstance(result, Exception):
            raise translate(result)
        return result, position

    # -- encoding ----------------------------------------------------------------------------

    def _seal(self, data: bytes) -> bytes:
        return data if self._crypter is None else self._crypter.encrypt(data)

    def _thaw(self, payload: bytes) -> Message:
        if self._crypter is not None:
            payload = self._crypter.decrypt(payload)
        return decode(payload)

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
        state = self._state()
        if due is not None:
            kind = b"p" if "!" in channel else b"c"
            await self._schedule(state, kind, channel, self._seal(data), due)
            return
        now = self.clock.time()
        local = self._can_hand_over(state, channel)
        if not local:
            popping = state.popping.get(rules.non_local_name(channel))
            if popping is not None:
                # This loop's reader is taking in what is queued (one round trip, never a
                # blocking pop); once it has, the message can usually stay in this loop.
                await asyncio.wait([popping])
                local = self._can_hand_over(state, channel)
        if local:
            # This loop reads the channel and Redis holds nothing older for it: deliver here,
            # as a pop would have.
            self._sent += 1
            self._offer(state, channel, now + self.expiry, decode(data))
            await asyncio.sleep(0)  # let the reader run before the next send
            return
        payload = self._seal(data)
        if not await self._deliver(state, channel, payload, now + self.expiry, now, "send"):
            self._rejected_full += 1
            raise ChannelFull(f"channel {channel!r} is full (capacity {self.capacity_of(channel)})")

    def _can_hand_over(self, state: LoopState, channel: str) -> bool:
        """True when a message for ``channel`` may be delivered inside this loop.

        That needs a reader of this loop for the channel (its pump is running), none of this
        loop's own earlier messages for it possibly still queued in Redis (they are counted
        out when this loop's reader takes them in, and an empty pop settles everything written
        before it, so the new message cannot overtake them), for a process channel no group
        operation of this loop possibly still in its inboxes, and room in the local queue.
        Messages from other processes may be queued: they were sent concurrently, so no order
        is owed between them, and this loop's reader takes them in whenever it waits.
        Otherwise the message goes through Redis.
        """
        if "!" not in channel:
            if state.unsettled[channel] > 0 or (channel, 0) not in state.pumps:
                return False
        else:
            source = rules.non_local_name(channel)
            if state.unsettled[source] > 0:
                return False
            epoch = state.group_epoch
            clean = state.group_clean
            for shard in range(self._topology.shards):
                if clean.get((source, shard)) != epoch:
                    return False
        buffered = state.buffers.get(channel)
        return buffered is None or len(buffered) < self.capacity_of(channel)

    async def _deliver(
        self,
        state: LoopState,
        channel: str,
        payload: bytes,
        expires_at: float,
        now: float,
        mode: str,
    ) -> bool:
        """Queue one message on a channel; False when it is full (or, for a group member,
        gone). Counts sent/expired; the caller counts the refusal."""
        topology = self._topology
        capacity = self.capacity_of(channel)
        origin = state.origin
        if "!" in channel:
            process = rules.non_local_name(channel)
            state.pushed[process] += 1
            state.unsettled[process] += 1
            shard = topology.shard_of(process)
            tag = topology.tags[shard]
            entry = scripts.inbox_entry(b"D", expires_at, origin, channel, payload)
            statuses, position = await self._merged_script(
                state,
                shard,
                PUSH_DIRECT,
                (f"{tag}i:{process}", f"{tag}n:{process}"),
                (self._ttl_ms,),
                (channel, capacity, entry),
            )
            queued = bool(statuses[position] == 1)
            if queued:
                self._sent += 1
            else:
                state.unsettled[process] -= 1
            return queued
        state.pushed[channel] += 1
        state.unsettled[channel] += 1
        shard = topology.shard_of(channel)
        tag = topology.tags[shard]
        (expired, groups, taken), position = await self._merged_script(
            state,
            shard,
            DELIVER,
            (f"{tag}c:{channel}", f"{tag}m:{channel}"),
            (repr(now), capacity, self._ttl_ms, mode),
            (scripts.channel_entry(expires_at, origin, payload),),
            mode,
        )
        if position == 0:  # the merged call's outcome for the channel is reported once
            if expired:
                self._expired += expired
            if groups:
                await self._leave_groups(state, channel, [g.decode() for g in groups])
        if position < taken:
            self._sent += 1
            return True
        state.unsettled[channel] -= 1
        return False

    async def _leave_groups(self, state: LoopState, channel: str, groups: list[str]) -> None:
        """Remove a normal channel from ``groups`` (it let a message expire unread)."""
        calls = []
        for group in groups:
            shard = self._topology.shard_of(group)
            tag = self._topology.tags[shard]
            calls.append(
                self._batcher(state, shard).call(("HDEL", f"{tag}g:{group}", f"c:{channel}"))
            )
            members = self._normal_groups.get(group)
            if members is not None:
                members.discard(channel)
                if not members:
                    del self._normal_groups[group]
        await asyncio.gather(*calls)

    async def group_send(
        self,
        group: str,
        message: Message,
        *,
        delay: float | timedelta | None = None,
        at: float | datetime | None = None,
    ) -> None:
        rules.check_group_name(group)
        payload = self._seal(self._freeze(message))
        due = self._due_time(delay, at)
        state = self._state()
        if due is not None:
            await self._schedule(state, b"g", group, payload, due)
            return
        self._group_sends += 1
        now = self.clock.time()
        await self._deliver_group(state, group, payload, now + self.expiry, now)

    async def _deliver_group(
        self, state: LoopState, group: str, payload: bytes, expires_at: float, now: float
    ) -> None:
        shard = self._topology.shard_of(group)
        tag = self._topology.tags[shard]
        entry = scripts.inbox_entry(b"G", expires_at, state.origin, group, payload)
        state.group_epoch += 1
        _, normal = await self._script(
            state, shard, GROUP_SEND, (f"{tag}g:{group}",), repr(now), entry, self._ttl_ms, tag
        )
        if not normal:
            return
        outcomes = await asyncio.gather(
            *(
                self._deliver(state, name.decode(), payload, expires_at, now, "group")
                for name in normal
            )
        )
        self._dropped_full += outcomes.count(False)

    # -- groups ------------------------------------------------------------------------------

    async def group_add(self, group: str, channel: str) -> None:
        rules.check_group_name(group)
        rules.check_channel_name(channel)
        state = self._state()
        state.group_epoch += 1
        expires_at = self.clock.time() + self.group_expiry
        topology = self._topology
        shard = topology.shard_of(group)
        tag = topology.tags[shard]
        key = f"{tag}g:{group}"
        if "!" in channel:
            process = rules.non_local_name(channel)
            inbox = f"{tag}i:{process}"
            # The inbox learns first: a group send that sees the process already finds the
            # membership ahead of its message.
            results = await self._batcher(state, shard).run(
                (
                    "RPUSH",
                    inbox,
                    scripts.inbox_entry(b"A", expires_at, state.origin, group, channel.encode()),
                ),
                ("PEXPIRE", inbox, self._ttl_ms),
                ("HSET", key, f"p:{process}", repr(expires_at)),
                ("PEXPIRE", key, self._group_ttl_ms),
                ("SET", f"{tag}a:{process}", b"1", "PX", self._alive_ms),
            )
        else:
            channel_shard = topology.shard_of(channel)
            index = f"{topology.tags[channel_shard]}m:{channel}"
            both = await asyncio.gather(
                self._batcher(state, shard).call(
                    ("HSET", key, f"c:{channel}", repr(expires_at)),
                    ("PEXPIRE", key, self._group_ttl_ms),
                ),
                self._batcher(state, channel_shard).call(
                    ("SADD", index, group), ("PEXPIRE", index, self._group_ttl_ms)
                ),
            )
            results = both[0] + both[1]
            self._normal_groups.setdefault(group, set()).add(channel)
        raise_first(results)

    async def group_discard(self, group: str, channel: str) -> None:
        rules.check_group_name(group)
        rules.check_channel_name(channel)
        state = self._state()
        state.group_epoch += 1
        topology = self._topology
        shard = topology.shard_of(group)
        tag = topology.tags[shard]
        if "!" in channel:
            process = rules.non_local_name(channel)
            results = await self._batcher(state, shard).run(
                (
                    "RPUSH",
                    f"{tag}i:{process}",
                    scripts.inbox_entry(b"R", 0.0, state.origin, group, channel.encode()),
                ),
                ("PEXPIRE", f"{tag}i:{process}", self._ttl_ms),
            )
        else:
            channel_shard = topology.shard_of(channel)
            both = await asyncio.gather(
                self._batcher(state, shard).call(("HDEL", f"{tag}g:{group}", f"c:{channel}")),
                self._batcher(state, channel_shard).call(
                    ("SREM", f"{topology.tags[channel_shard]}m:{channel}", group)
                ),
            )
            results = both[0] + both[1]
            members = self._normal_groups.get(group)
            if members is not None:
                members.discard(channel)
                if not members:
                    del self._normal_groups[group]
        raise_first(results)

    # -- receiving ---------------------------------------------------------------------------

    async def receive(self, channel: str) -> Message:
        rules.check_channel_name(channel)
        state = self._state()
        buffered = state.buffers.get(channel)
        if buffered:
            message = self._take_buffered(state, channel, buffered)
            if message is not None:
                self._received += 1
                return message
        source = rules.non_local_name(channel)
        waiter: Handoff[tuple[float, Message]] = Handoff(state.ready_readers)
        state.waiters.setdefault(channel, deque()).append(waiter)
        state.waiting[source] += 1
        self._ensure_pumps(state, channel, source)
        try:
            _, message = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Handed to us just as we were cancelled: first in line for the next reader.
                self._offer(state, channel, *waiter.result(), front=True)
            else:
                waiters = state.waiters.get(channel)
                if waiters is not None and waiter in waiters:
                    waiters.remove(waiter)
                    state.waiting[source] -= 1
                    if not waiters:
                        del state.waiters[channel]
            raise
        self._received += 1
        return message

    async def new_channel(self, prefix: str = "specific") -> str:
        return self._new_channel_name(prefix)

    # -- delayed delivery --------------------------------------------------------------------

    async def _schedule(
        self, state: LoopState, kind: bytes, target: str, payload: bytes, due: float
    ) -> None:
        owner = rules.non_local_name(target) if kind == b"p" else target
        shard = self._topology.shard_of(owner)
        tag = self._topology.tags[shard]
        ttl = int((max(0.0, due - self.clock.time()) + self.expiry + 3600) * 1000)
        capacity = 0 if kind == b"g" else min(self.capacity_of(target), _MAX_STORED_CAPACITY)
        await self._merged_script(
            state,
            shard,
            SCHEDULE,
            (f"{tag}d", f"{tag}s"),
            (),
            (repr(due), scripts.delayed_entry(kind, capacity, target, payload), ttl),
        )
        self._delayed += 1
        heapq.heappush(self._pending, (due, shard))
        self._arm(state)

    def _arm(self, state: LoopState) -> None:
        if not self._pending or state.closed:
            return
        due = self._pending[0][0]
        if state.timer is not None:
            if state.timer_due == due:
                return
            state.timer.cancel()
        state.timer_due = due
        state.timer = self.clock.call_at(due, lambda: self._on_due(state))

    def _on_due(self, state: LoopState) -> None:
        state.timer = None
        if state.closed:
            return
        if state.moving:
            state.move_again = True  # one mover at a time: under load each move takes more
            return
        state.moving = True
        state.spawn(self._keep_moving(state))

    async def _keep_moving(self, state: LoopState) -> None:
        """Move due messages until no timer fired during the last move."""
        try:
            while True:
                state.move_again = False
                await self._move_due(state)
                if not state.move_again or state.closed:
                    return
        finally:
            state.moving = False

    async def move_due(self) -> int:
        """Deliver every delayed message now due, whichever process scheduled it.

        Each process moves its own delayed messages when they are due, and reading processes
        sweep their home shard on every heartbeat; this is for a process that wants to be
        the safety net (``manage.py rundelay``), so that the messages of a process that died
        before their due time do not wait for a heartbeat. Safe to run anywhere, any number
        of times: each message is moved once. Returns how many were moved.
        """
        return await self._move_due(self._state(), range(self._topology.shards))

    async def _move_due(self, state: LoopState, shards: Iterable[int] | None = None) -> int:
        """Take every delayed message now due from ``shards`` and deliver it; returns how
        many were taken.

        Without ``shards``: the shards where this process's own due messages wait.
        """
        now = self.clock.time()
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
            tag = self._topology.tags[shard]
            while True:
                taken, delivered, refused, expired, groups, left = await self._script(
                    state,
                    shard,
                    MOVE_DUE,
                    (f"{tag}d",),
                    repr(now),
                    _MOVE_BATCH,
                    repr(self.expiry),
                    self._ttl_ms,
                    tag,
                    _NO_ORIGIN,
                )
                moved += taken
                self._sent += delivered
                self._dropped_full += refused
                self._expired += expired
                # What the script leaves to us: group messages (their normal channel members
                # live on other shards), and the groups of channels found with an expired head.
                work = [
                    self._deliver_late_group(state, groups[index], float(groups[index + 1]), now)
                    for index in range(0, len(groups), 2)
                ]
                work += [
                    self._leave_groups(
                        state, left[index].decode(), [g.decode() for g in left[index + 1]]
                    )
                    for index in range(0, len(left), 2)
                ]
                if work:
                    await asyncio.gather(*work)
                if taken < _MOVE_BATCH:
                    break
        self._arm(state)
        return moved

    async def _deliver_late_group(
        self, state: LoopState, entry: bytes, due: float, now: float
    ) -> None:
        _, group, payload = scripts.parse_delayed_entry(entry)
        expires_at = max(due, now) + self.expiry  # as the in-memory layer: from delivery
        self._group_sends += 1
        await self._deliver_group(state, group, payload, expires_at, now)

    # -- housekeeping ------------------------------------------------------------------------

    async def flush(self) -> None:
        """Delete every key under this layer's prefix (SCAN + UNLINK; never KEYS/FLUSHDB)."""
        state = self._state()
        pattern = f"{self.prefix}:*"
        for client in state.connections.clients:
            batch: list[Any] = []
            async for key in client.scan_iter(match=pattern, count=_SCAN_COUNT):
                batch.append(key)
                if len(batch) >= _SCAN_COUNT:
                    await self._unlink(client, batch)
                    batch = []
            if batch:
                await self._unlink(client, batch)
        state.buffers.clear()
        state.memberships.clear()
        state.unsettled.clear()  # nothing of this loop's is queued any more
        self._normal_groups.clear()
        self._pending.clear()
        if state.timer is not None:
            state.timer.cancel()
            state.timer = None

    async def _unlink(self, client: Any, keys: list[Any]) -> None:
        if self._topology.cluster:
            for key in keys:  # keys of different slots: one at a time
                await client.unlink(key)
        else:
            await client.unlink(*keys)

    async def close(self) -> None:
        """Close this event loop's connections and readers. Queued messages stay in Redis."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        state = self._states.pop(loop, None)
        if state is None:
            return
        await state.aclose()
        if state.guard is not None:
            closing = state.guard.aclose()  # already closed: finishes without suspending
            try:
                closing.send(None)
            except StopIteration:
                pass

    def statistics(self) -> LayerStatistics:
        channels: set[str] = set()
        # Groups this process knows to have members: those it added normal channels to, and
        # those its processes' inboxes announced (a group spanning two inboxes counts twice).
        groups = len(self._normal_groups)
        for state in list(self._states.values()):
            channels.update(name for name, queue in state.buffers.items() if queue)
            channels.update(name for name, waiters in state.waiters.items() if waiters)
            groups += sum(len(membership) for membership in state.memberships.values())
        return LayerStatistics(
            sent=self._sent,
            received=self._received,
            rejected_full=self._rejected_full,
            dropped_full=self._dropped_full,
            expired=self._expired,
            group_sends=self._group_sends,
            delayed=self._delayed,
            delayed_pending=len(self._pending),
            channels=len(channels),
            groups=groups,
        )


def _crypter(keys: Sequence[str | bytes] | None) -> Any:
    """A MultiFernet over ``keys`` (each hashed to a Fernet key, as channels_redis does)."""
    if keys is None:
        return None
    if isinstance(keys, str | bytes) or not keys:
        raise ConfigurationError(
            "symmetric_encryption_keys must be a non-empty list of keys (the first encrypts)"
        )
    from cryptography.fernet import Fernet, MultiFernet

    fernets = []
    for key in keys:
        raw = key.encode() if isinstance(key, str) else key
        if not isinstance(raw, bytes) or not raw:
            raise ConfigurationError("each symmetric encryption key must be a non-empty str")
        fernets.append(Fernet(base64.urlsafe_b64encode(hashlib.sha256(raw).digest())))
    return MultiFernet(fernets)
