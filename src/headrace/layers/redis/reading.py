"""The reading half of the Redis layer: pumps that take entries in, and the local fan-out.

A *pump* is a task of one event loop that feeds that loop's ``receive()`` calls for one
*source*: a normal channel's list, or one of a process's inboxes. It takes at most as many
entries as there are readers waiting, hands each to a waiting reader (or keeps it in the
loop's buffer for the next one), applies expiry and capacity, fans group messages out to the
process's members, and learns memberships from the inbox in order. Redis failures are
logged once and retried with backoff; a pump never ends a consumer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from headrace.exceptions import LayerConnectionError
from headrace.layers import rules
from headrace.layers.clock import Clock
from headrace.layers.groups import Membership
from headrace.layers.redis import layout
from headrace.layers.redis.connection import (
    CONNECTION_ERRORS,
    Batcher,
    Link,
    LoopState,
    Message,
    translate,
)
from headrace.layers.redis.layout import EntryKind
from headrace.layers.redis.scripts import DECREMENT
from headrace.layers.redis.topology import Topology

__all__ = ["Reading"]

logger = logging.getLogger("headrace.layers.redis")


class Reading:
    """Mixed into :class:`~headrace.layers.redis.RedisChannelLayer`, which provides these."""

    clock: Clock
    capacity_of: rules.CapacityTable
    heartbeat_interval: float
    block_timeout: float
    _topology: Topology
    _alive_ms: int
    _sent: int
    _expired: int
    _dropped_full: int
    _batcher: Callable[[LoopState, int], Batcher]
    _thaw: Callable[[bytes], Message]
    _leave_groups: Callable[[LoopState, str, list[str]], Coroutine[Any, Any, None]]
    _move_due: Callable[[LoopState, Iterable[int] | None], Coroutine[Any, Any, int]]

    def _take_buffered(
        self, state: LoopState, channel: str, buffered: deque[tuple[float, Message]]
    ) -> Message | None:
        now = self.clock.time()
        if buffered[0][0] <= now:
            self._expire_buffered(state, channel, buffered, now)
        if not buffered:
            del state.buffers[channel]
            return None
        message = buffered.popleft()[1]
        if not buffered:
            del state.buffers[channel]
        return message

    def _expire_buffered(
        self, state: LoopState, channel: str, buffered: deque[tuple[float, Message]], now: float
    ) -> None:
        while buffered and buffered[0][0] <= now:
            buffered.popleft()
            self._expired += 1
        self._member_gone(state, channel)

    def _member_gone(self, state: LoopState, channel: str) -> None:
        """``channel`` let a message expire unread: it leaves every group."""
        if "!" in channel:
            membership = state.memberships.get(rules.non_local_name(channel))
            if membership is not None:
                membership.drop_channel(channel)
        else:
            state.spawn(self._drop_normal_member(state, channel))

    async def _drop_normal_member(self, state: LoopState, channel: str) -> None:
        shard = self._topology.shard_of(channel)
        index = self._topology.keys[shard].groups_of(channel)
        groups, _ = await self._batcher(state, shard).run(("SMEMBERS", index), ("DEL", index))
        if isinstance(groups, Exception):
            raise translate(groups)
        if groups:
            await self._leave_groups(state, channel, [g.decode() for g in groups])

    def _offer(
        self,
        state: LoopState,
        channel: str,
        expires_at: float,
        message: Message,
        *,
        front: bool = False,
    ) -> None:
        """Hand a message to a waiting reader of this loop, or keep it for the next one."""
        waiters = state.waiters.get(channel)
        if waiters:
            source = rules.non_local_name(channel)
            while waiters:
                waiter = waiters.popleft()
                state.waiting[source] -= 1
                if waiter.give((expires_at, message)):
                    if not waiters:
                        del state.waiters[channel]
                    return
            del state.waiters[channel]
        buffered = state.buffers.get(channel)
        if buffered is None:
            buffered = state.buffers[channel] = deque()
        if front:
            buffered.appendleft((expires_at, message))
        else:
            buffered.append((expires_at, message))

    def _ensure_pumps(self, state: LoopState, channel: str, source: str) -> None:
        if "!" in channel:
            for shard in range(self._topology.shards):
                if (source, shard) not in state.pumps:
                    state.pumps[source, shard] = state.loop.create_task(
                        self._pump(state, source, shard, process=True)
                    )
        elif (source, 0) not in state.pumps:
            shard = self._topology.shard_of(channel)
            state.pumps[source, 0] = state.loop.create_task(
                self._pump(state, source, shard, process=False)
            )
        wakeup = state.wakeups.get(source)
        if wakeup is not None and not wakeup.is_set() and source not in state.wake_checks:
            # Wake an idle pump at the end of this loop pass, and only if a reader still
            # waits then: a sender of this loop often hands the message over first (a
            # producer and a consumer in one process), and an idle pump woken for nothing
            # costs more than the message.
            state.wake_checks.add(source)
            state.loop.call_soon(self._wake_pump, state, source)

    def _wake_pump(self, state: LoopState, source: str) -> None:
        state.wake_checks.discard(source)
        wakeup = state.wakeups.get(source)
        if wakeup is not None and state.waiting[source] > 0:
            wakeup.set()

    async def _pump(self, state: LoopState, source: str, shard: int, *, process: bool) -> None:
        """Feed this loop's readers of ``source`` (a process name or a normal channel).

        A process pump lives as long as the loop state and heartbeats; a channel pump ends
        when nobody is waiting. Redis failures are logged once and retried with backoff.
        """
        keys = self._topology.keys[shard]
        key = keys.inbox(source) if process else keys.channel(source)
        batcher = self._batcher(state, shard)
        wakeup = state.wakeups.setdefault(source, asyncio.Event())
        linger = self.heartbeat_interval if process else self.block_timeout
        pump_key = (source, shard if process else 0)
        home = self._topology.shard_of(source)
        next_beat = 0.0
        pause = 0.05
        failing = False
        link = Link(batcher.client)  # blocking pops hold a connection: one of its own
        state.links.add(link)
        try:
            while not state.closed:
                try:
                    if process and time.monotonic() >= next_beat:
                        next_beat = time.monotonic() + self.heartbeat_interval
                        await batcher.call(("SET", keys.alive(source), b"1", "PX", self._alive_ms))
                        await self._move_due(state, [shard])
                    wanted = state.waiting[source]
                    if wanted <= 0:
                        # Nobody waits: take nothing (no hoarding), wait for a reader.
                        wakeup.clear()
                        try:
                            await asyncio.wait_for(wakeup.wait(), linger)
                        except TimeoutError:
                            if not process and state.waiting[source] <= 0:
                                return
                        continue
                    entries = await self._pop(
                        state, source, key, batcher, link, wanted, pump_key, settle=shard == home
                    )
                except (*CONNECTION_ERRORS, LayerConnectionError) as error:
                    if not failing:
                        failing = True
                        logger.warning(
                            "Redis layer lost its connection reading %r; reconnecting: %s",
                            source,
                            error,
                        )
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 2.0)
                    continue
                if failing:
                    failing = False
                    pause = 0.05
                    logger.warning("Redis layer reconnected; reading %r again", source)
                if entries:
                    if process:
                        self._take_in_process(state, source, shard, entries)
                    else:
                        self._take_in_channel(state, source, entries)
        finally:
            state.links.discard(link)
            await link.aclose()
            if state.pumps.get(pump_key) is asyncio.current_task():
                del state.pumps[pump_key]
                if not process:
                    state.wakeups.pop(source, None)

    async def _pop(
        self,
        state: LoopState,
        source: str,
        key: str,
        batcher: Batcher,
        link: Link,
        wanted: int,
        pump_key: tuple[str, int],
        *,
        settle: bool,
    ) -> list[bytes]:
        """Take up to ``wanted`` entries from ``key``, blocking (up to ``block_timeout``)
        while it is empty, and settle the local hand-over bookkeeping on the way."""
        blpop = ("BLPOP", key, self.block_timeout)
        handover = state.handover
        if wanted == 1 and handover.nothing_to_settle(source, pump_key):
            # One reader and nothing to settle: an inbox's own entries are counted out
            # exactly as they come in (only this process reads it), and none of this loop's
            # messages to a normal channel can still be queued. Block at once: a pop first
            # would cost a round trip per receive.
            (popped,) = await link.execute([blpop])
            return [popped[1]] if popped else []
        mark = handover.mark(source)
        popping = state.popping[source] = batcher.call(("LPOP", key, wanted))
        try:
            (entries,) = await popping
        finally:
            if state.popping.get(source) is popping:
                del state.popping[source]
        if isinstance(entries, Exception):
            raise entries
        if entries:
            return list(entries)
        # Everything this loop wrote before the pop was taken: only what it wrote since may
        # still be queued.
        handover.found_empty(source, pump_key, mark, settle=settle)
        (popped,) = await link.execute([blpop])
        return [popped[1]] if popped else []

    def _take_in_channel(self, state: LoopState, channel: str, entries: list[bytes]) -> None:
        now = self.clock.time()
        expired = 0
        origin = state.handover.origin
        own = 0
        for entry in entries:
            if layout.entry_origin(entry) == origin:
                own += 1
            expires_at = layout.unpack_double(entry)
            if expires_at <= now:
                expired += 1
                continue
            self._offer(state, channel, expires_at, self._thaw(entry[layout.CHANNEL_HEADER :]))
        if own:
            state.handover.took_own(channel, own)
        if expired:
            self._expired += expired
            self._member_gone(state, channel)

    def _take_in_process(
        self, state: LoopState, process: str, shard: int, entries: list[bytes]
    ) -> None:
        now = self.clock.time()
        membership = state.memberships.get(process)
        if membership is None:
            membership = state.memberships[process] = Membership()
        taken: Counter[str] = Counter()
        own = 0
        own_origin = state.handover.origin
        for entry in entries:
            kind, expires_at, origin, name, body = layout.parse_inbox_entry(entry)
            if kind is EntryKind.DIRECT:
                taken[name] += 1
                if origin == own_origin:
                    own += 1
                if expires_at <= now:
                    self._expired += 1
                    membership.drop_channel(name)
                else:
                    self._offer(state, name, expires_at, self._thaw(body))
            elif kind is EntryKind.GROUP:
                self._fan_out(state, membership, name, expires_at, body, now)
            elif kind is EntryKind.ADD:
                membership.add(name, body.decode("ascii"), expires_at)
            elif kind is EntryKind.REMOVE:
                membership.discard(name, body.decode("ascii"))
        if own:
            state.handover.took_own(process, own)
        if taken:
            home = self._topology.shard_of(process)
            args: list[Any] = []
            for channel, count in taken.items():
                args += [channel, count]
            self._batcher(state, home).call_nowait(
                ("EVALSHA", DECREMENT.sha, 1, self._topology.keys[home].counts(process), *args)
            )

    def _fan_out(
        self,
        state: LoopState,
        membership: Membership,
        group: str,
        expires_at: float,
        body: bytes,
        now: float,
    ) -> None:
        """Deliver one group message to this process's members: decoded once, a shallow
        copy each."""
        members = membership.members(group, now)
        if not members:
            return
        if expires_at <= now:
            for member in members:
                self._expired += 1
                membership.drop_channel(member)
            return
        shared = self._thaw(body)
        # The hot loop of a large group: a waiting reader takes its copy directly; anything
        # else (buffered messages, expiry, capacity) goes the general way. A channel with a
        # reader waiting has nothing buffered (receive() takes from the buffer first).
        buffers = state.buffers
        all_waiters = state.waiters
        take_waiters = all_waiters.pop
        copy = shared.copy
        handed = 0
        for member in members:
            waiters = take_waiters(member, None)
            if waiters is not None:
                if len(waiters) == 1 and waiters[0].give((expires_at, copy())):
                    handed += 1
                    continue
                all_waiters[member] = waiters  # the general way, below
            elif member in buffers:
                buffered = buffers[member]
                if buffered[0][0] <= now:
                    self._expire_buffered(state, member, buffered, now)
                    continue
                if len(buffered) >= self.capacity_of(member):
                    self._dropped_full += 1
                    continue
            self._sent += 1
            self._offer(state, member, expires_at, dict(shared))
        if handed:
            self._sent += handed
            state.waiting[rules.non_local_name(members[0])] -= handed
