"""The groups one connection belongs to: joined on open, left on close, each exactly once.

WebSocket and server-sent-events consumers both join their ``groups`` when the connection
opens, may join or leave more while it lives, and must leave everything they joined when it
ends — even when it ends by a failure. :class:`GroupMembership` is that bookkeeping, written
once; a consumer owns one per connection.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..exceptions import InvalidChannelLayerError
from ..layers.config import capabilities_of

__all__ = ["GroupMembership"]


class GroupMembership:
    """The groups ``channel_name`` has joined on ``layer``, in joining order."""

    __slots__ = ("_channel_name", "_joined", "_layer", "_owner")

    def __init__(self, layer: Any, channel_name: str | None, *, owner: str) -> None:
        self._layer = layer
        self._channel_name = channel_name
        #: Used in error messages: which consumer and alias wanted groups.
        self._owner = owner
        self._joined: dict[str, None] = {}

    @property
    def joined(self) -> tuple[str, ...]:
        """The groups joined and not yet left."""
        return tuple(self._joined)

    def require(self, groups: Iterable[str]) -> None:
        """Refuse clearly, before anything is joined, when ``groups`` need a layer we lack."""
        if any(True for _ in groups) and not self._supports_groups():
            raise InvalidChannelLayerError(
                f"{self._owner} uses groups, but has no channel layer with groups "
                "(is that CHANNEL_LAYERS alias configured?)"
            )

    def _supports_groups(self) -> bool:
        return self._layer is not None and capabilities_of(self._layer).groups

    async def join(self, group: str) -> None:
        """Add this connection to ``group`` (joining twice is one membership)."""
        self.require((group,))
        await self._layer.group_add(group, self._channel_name)
        self._joined[group] = None

    async def join_all(self, groups: Iterable[str]) -> None:
        """Join each of ``groups`` in order (checked first, so a bad layer joins none)."""
        groups = list(groups)
        self.require(groups)
        for group in groups:
            await self.join(group)

    async def leave(self, group: str) -> None:
        """Remove this connection from ``group`` (leaving a group not joined is harmless)."""
        self._joined.pop(group, None)
        if self._supports_groups():
            await self._layer.group_discard(group, self._channel_name)

    async def leave_all(self, also: Iterable[str] = ()) -> None:
        """Leave every group joined, plus ``also`` (groups the consumer joined by hand), once."""
        for group in dict.fromkeys([*self._joined, *also]):
            await self.leave(group)
