"""The Redis channel layer (extra ``redis``): see :class:`RedisChannelLayer`.

Modules: :mod:`.layer` (the layer), :mod:`.reading` (pumps and local fan-out),
:mod:`.connection` (per-loop pipelines and state), :mod:`.layout` (key names and entry
formats), :mod:`.scripts` (the Lua scripts), :mod:`.topology` (hosts, Sentinel, Cluster and
the consistent hash).
"""

from __future__ import annotations

from headrace.layers.redis.layer import RedisChannelLayer

__all__ = ["RedisChannelLayer"]
