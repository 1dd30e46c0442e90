"""Group membership bookkeeping, as a plain class over values (no I/O, no event loop).

A membership lasts ``group_expiry`` seconds after the last ``group_add`` of that channel to
that group. A channel that lets a message expire unread is dropped from every group it is in
(:meth:`Membership.drop_channel`): its reader is gone.
"""

from __future__ import annotations

__all__ = ["Membership"]


class Membership:
    """Which channels are in which groups, and until when."""

    __slots__ = ("_by_channel", "_groups", "_soonest")

    def __init__(self) -> None:
        self._groups: dict[str, dict[str, float]] = {}
        self._by_channel: dict[str, set[str]] = {}
        # Per group, no later than its first membership to expire: until then a group send
        # takes the members as they are, without checking each one's expiry.
        self._soonest: dict[str, float] = {}

    def add(self, group: str, channel: str, expires_at: float) -> None:
        """Add ``channel`` to ``group`` (or renew it) until ``expires_at``."""
        members = self._groups.get(group)
        if members is None:
            members = self._groups[group] = {}
            self._soonest[group] = expires_at
        elif expires_at < self._soonest[group]:
            self._soonest[group] = expires_at
        members[channel] = expires_at
        groups = self._by_channel.get(channel)
        if groups is None:
            groups = self._by_channel[channel] = set()
        groups.add(group)

    def discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group``; no error when it was not a member."""
        members = self._groups.get(group)
        if members is not None and members.pop(channel, None) is not None and not members:
            del self._groups[group]
            del self._soonest[group]
        groups = self._by_channel.get(channel)
        if groups is not None:
            groups.discard(group)
            if not groups:
                del self._by_channel[channel]

    def members(self, group: str, now: float) -> list[str]:
        """The live members of ``group``; memberships expired by ``now`` are removed."""
        members = self._groups.get(group)
        if not members:
            return []
        if self._soonest[group] > now:
            return list(members)
        live = []
        expired = []
        soonest = float("inf")
        for channel, expires_at in members.items():
            if expires_at > now:
                live.append(channel)
                if expires_at < soonest:
                    soonest = expires_at
            else:
                expired.append(channel)
        for channel in expired:
            self.discard(group, channel)
        if live:
            self._soonest[group] = soonest
        return live

    def has_members(self, group: str) -> bool:
        """Whether ``group`` has a membership (maybe expired); a dict read, safe without a
        lock under the GIL."""
        return bool(self._groups.get(group))

    def groups_of(self, channel: str) -> frozenset[str]:
        """The groups ``channel`` is in (memberships not yet checked for expiry)."""
        return frozenset(self._by_channel.get(channel, ()))

    def drop_channel(self, channel: str) -> int:
        """Remove ``channel`` from all its groups; returns how many it was in."""
        groups = self._by_channel.pop(channel, None)
        if not groups:
            return 0
        for group in groups:
            members = self._groups.get(group)
            if members is not None:
                members.pop(channel, None)
                if not members:
                    del self._groups[group]
                    del self._soonest[group]
        return len(groups)

    def clear(self) -> None:
        self._groups.clear()
        self._by_channel.clear()
        self._soonest.clear()

    def __len__(self) -> int:
        """The number of groups with at least one member."""
        return len(self._groups)
