"""The reading half of the Redis layer: the ``receive()`` calls of one event loop, the pumps
that feed them, and the local fan-out of group messages.

A :class:`~headrace.layers.redis.pump.Pump` per *source* (a normal channel's list, or one
of a process's inboxes) takes at most as many entries as there are readers waiting; the
reader hands each to a waiting ``receive()`` (or keeps it in the loop's buffer for the next
one), applies expiry and capacity, fans group messages out to the process's members, and
learns memberships from the inbox in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from headrace.exceptions import LayerConnectionError
from headrace.layers import rules
from headrace.layers.groups import Membership
from headrace.layers.handoff import Handoff, Wakeups
from headrace.layers.redis import layout
from headrace.layers.redis.connection import LoopConnections
from headrace.layers.redis.handover import HandOverLedger
from headrace.layers.redis.held import HeldCounts
from headrace.layers.redis.layout import EntryKind
from headrace.layers.redis.members import InboxMembers
from headrace.layers.redis.payload import BadEntry, BadKind, Payloads, Rejects
from headrace.layers.redis.pump import Pumps
from headrace.layers.redis.shared import Counts, Params
from headrace.layers.redis.topology import Topology
from headrace.layers.redis.wire import Message, translate

__all__ = ["LeaveGroups", "Reader"]

logger = logging.getLogger("headrace.layers.redis")

#: Removes a normal channel from groups (it let a message expire unread).
LeaveGroups = Callable[[str, list[str]], Awaitable[None]]
_Waiter = Handoff[tuple[float, Message]]


class Reader:
    """The receiving side of one layer in one event loop."""

    def __init__(
        self,
        conn: LoopConnections,
        topology: Topology,
        params: Params,
        counts: Counts,
        payloads: Payloads,
        handover: HandOverLedger,
        *,
        leave_groups: LeaveGroups,
        sweep: Callable[[int], Awaitable[object]],
        beat: Callable[[], None],
        lost: Callable[[], None],
    ) -> None:
        self._conn = conn
        self._topology = topology
        self._params = params
        self._clock = params.clock
        self._capacity_of = params.capacity_of
        self._counts = counts
        self._open = payloads.open
        self._rejects = Rejects(counts, logger)
        self._handover = handover
        self._leave_groups = leave_groups
        self._waiters: dict[str, deque[_Waiter]] = {}
        self._ready_readers = Wakeups(conn.loop)  # readers handed a message, woken together
        self._waiting: Counter[str] = Counter()  # per source (process name or normal channel)
        self._buffers: dict[str, deque[tuple[float, Message]]] = {}
        self._members = InboxMembers()
        self._pumps = Pumps(
            conn,
            topology,
            params,
            handover,
            waiting=self._waiting,
            take_in_process=self._take_in_process,
            take_in_channel=self._take_in_channel,
            sweep=sweep,
            beat=beat,
            lost=lost,
        )
        self._held = HeldCounts(conn, topology)
        self._held_counts = self._held.held

    # -- what the layer and the sender ask -----------------------------------------------------

    def buffered(self, channel: str) -> int:
        """How many messages for ``channel`` this loop has taken in and not handed out yet."""
        return len(self._buffers.get(channel) or ())

    def receive_nowait(self, channel: str) -> Message | None:
        """The next message for ``channel`` if one is here already, else None."""
        buffered = self._buffers.get(channel)
        if buffered:
            message = self._take_buffered(channel, buffered)
            if message is not None:
                self._counts.received += 1
                return message
        return None

    async def receive(self, channel: str) -> Message:
        """The next message for ``channel`` (already checked), waiting as long as it takes;
        :meth:`receive_nowait` was tried first."""
        source = rules.non_local_name(channel)
        waiter: _Waiter = Handoff(self._ready_readers)
        self._waiters.setdefault(channel, deque()).append(waiter)
        self._waiting[source] += 1
        self._pumps.ensure(channel, source)
        self._pumps.changed()  # wait_reading() looks again
        try:
            _, message = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Handed to us just as we were cancelled: first in line for the next reader.
                self.offer(channel, *waiter.result(), front=True)
            else:
                waiters = self._waiters.get(channel)
                if waiters is not None and waiter in waiters:
                    waiters.remove(waiter)
                    self._waiting[source] -= 1
                    if not waiters:
                        del self._waiters[channel]
            raise
        self._counts.received += 1
        return message

    async def wait_reading(self, channel: str) -> None:
        """Until a ``receive(channel)`` of this loop waits and every pump feeding it is
        blocked in Redis (so a message sent now travels through Redis to that reader)."""
        await self._pumps.wait_blocked(channel, lambda: bool(self._waiters.get(channel)))

    def memberships(self, now: float) -> Iterator[tuple[str, str, float]]:
        """What Redis's group hashes should hold for this loop's processes (see
        :meth:`InboxMembers.assertions`)."""
        return self._members.assertions(now)

    def pumping(self, channel: str) -> bool:
        """True when a pump of this loop reads normal ``channel``."""
        return self._pumps.pumping(channel)

    def has_room(self, channel: str) -> bool:
        """True when this loop's buffer for ``channel`` is below its capacity."""
        buffered = self._buffers.get(channel)
        return buffered is None or len(buffered) < self._capacity_of(channel)

    def popping(self, source: str) -> asyncio.Future[list[Any]] | None:
        """A non-blocking pop of ``source`` in flight, if any (it settles the hand-over)."""
        return self._pumps.popping(source)

    def channels(self) -> set[str]:
        """Channels with messages buffered or readers waiting in this loop."""
        found = {name for name, queue in self._buffers.items() if queue}
        found.update(name for name, waiters in self._waiters.items() if waiters)
        return found

    def group_count(self) -> int:
        """Groups this loop's processes' inboxes announced members of."""
        return self._members.group_count()

    def forget(self) -> None:
        """Redis was flushed: drop what was taken in but not yet received, and memberships."""
        self._buffers.clear()
        self._members.clear()
        self._held.clear()

    def close(self) -> list[asyncio.Task[None]]:
        """Fail the waiting readers; the pumps, for the caller to cancel."""
        closed = LayerConnectionError("the Redis layer was closed while receive() was waiting")
        for waiters in self._waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(closed)
                    waiter.exception()  # mark retrieved: nobody may be left to see it
        self._waiters.clear()
        return self._pumps.tasks()

    # -- taking in ---------------------------------------------------------------------------

    def _take_buffered(
        self, channel: str, buffered: deque[tuple[float, Message]]
    ) -> Message | None:
        now = self._clock.time()
        if buffered[0][0] <= now:
            self._expire_buffered(channel, buffered, now)
        if not buffered:
            del self._buffers[channel]
            return None
        message = buffered.popleft()[1]
        if not buffered:
            del self._buffers[channel]
        if channel in self._held_counts:
            self._held.release(channel, len(buffered))
        return message

    def _expire_buffered(
        self, channel: str, buffered: deque[tuple[float, Message]], now: float
    ) -> None:
        while buffered and buffered[0][0] <= now:
            buffered.popleft()
            self._counts.expired += 1
        if channel in self._held_counts:
            self._held.release(channel, len(buffered))
        self._member_gone(channel)

    def _member_gone(self, channel: str) -> None:
        """``channel`` let a message expire unread: it leaves every group."""
        if "!" in channel:
            self._members.drop_channel(channel)
        else:
            self._conn.spawn(self._drop_normal_member(channel))

    async def _drop_normal_member(self, channel: str) -> None:
        shard = self._topology.shard_of(channel)
        index = self._topology.keys[shard].groups_of(channel)
        groups, _ = await self._conn.batcher(shard).run(("SMEMBERS", index), ("DEL", index))
        if isinstance(groups, Exception):
            raise translate(groups)
        if groups:
            await self._leave_groups(channel, [g.decode() for g in groups])

    def offer(
        self,
        channel: str,
        expires_at: float,
        message: Message,
        *,
        front: bool = False,
    ) -> bool:
        """Hand a message to a waiting reader of this loop (True), or keep it for the next
        one (False)."""
        waiters = self._waiters.get(channel)
        if waiters:
            source = rules.non_local_name(channel)
            while waiters:
                waiter = waiters.popleft()
                self._waiting[source] -= 1
                if waiter.give((expires_at, message)):
                    if not waiters:
                        del self._waiters[channel]
                    return True
            del self._waiters[channel]
        buffered = self._buffers.get(channel)
        if buffered is None:
            buffered = self._buffers[channel] = deque()
        if front:
            buffered.appendleft((expires_at, message))
        else:
            buffered.append((expires_at, message))
        return False

    def _take_in_channel(self, channel: str, entries: list[bytes]) -> None:
        now = self._clock.time()
        expired = 0
        origin = self._handover.origin
        own = 0
        for entry in entries:
            try:
                expires_at = layout.unpack_double(entry)
                if expires_at > now:
                    message = self._open(entry[layout.CHANNEL_HEADER :])
            except ValueError as error:
                self._rejects.skip(BadEntry.from_parse(error), channel)
                continue
            except BadEntry as bad:
                self._rejects.skip(bad, channel)
                continue
            finally:
                if layout.entry_origin(entry) == origin:
                    own += 1  # it left the list, read or not
            if expires_at <= now:
                expired += 1
                continue
            self.offer(channel, expires_at, message)
        if own:
            self._handover.took_own(channel, own)
        if expired:
            self._counts.expired += expired
            self._member_gone(channel)

    def _take_in_process(self, process: str, shard: int, entries: list[bytes]) -> None:
        now = self._clock.time()
        members = self._members
        membership = members.of(process)
        taken: Counter[str] = Counter()  # direct messages no longer counted in Redis
        # Messages handed to readers in this pass, per channel, when the pass took several
        # entries: they count against a member's capacity as if they had been queued
        # together (they were, in the inbox), so a member that was not reading gets what its
        # capacity holds and the rest is dropped, as a queue would.
        given: Counter[str] | None = Counter() if len(entries) > 1 else None
        own = 0
        own_origin = self._handover.origin
        for entry in entries:
            try:
                kind, expires_at, origin, name, body = layout.parse_inbox_entry(entry)
            except ValueError as error:
                self._rejects.skip(BadEntry.from_parse(error), f"the inbox of {process}")
                continue
            if kind is EntryKind.DIRECT:
                if origin == own_origin:
                    own += 1
                if expires_at <= now:
                    taken[name] += 1
                    self._counts.expired += 1
                    membership.drop_channel(name)
                    continue
                try:
                    message = self._open(body)
                except BadEntry as bad:
                    taken[name] += 1
                    self._rejects.skip(bad, name)
                    continue
                if self.offer(name, expires_at, message):
                    taken[name] += 1
                    if given is not None:
                        given[name] += 1
                else:
                    self._held.hold(name)  # buffered: it still takes room in Redis's count
            elif kind is EntryKind.GROUP:
                self._fan_out(membership, name, expires_at, body, now, given)
            elif body.isascii():
                if kind is EntryKind.ADD:
                    members.added(process, name, body.decode("ascii"), expires_at)
                else:
                    membership.discard(name, body.decode("ascii"))
            else:
                self._rejects.skip(BadEntry(BadKind.GARBAGE, "a member name is not ASCII"), name)
        if own:
            self._handover.took_own(process, own)
        if taken:
            self._held.forget(process, taken)

    def _fan_out(
        self,
        membership: Membership,
        group: str,
        expires_at: float,
        body: bytes,
        now: float,
        given: Counter[str] | None,
    ) -> None:
        """Deliver one group message to this process's members: decoded once, a shallow
        copy each. A member whose buffer (with what ``given`` says it was handed in this
        pass) is at capacity misses it: dropped and counted."""
        members = membership.members(group, now)
        if not members:
            return
        if expires_at <= now:
            for member in members:
                self._counts.expired += 1
                membership.drop_channel(member)
            return
        try:
            shared = self._open(body)
        except BadEntry as bad:
            self._rejects.skip(bad, f"group {group}")
            return
        # The hot loop of a large group: a waiting reader takes its copy directly; anything
        # else (buffered messages, expiry, capacity) goes the general way. A channel with a
        # reader waiting has nothing buffered (receive() takes from the buffer first).
        buffers = self._buffers
        all_waiters = self._waiters
        take_waiters = all_waiters.pop
        copy = shared.copy
        handed = 0
        for member in members:
            waiters = take_waiters(member, None)
            if waiters is not None:
                if given is None and len(waiters) == 1 and waiters[0].give((expires_at, copy())):
                    handed += 1
                    continue
                all_waiters[member] = waiters  # the general way, below
            held = given[member] if given is not None else 0
            if member in buffers:
                buffered = buffers[member]
                if buffered[0][0] <= now:
                    self._expire_buffered(member, buffered, now)
                    continue
                held += len(buffered)
            if held and held >= self._capacity_of(member):
                self._counts.dropped_full += 1
                continue
            self._counts.sent += 1
            if self.offer(member, expires_at, dict(shared)) and given is not None:
                given[member] += 1
        if handed:
            self._counts.sent += handed
            self._waiting[rules.non_local_name(members[0])] -= handed
