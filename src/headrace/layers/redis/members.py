"""The group members of one event loop's processes, as their inboxes announced them.

``group_add``/``group_discard`` of a process channel are written into the process's inbox
(see :mod:`headrace.layers.redis.sender`), so the reader learns its members in order, before
any later group message. :class:`InboxMembers` keeps what it learned: a
:class:`~headrace.layers.groups.Membership` per process, and per group the latest
membership's expiry, which is what Redis must hold for the process (and what
:mod:`headrace.layers.redis.reassert` writes back when Redis lost it). Plain values, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator

from headrace.layers import rules
from headrace.layers.groups import Membership

__all__ = ["InboxMembers"]


class InboxMembers:
    """Per process of one event loop: its members, and what Redis should say about them."""

    __slots__ = ("_joined", "_memberships")

    def __init__(self) -> None:
        self._memberships: dict[str, Membership] = {}
        # process -> group -> when the latest membership announced in the inbox expires
        self._joined: dict[str, dict[str, float]] = {}

    def of(self, process: str) -> Membership:
        """``process``'s members (made on first use)."""
        membership = self._memberships.get(process)
        if membership is None:
            membership = self._memberships[process] = Membership()
        return membership

    def added(self, process: str, group: str, channel: str, expires_at: float) -> None:
        """The inbox said: ``channel`` joined ``group`` until ``expires_at``."""
        self.of(process).add(group, channel, expires_at)
        joined = self._joined.setdefault(process, {})
        if joined.get(group, 0.0) < expires_at:
            joined[group] = expires_at

    def drop_channel(self, channel: str) -> None:
        """``channel`` let a message expire unread: it leaves every group."""
        membership = self._memberships.get(rules.non_local_name(channel))
        if membership is not None:
            membership.drop_channel(channel)

    def assertions(self, now: float) -> Iterator[tuple[str, str, float]]:
        """``(process, group, expires_at)`` for each group with live members, with the
        latest membership's expiry: what Redis's group hash should hold for the process."""
        for process, joined in list(self._joined.items()):
            membership = self._memberships.get(process)
            for group, expires_at in list(joined.items()):
                if expires_at <= now or membership is None or not membership.members(group, now):
                    del joined[group]  # gone (or left): nothing to write back
                else:
                    yield process, group, expires_at

    def group_count(self) -> int:
        """Groups with members, counted once per process."""
        return sum(len(membership) for membership in self._memberships.values())

    def clear(self) -> None:
        self._memberships.clear()
        self._joined.clear()
