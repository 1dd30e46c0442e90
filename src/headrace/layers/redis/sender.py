"""The sending half of the Redis layer: sends, group sends and memberships of one event loop.

A send goes through Redis unless the local hand-over allows delivering it inside this loop
(see :mod:`headrace.layers.redis.handover`); concurrent sends to one channel or one process
share one script call (:meth:`Batcher.merge`). A group send is one script call that appends
the message once to the inbox of each live process with members; ``group_add`` and
``group_discard`` of a process channel are written into that process's inbox first, so it
always knows a member before the member's first group message.
"""

from __future__ import annotations

import asyncio

from headrace.exceptions import ChannelFull
from headrace.layers import rules
from headrace.layers.codec import decode
from headrace.layers.redis import layout
from headrace.layers.redis.connection import LoopConnections
from headrace.layers.redis.handover import HandOverLedger
from headrace.layers.redis.layout import EntryKind
from headrace.layers.redis.payload import Payloads
from headrace.layers.redis.reader import Reader
from headrace.layers.redis.scripts import DELIVER, GROUP_SEND, PUSH_DIRECT
from headrace.layers.redis.shared import Counts, Params
from headrace.layers.redis.topology import Topology
from headrace.layers.redis.wire import raise_first

__all__ = ["NormalGroups", "Sender"]

#: Normal channels this process added to groups: group -> channel -> when it expires.
NormalGroups = dict[str, dict[str, float]]


class Sender:
    """The sending side of one layer in one event loop."""

    def __init__(
        self,
        conn: LoopConnections,
        topology: Topology,
        params: Params,
        counts: Counts,
        payloads: Payloads,
        handover: HandOverLedger,
        reader: Reader,
        normal_groups: NormalGroups,
    ) -> None:
        self._conn = conn
        self._topology = topology
        self._params = params
        self._clock = params.clock
        self._capacity_of = params.capacity_of
        self._counts = counts
        self._seal = payloads.seal
        self._handover = handover
        self._reader = reader
        #: Normal channels this process added to groups, by group (process-wide, shared by
        #: every loop's sender; for statistics()).
        self._normal_groups = normal_groups

    def send_nowait(self, channel: str, data: bytes) -> bool:
        """Deliver ``data`` inside this loop if the local hand-over allows it now (True);
        then the caller should yield once, so the reader runs before the next send."""
        if not self._can_hand_over(channel):
            return False
        self._counts.sent += 1
        self._reader.offer(channel, self._clock.time() + self._params.expiry, decode(data))
        return True

    async def send(self, channel: str, data: bytes) -> None:
        """Send the encoded message ``data`` to ``channel`` now (raises ``ChannelFull``);
        :meth:`send_nowait` was tried first."""
        popping = self._reader.popping(rules.non_local_name(channel))
        if popping is not None:
            # This loop's reader is taking in what is queued (one round trip, never a
            # blocking pop); once it has, the message can usually stay in this loop.
            await asyncio.wait([popping])
            if self.send_nowait(channel, data):
                await asyncio.sleep(0)  # let the reader run before the next send
                return
        now = self._clock.time()
        payload = self._seal(data)
        if not await self.deliver(channel, payload, now + self._params.expiry, now, "send"):
            self._counts.rejected_full += 1
            raise ChannelFull(
                f"channel {channel!r} is full (capacity {self._capacity_of(channel)})"
            )

    def _can_hand_over(self, channel: str) -> bool:
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
            if not self._handover.channel_settled(channel) or not self._reader.pumping(channel):
                return False
        else:
            source = rules.non_local_name(channel)
            if not self._handover.process_settled(source, self._topology.shards):
                return False
        return self._reader.has_room(channel)

    async def deliver(
        self,
        channel: str,
        payload: bytes,
        expires_at: float,
        now: float,
        mode: str,
    ) -> bool:
        """Queue one message on a channel; False when it is full (or, for a group member,
        gone). Counts sent/expired; the caller counts the refusal."""
        topology = self._topology
        capacity = self._capacity_of(channel)
        handover = self._handover
        origin = handover.origin
        if "!" in channel:
            process = rules.non_local_name(channel)
            handover.wrote(process)
            shard = topology.shard_of(process)
            keys = topology.keys[shard]
            entry = EntryKind.DIRECT.pack(expires_at, origin, channel, payload)
            statuses, position = await self._conn.merged_script(
                shard,
                PUSH_DIRECT,
                (keys.inbox(process), keys.counts(process)),
                (self._params.ttl_ms,),
                (channel, capacity, entry),
            )
            queued = bool(statuses[position] == 1)
            if queued:
                self._counts.sent += 1
            else:
                handover.refused(process)
            return queued
        handover.wrote(channel)
        shard = topology.shard_of(channel)
        keys = topology.keys[shard]
        (expired, groups, taken), position = await self._conn.merged_script(
            shard,
            DELIVER,
            (keys.channel(channel), keys.groups_of(channel)),
            (repr(now), capacity, self._params.ttl_ms, mode),
            (layout.channel_entry(expires_at, origin, payload),),
            mode,
        )
        if position == 0:  # the merged call's outcome for the channel is reported once
            if expired:
                self._counts.expired += expired
            if groups:
                await self.leave_groups(channel, [g.decode() for g in groups])
        if position < taken:
            self._counts.sent += 1
            return True
        handover.refused(channel)
        return False

    async def leave_groups(self, channel: str, groups: list[str]) -> None:
        """Remove a normal channel from ``groups`` (it let a message expire unread)."""
        calls = []
        for group in groups:
            shard = self._topology.shard_of(group)
            keys = self._topology.keys[shard]
            calls.append(
                self._conn.batcher(shard).call(
                    ("HDEL", keys.group(group), layout.channel_field(channel))
                )
            )
            members = self._normal_groups.get(group)
            if members is not None:
                members.pop(channel, None)
                if not members:
                    del self._normal_groups[group]
        await asyncio.gather(*calls)

    async def deliver_group(
        self, group: str, payload: bytes, expires_at: float, now: float
    ) -> None:
        """Send the sealed ``payload`` to every member of ``group``: one script call for the
        processes with members, one delivery per normal channel member."""
        shard = self._topology.shard_of(group)
        keys = self._topology.keys[shard]
        entry = EntryKind.GROUP.pack(expires_at, self._handover.origin, group, payload)
        self._handover.group_changed()
        _, normal = await self._conn.script(
            shard, GROUP_SEND, (keys.group(group),), repr(now), entry, self._params.ttl_ms, keys.tag
        )
        if not normal:
            return
        outcomes = await asyncio.gather(
            *(self.deliver(name.decode(), payload, expires_at, now, "group") for name in normal)
        )
        self._counts.dropped_full += outcomes.count(False)

    # -- groups ------------------------------------------------------------------------------

    async def group_add(self, group: str, channel: str) -> None:
        """Add ``channel`` to ``group`` (both checked)."""
        self._handover.group_changed()
        expires_at = self._clock.time() + self._params.group_expiry
        topology = self._topology
        shard = topology.shard_of(group)
        keys = topology.keys[shard]
        key = keys.group(group)
        if "!" in channel:
            process = rules.non_local_name(channel)
            inbox = keys.inbox(process)
            # The inbox learns first: a group send that sees the process already finds the
            # membership ahead of its message.
            results = await self._conn.batcher(shard).run(
                (
                    "RPUSH",
                    inbox,
                    EntryKind.ADD.pack(expires_at, self._handover.origin, group, channel.encode()),
                ),
                ("PEXPIRE", inbox, self._params.ttl_ms),
                ("HSET", key, layout.process_field(process), repr(expires_at)),
                ("PEXPIRE", key, self._params.group_ttl_ms),
                ("SET", keys.alive(process), b"1", "PX", self._params.alive_ms),
            )
        else:
            channel_shard = topology.shard_of(channel)
            index = topology.keys[channel_shard].groups_of(channel)
            both = await asyncio.gather(
                self._conn.batcher(shard).call(
                    ("HSET", key, layout.channel_field(channel), repr(expires_at)),
                    ("PEXPIRE", key, self._params.group_ttl_ms),
                ),
                self._conn.batcher(channel_shard).call(
                    ("SADD", index, group), ("PEXPIRE", index, self._params.group_ttl_ms)
                ),
            )
            results = both[0] + both[1]
            self._normal_groups.setdefault(group, {})[channel] = expires_at
        raise_first(results)

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group`` (both checked)."""
        self._handover.group_changed()
        topology = self._topology
        shard = topology.shard_of(group)
        keys = topology.keys[shard]
        if "!" in channel:
            process = rules.non_local_name(channel)
            results = await self._conn.batcher(shard).run(
                (
                    "RPUSH",
                    keys.inbox(process),
                    EntryKind.REMOVE.pack(0.0, self._handover.origin, group, channel.encode()),
                ),
                ("PEXPIRE", keys.inbox(process), self._params.ttl_ms),
            )
        else:
            channel_shard = topology.shard_of(channel)
            both = await asyncio.gather(
                self._conn.batcher(shard).call(
                    ("HDEL", keys.group(group), layout.channel_field(channel))
                ),
                self._conn.batcher(channel_shard).call(
                    ("SREM", topology.keys[channel_shard].groups_of(channel), group)
                ),
            )
            results = both[0] + both[1]
            members = self._normal_groups.get(group)
            if members is not None:
                members.pop(channel, None)
                if not members:
                    del self._normal_groups[group]
        raise_first(results)
