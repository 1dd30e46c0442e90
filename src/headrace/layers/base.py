"""The channel layer contract: what every backend accepts, checks and counts.

A backend subclasses :class:`BaseChannelLayer`, calls its ``__init__`` with the common keyword
arguments, and implements the async operations. The checks (names, messages, sizes, capacity,
due times) come from :mod:`headrace.layers.rules`; a backend never re-implements them.

A backend declares, as class attributes:

- ``config_class``: its :class:`~headrace.layers.config.LayerConfig` subclass, which the
  registry and the system check build from ``CONFIG`` before any layer exists;
- ``capabilities``: a :class:`~headrace.layers.config.Capabilities`, read by the callers that
  depend on a capability (group consumers, embedded workers, ``rundelay``); ``extensions`` is
  the same thing as the Channels layer specification's list, kept for code that reads it;
- ``process_wide``: one instance may be shared by every event loop and thread of the process
  (the in-memory layer). Otherwise the registry makes one instance per event loop.
"""

from __future__ import annotations

import secrets
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

from headrace import exceptions
from headrace.layers import rules
from headrace.layers.clock import Clock, SystemClock
from headrace.layers.codec import encode
from headrace.layers.config import DEFAULT_MAX_MESSAGE_SIZE, Capabilities, LayerConfig

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "BaseChannelLayer", "LayerStatistics"]


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerStatistics:
    """Counters since the layer was made (``flush()`` does not reset them).

    For a distributed backend the counters are this process's share.
    """

    sent: int  #: messages accepted by send/group_send (once per member reached)
    received: int  #: messages handed to a receive() call
    rejected_full: int  #: send() calls refused with ChannelFull
    dropped_full: int  #: messages dropped because a channel was full (group or delayed sends)
    expired: int  #: messages that expired unread
    group_sends: int  #: group_send() calls
    delayed: int  #: messages scheduled with delay= or at=
    delayed_pending: int  #: delayed messages not yet due (as known to this process)
    channels: int  #: channels with queued messages or waiting readers
    groups: int  #: groups with at least one member


class BaseChannelLayer(ABC):
    """Common configuration, checks and compatibility helpers for every backend."""

    config_class: ClassVar[type[LayerConfig]] = LayerConfig
    capabilities: ClassVar[Capabilities] = Capabilities()
    extensions: ClassVar[list[str]] = []
    process_wide: ClassVar[bool] = False

    # The Channels specification asks for these as attributes of every layer.
    ChannelFull = exceptions.ChannelFull
    MessageTooLarge = exceptions.MessageTooLarge

    MAX_NAME_LENGTH = rules.MAX_NAME_LENGTH

    def __init__(
        self, *, config: LayerConfig | None = None, clock: Clock | None = None, **settings: Any
    ) -> None:
        """Configure from ``config`` or from ``CONFIG`` keys (``capacity=200``), not both.

        Raises ConfigurationError naming every bad or unknown key.
        """
        if config is None:
            config = self.config_class.from_settings(settings)
        elif settings:
            raise TypeError(f"give config= or CONFIG keys, not both (got {', '.join(settings)})")
        elif not isinstance(config, self.config_class):
            raise TypeError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, "
                f"got {type(config).__name__}"
            )
        self.config = config
        self.expiry = config.expiry
        self.group_expiry = config.group_expiry
        self.capacity_of = rules.CapacityTable(config.capacity, dict(config.channel_capacity))
        self.capacity = self.capacity_of.default
        self.max_message_size = config.max_message_size
        self.clock: Clock = clock if clock is not None else SystemClock()
        # Unique per layer instance: new_channel() names cannot collide between processes.
        self.client_prefix = secrets.token_hex(6)

    # -- the contract (implemented by backends) -------------------------------------------------

    @abstractmethod
    async def send(
        self,
        channel: str,
        message: dict[str, Any],
        *,
        delay: float | timedelta | None = None,
        at: float | datetime | None = None,
    ) -> None:
        """Put ``message`` on ``channel``; with ``delay``/``at`` it arrives no earlier than that.

        Raises ChannelFull when the channel is at capacity (immediate sends only).
        """

    @abstractmethod
    async def receive(self, channel: str) -> dict[str, Any]:
        """Wait for and return the next message on ``channel``. Cancellation loses nothing."""

    @abstractmethod
    async def new_channel(self, prefix: str = "specific") -> str:
        """Return a new, unique process-specific channel name for this process to read."""

    @abstractmethod
    async def group_add(self, group: str, channel: str) -> None:
        """Add ``channel`` to ``group`` (or renew its membership for ``group_expiry``)."""

    @abstractmethod
    async def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group``; no error when it was not a member."""

    @abstractmethod
    async def group_send(
        self,
        group: str,
        message: dict[str, Any],
        *,
        delay: float | timedelta | None = None,
        at: float | datetime | None = None,
    ) -> None:
        """Send ``message`` to every member of ``group``. Never raises ChannelFull: a full
        member's copy is dropped and counted in ``statistics().dropped_full``."""

    @abstractmethod
    async def flush(self) -> None:
        """Delete every channel, group and delayed message this layer owns (and nothing else)."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections and timers. Queued messages are not deleted."""

    @abstractmethod
    def statistics(self) -> LayerStatistics:
        """This layer's counters: see :class:`LayerStatistics`."""

    async def move_due(self) -> int:
        """Deliver the delayed messages already due that no live process is timing; how many.

        Only a backend whose ``capabilities.moves_due`` is True has this (Redis, where delayed
        messages outlive the process that scheduled them); ``rundelay`` calls it.
        """
        raise NotImplementedError(
            f"{type(self).__name__} keeps delayed messages in the process that scheduled them "
            "and has no move_due() (its capabilities.moves_due is False)"
        )

    # -- shared helpers ---------------------------------------------------------------------------

    def _freeze(self, message: object) -> bytes:
        """Check and encode ``message`` once: every receiver's copy is made from these bytes.

        Raises InvalidMessage or MessageTooLarge; every backend sends what this returns.
        """
        data = encode(rules.check_message(message))
        if len(data) > self.max_message_size:
            rules.check_size(len(data), self.max_message_size)
        return data

    def _new_channel_name(self, prefix: str) -> str:
        prefix = rules.check_channel_name(prefix.rstrip(".") or "specific")
        if "!" in prefix:
            raise exceptions.InvalidChannelName(
                f"new_channel prefix {prefix!r} must not contain '!'; the layer adds it"
            )
        return f"{prefix}.{self.client_prefix}!{secrets.token_urlsafe(9)}"

    def _due_time(
        self, delay: float | timedelta | None, at: float | datetime | None
    ) -> float | None:
        """When a send is due, or None for an immediate send (neither ``delay`` nor ``at``)."""
        if delay is None and at is None:
            return None
        return self._due(delay, at)

    def _due(self, delay: float | timedelta | None, at: float | datetime | None) -> float:
        """When a delayed send (``delay=`` or ``at=`` given) is due, in epoch seconds."""
        return rules.due_time(self.clock.time(), delay, at)

    # -- Channels' BaseChannelLayer helpers, kept for code that calls them ------------------------

    def get_capacity(self, channel: str) -> int:
        return self.capacity_of(channel)

    def valid_channel_name(self, name: str, receive: bool = False) -> bool:
        rules.check_channel_name(name)
        return True

    def valid_group_name(self, name: str) -> bool:
        rules.check_group_name(name)
        return True

    def valid_channel_names(self, names: list[str], receive: bool = False) -> bool:
        if not isinstance(names, list):
            raise exceptions.InvalidChannelName(
                f"channel names must be given as a list, got {type(names).__name__}"
            )
        for name in names:
            rules.check_channel_name(name)
        return True

    require_valid_channel_name = valid_channel_name
    require_valid_group_name = valid_group_name

    def non_local_name(self, name: str) -> str:
        return rules.non_local_name(name)
