"""The in-memory channel layer: the whole contract inside one process, with no server.

It is the embedded default: development, tests, and single-process deployments. One instance
serves every event loop and thread of the process (``process_wide``), so a ``post_save``
handler that calls ``async_to_sync(layer.group_send)`` from a sync thread reaches consumers
running on the server's loop.

Why it is fast:

- a waiting receiver is handed the message directly (no queue, no extra wake-up);
- a message is checked and encoded once; point-to-point receivers get a private decoded copy,
  and the members of a ``group_send`` get a shallow copy each of one decoded message (nested
  values are shared between the members reached in this process: treat them as read-only);
- expiry, capacity and membership checks are O(1) per member.

Tests wait on :meth:`InMemoryChannelLayer.wait_delivered` (nothing left queued or on its way to
a receiver) instead of polling the statistics.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from datetime import datetime, timedelta
from typing import Any, ClassVar

from headrace.exceptions import ChannelFull
from headrace.layers import rules
from headrace.layers.base import BaseChannelLayer, LayerStatistics
from headrace.layers.clock import Clock, SystemClock, TimerHandle
from headrace.layers.codec import decode
from headrace.layers.config import Capabilities, LayerConfig
from headrace.layers.groups import Membership
from headrace.layers.schedule import DelaySchedule
from headrace.process import running_loop

__all__ = ["InMemoryChannelLayer"]

Message = dict[str, Any]

# How often (seconds) a send sweeps every channel for expired messages nobody is reading.
_SWEEP_INTERVAL = 5.0


class _Channel:
    """One channel: queued (expires_at, message) pairs, or receivers waiting for one."""

    __slots__ = ("queue", "waiters")

    def __init__(self) -> None:
        self.queue: deque[tuple[float, Message]] = deque()
        self.waiters: deque[asyncio.Future[Message]] = deque()


class InMemoryChannelLayer(BaseChannelLayer):
    """A channel layer held in this process's memory.

    CONFIG keys: those of :class:`~headrace.layers.config.LayerConfig` and no others —
    ``expiry`` (60 s), ``group_expiry`` (86400 s), ``capacity`` (100), ``channel_capacity``
    (glob or regex -> capacity), ``max_message_size`` (1 MiB).
    """

    capabilities: ClassVar[Capabilities] = Capabilities(
        groups=True, flush=True, delay=True, in_process=True
    )
    extensions: ClassVar[list[str]] = capabilities.extensions
    process_wide: ClassVar[bool] = True

    def __init__(
        self, *, config: LayerConfig | None = None, clock: Clock | None = None, **settings: Any
    ) -> None:
        super().__init__(config=config, clock=clock, **settings)
        self._lock = threading.Lock()
        self._channels: dict[str, _Channel] = {}
        self._membership = Membership()
        self._schedule: DelaySchedule[tuple[bool, str, Message]] = DelaySchedule()
        self._timer: TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self._timer_due = 0.0
        self._next_sweep = 0.0
        # The system clock's time() without a Python frame per call: this is read per message.
        self._now = time.time if isinstance(self.clock, SystemClock) else self.clock.time
        self._sent = self._received = self._rejected_full = self._dropped_full = 0
        self._expired = self._group_sends = self._delayed = 0
        # For wait_delivered(): the futures of receivers handed a message whose receive() has
        # not returned yet (a set: the receiver discards its own without the lock), and the
        # waits themselves (channels, future).
        self._handing: set[asyncio.Future[Message]] = set()
        self._delivery_waits: list[tuple[tuple[str, ...], asyncio.Future[None]]] = []

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
        if delay is not None or at is not None:
            self._schedule_delayed(self._due(delay, at), False, channel, decode(data))
            return
        now = self._now()
        with self._lock:
            if now >= self._next_sweep:
                self._sweep(now)
            self._offer(channel, decode(data), now, raise_full=True)

    async def group_send(
        self,
        group: str,
        message: Message,
        *,
        delay: float | timedelta | None = None,
        at: float | datetime | None = None,
    ) -> None:
        rules.check_group_name(group)
        data = self._freeze(message)
        if delay is not None or at is not None:
            self._schedule_delayed(self._due(delay, at), True, group, decode(data))
            return
        self._deliver_group(group, decode(data), self._now())

    def _deliver_group(self, group: str, shared: Message, now: float) -> None:
        with self._lock:
            self._group_sends += 1
            for channel in self._membership.members(group, now):
                self._offer(channel, dict(shared), now, raise_full=False, from_group=True)

    def _offer(
        self,
        name: str,
        message: Message,
        now: float,
        *,
        raise_full: bool,
        from_group: bool = False,
        front: bool = False,
    ) -> bool:
        """Hand ``message`` to a waiting receiver or queue it. Call with the lock held.

        Returns False when the message was dropped (full, or the member's reader is gone).
        """
        channel = self._channels.get(name)
        if channel is None:
            channel = self._channels[name] = _Channel()
        else:
            waiters = channel.waiters
            while waiters:
                waiter = waiters.popleft()
                if self._hand_over(waiter, name, message):
                    self._sent += 1
                    self._received += 1
                    return True
            queue = channel.queue
            if queue and queue[0][0] <= now:
                self._expire(name, channel, now)
                if from_group:
                    return False  # the member let a message expire: it was dropped from groups
            if len(queue) >= self.capacity_of(name):
                if raise_full:
                    self._rejected_full += 1
                    raise ChannelFull(
                        f"channel {name!r} is full ({len(queue)} messages waiting, capacity "
                        f"{self.capacity_of(name)})"
                    )
                self._dropped_full += 1
                return False
        if front:
            channel.queue.appendleft((now + self.expiry, message))
        else:
            channel.queue.append((now + self.expiry, message))
        self._sent += 1
        return True

    def _hand_over(self, waiter: asyncio.Future[Message], name: str, message: Message) -> bool:
        """Give ``message`` to a waiting receiver; False when that receiver is gone."""
        if waiter.done():
            return False
        loop = waiter.get_loop()
        if loop is running_loop():
            waiter.set_result(message)
            self._handing.add(waiter)
            return True
        try:
            loop.call_soon_threadsafe(self._late_hand_over, waiter, name, message)
        except RuntimeError:  # that receiver's loop is closed
            return False
        self._handing.add(waiter)
        return True

    def _late_hand_over(self, waiter: asyncio.Future[Message], name: str, message: Message) -> None:
        """Finish a hand-over across threads; if the receiver left meanwhile, requeue."""
        if not waiter.done():
            waiter.set_result(message)
            return
        with self._lock:
            self._sent -= 1  # _offer counts it again
            self._received -= 1
            self._handing.discard(waiter)
            self._offer(name, message, self._now(), raise_full=False, front=True)

    # -- receiving ---------------------------------------------------------------------------

    async def receive(self, channel: str) -> Message:
        rules.check_channel_name(channel)
        loop = asyncio.get_running_loop()
        with self._lock:
            self._ensure_timer(loop)
            entry = self._channels.get(channel)
            if entry is None:
                entry = self._channels[channel] = _Channel()
            else:
                queue = entry.queue
                if queue:
                    now = self._now()
                    if queue[0][0] <= now:
                        self._expire(channel, entry, now)
                    if queue:
                        self._received += 1
                        message = queue.popleft()[1]
                        if not queue and not entry.waiters:
                            del self._channels[channel]
                        if self._delivery_waits:
                            self._wake_delivered()
                        return message
            waiter: asyncio.Future[Message] = loop.create_future()
            entry.waiters.append(waiter)
        try:
            message = await waiter
        except asyncio.CancelledError:
            with self._lock:
                if waiter.done() and not waiter.cancelled():
                    # Handed to us just as we were cancelled: put it back, first in line.
                    self._sent -= 1
                    self._received -= 1
                    self._handing.discard(waiter)
                    self._offer(channel, waiter.result(), self._now(), raise_full=False, front=True)
                else:
                    entry = self._channels.get(channel)
                    if entry is not None:
                        try:
                            entry.waiters.remove(waiter)
                        except ValueError:
                            pass
                        if not entry.queue and not entry.waiters:
                            del self._channels[channel]
            raise
        self._handing.discard(waiter)  # one atomic call: no lock on this hot path
        if self._delivery_waits:
            with self._lock:
                self._wake_delivered()
        return message

    async def new_channel(self, prefix: str = "specific") -> str:
        return self._new_channel_name(prefix)

    # -- expiry --------------------------------------------------------------------------------

    def _expire(self, name: str, channel: _Channel, now: float) -> None:
        """Drop expired messages at the head of ``channel``; its reader leaves its groups."""
        queue = channel.queue
        while queue and queue[0][0] <= now:
            queue.popleft()
            self._expired += 1
        self._membership.drop_channel(name)
        if self._delivery_waits:
            self._wake_delivered()

    def _sweep(self, now: float) -> None:
        """Expire messages in channels nobody touches, and forget empty channels."""
        self._next_sweep = now + _SWEEP_INTERVAL
        for name, channel in list(self._channels.items()):
            if channel.queue and channel.queue[0][0] <= now:
                self._expire(name, channel, now)
            if not channel.queue and not channel.waiters:
                del self._channels[name]

    # -- groups --------------------------------------------------------------------------------

    def has_group_members(self, group: str) -> bool:
        """Whether ``group`` has a member (expired memberships may count), without the lock:
        a sender that finds none can skip building a message nobody in this process would
        receive. A member added by another thread at the same moment may be missed, as if it
        had joined a moment later."""
        return self._membership.has_members(group)

    async def group_add(self, group: str, channel: str) -> None:
        rules.check_group_name(group)
        rules.check_channel_name(channel)
        with self._lock:
            self._membership.add(group, channel, self._now() + self.group_expiry)

    async def group_discard(self, group: str, channel: str) -> None:
        rules.check_group_name(group)
        rules.check_channel_name(channel)
        with self._lock:
            self._membership.discard(group, channel)

    # -- delayed delivery ----------------------------------------------------------------------

    def _schedule_delayed(self, due: float, to_group: bool, target: str, message: Message) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            self._delayed += 1
            earliest = self._schedule.push(due, (to_group, target, message))
            if earliest or self._timer is None:
                self._arm_timer(loop)

    def _ensure_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        """Re-arm the delay timer here if the loop that held it has closed. Lock held."""
        if self._schedule.pending and (self._timer_loop is None or self._timer_loop.is_closed()):
            self._arm_timer(loop)

    def _arm_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        """Arm the timer for the earliest delayed message on ``loop``. Lock held."""
        due = self._schedule.next_due()
        if self._timer is not None:
            if due is not None and self._timer_due == due and self._timer_loop is loop:
                return
            self._timer.cancel()
            self._timer = None
        if due is None:
            return
        self._timer_loop = loop
        self._timer_due = due
        self._timer = self.clock.call_at(due, self._fire_due)

    def _fire_due(self) -> None:
        """Deliver every delayed message now due, in due order, then re-arm."""
        now = self._now()
        with self._lock:
            self._timer = None
            due = self._schedule.pop_due(now)
        for to_group, target, message in due:
            if to_group:
                self._deliver_group(target, message, now)
            else:
                with self._lock:
                    self._offer(target, message, now, raise_full=False)
        with self._lock:
            if self._timer is None and len(self._schedule):
                self._arm_timer(asyncio.get_running_loop())

    # -- housekeeping --------------------------------------------------------------------------

    async def flush(self) -> None:
        with self._lock:
            for channel in self._channels.values():
                channel.queue.clear()
            self._channels = {
                name: channel for name, channel in self._channels.items() if channel.waiters
            }
            self._membership.clear()
            self._schedule.clear()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._delivery_waits:
                self._wake_delivered()

    async def close(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._timer_loop = None

    # -- waiting for delivery ------------------------------------------------------------------

    async def wait_delivered(self, *channels: str) -> None:
        """Until no message for ``channels`` (every channel when none is named) is queued or on
        its way to a receiver: each was received, expired, or flushed.

        Delayed messages not due yet are not waited for (move the clock first). Waits from
        any thread or event loop; bound it with ``asyncio.timeout`` when nobody may read.
        """
        for channel in channels:
            rules.check_channel_name(channel)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (channels, future)
        with self._lock:
            if self._delivered(channels):
                return
            self._delivery_waits.append(entry)
        try:
            await future
        finally:
            with self._lock:
                if entry in self._delivery_waits:
                    self._delivery_waits.remove(entry)

    def _delivered(self, channels: tuple[str, ...]) -> bool:
        """Whether nothing for ``channels`` is queued or being handed over. Lock held."""
        if self._handing:
            return False
        if not channels:
            return not any(entry.queue for entry in self._channels.values())
        return not any((entry := self._channels.get(c)) and entry.queue for c in channels)

    def _wake_delivered(self) -> None:
        """Resolve the delivery waits that now hold, each on its own loop. Lock held."""
        for entry in list(self._delivery_waits):
            if self._delivered(entry[0]):
                self._delivery_waits.remove(entry)
                future = entry[1]
                try:
                    future.get_loop().call_soon_threadsafe(_resolve, future)
                except RuntimeError:  # that waiter's loop is closed
                    pass

    def statistics(self) -> LayerStatistics:
        with self._lock:
            return LayerStatistics(
                sent=self._sent,
                received=self._received,
                rejected_full=self._rejected_full,
                dropped_full=self._dropped_full,
                expired=self._expired,
                group_sends=self._group_sends,
                delayed=self._delayed,
                delayed_pending=len(self._schedule),
                channels=sum(1 for c in self._channels.values() if c.queue or c.waiters),
                groups=len(self._membership),
            )

    async def queue_length(self, channel: str) -> int:
        """Messages waiting unread in ``channel`` right now (expired ones not counted)."""
        rules.check_channel_name(channel)
        now = self._now()
        with self._lock:
            entry = self._channels.get(channel)
            return 0 if entry is None else sum(1 for due, _ in entry.queue if due > now)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
