"""The Redis channel layer (extra ``redis``): see :class:`RedisChannelLayer`.

Modules, by responsibility:

- :mod:`.layer`: the :class:`RedisChannelLayer` facade (checks, then hands work to the parts
  of the event loop it runs in, :mod:`.parts`);
- :mod:`.sender` (sends, group sends, memberships), :mod:`.reader` (``receive()`` and the
  local fan-out), :mod:`.pump` (the tasks that take entries from Redis), :mod:`.delays`
  (delayed messages), :mod:`.reassert` (memberships written back after Redis lost them):
  the parts of one event loop;
- :mod:`.handover` (when a send may skip Redis), :mod:`.members` (what the inboxes
  announced), :mod:`.held` (buffered messages still counted in Redis), :mod:`.shared`
  (settings, counters, statistics), :mod:`.payload` (encoding, encryption, entries that are
  not messages): values and rules;
- :mod:`.layout` (key names and entry formats), :mod:`.scripts` (the Lua scripts);
- :mod:`.connection` (per-loop pipelines), :mod:`.wire` (one connection and its errors),
  :mod:`.topology` (hosts, Sentinel, Cluster and the consistent hash).
"""

from __future__ import annotations

from headrace.layers.redis.layer import RedisChannelLayer
from headrace.layers.redis.shared import RedisLayerStatistics

__all__ = ["RedisChannelLayer", "RedisLayerStatistics"]
