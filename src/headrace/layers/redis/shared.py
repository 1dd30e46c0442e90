"""What the sending, reading and delaying parts of the Redis layer share.

:class:`Params` are the layer's settings as those parts use them (frozen, one per layer);
:class:`Counts` are the process-wide counters that :meth:`RedisChannelLayer.statistics`
publishes (every event loop of the process adds to the same ones).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from headrace.layers.base import LayerStatistics
from headrace.layers.clock import Clock
from headrace.layers.rules import CapacityTable

__all__ = ["Counts", "Params", "RedisLayerStatistics"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisLayerStatistics(LayerStatistics):
    """:class:`LayerStatistics` and what only the Redis layer counts."""

    #: Entries taken from Redis that were not messages (garbage, cut short, sealed with a key
    #: this layer lacks, not a dict), skipped; and the same by kind.
    undecodable: int = 0
    undecodable_by_kind: dict[str, int] = field(default_factory=dict)
    #: Group memberships written to Redis again after it lost them (a restart).
    reasserted: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Params:
    """The layer's settings, and the Redis TTLs derived from them."""

    clock: Clock
    capacity_of: CapacityTable
    expiry: float
    group_expiry: float
    heartbeat_interval: float
    block_timeout: float
    connect_timeout: float

    #: Garbage-collection TTLs in real milliseconds (the clock decides expiry): of lists and
    #: inboxes, of group hashes and indexes, and how long a process counts as alive after
    #: its last heartbeat.
    ttl_ms: int = field(init=False)
    group_ttl_ms: int = field(init=False)
    alive_ms: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ttl_ms", int(max(self.expiry * 2, self.expiry + 300) * 1000))
        object.__setattr__(self, "group_ttl_ms", int((self.group_expiry + 300) * 1000))
        object.__setattr__(self, "alive_ms", int(self.heartbeat_interval * 3 * 1000))


@dataclass(slots=True)
class Counts:
    """The process-wide counters of one layer."""

    sent: int = 0
    received: int = 0
    rejected_full: int = 0
    dropped_full: int = 0
    expired: int = 0
    group_sends: int = 0
    delayed: int = 0
    #: Entries skipped because they could not be decoded, by kind (see payload.BadKind).
    undecodable: dict[str, int] = field(default_factory=dict)
    #: Group memberships written to Redis again after it lost them.
    reasserted: int = 0
