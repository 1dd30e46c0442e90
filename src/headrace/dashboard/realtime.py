"""The real-time side of this process: channel layers, groups, connections.

Read-only samples for the dashboard and ``/metrics``; nothing here creates a layer. The
layers are the ones this process already made (one per alias, or one per event loop for a
backend that is not process-wide); their statistics are summed by alias. Group sizes are
known only to a layer that keeps memberships in the process (the in-memory layer); a sample
of at most :data:`GROUP_SAMPLE` groups is taken, the largest shown first.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import asdict, dataclass, fields
from typing import Any, Final

from headrace.connections import connection_counts
from headrace.layers.base import LayerStatistics

__all__ = ["GROUP_SAMPLE", "GroupSize", "Realtime", "layer_statistics", "realtime"]

#: Groups looked at per sample (a layer may hold millions).
GROUP_SAMPLE: Final = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupSize:
    layer: str
    group: str
    members: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Realtime:
    websockets: int
    sse: int
    layers: dict[str, LayerStatistics]
    groups: list[GroupSize]  #: the largest groups of the sample, largest first

    def as_json(self) -> dict[str, Any]:
        return {
            "websockets": self.websockets,
            "sse": self.sse,
            "layers": {alias: asdict(stats) for alias, stats in self.layers.items()},
            "groups": [asdict(group) for group in self.groups],
        }


def _layers() -> list[tuple[str, Any]]:
    # The registry's own caches, read under its lock (the registry has no public listing,
    # and asking it for a layer would make one).
    from headrace.layers.registry import channel_layers

    manager: Any = channel_layers
    found: list[tuple[str, Any]] = []
    with getattr(manager, "_lock", threading.RLock()):
        found.extend(getattr(manager, "_shared", {}).items())
        found.extend(getattr(manager, "_outside_loop", {}).items())
        for per_loop in list(getattr(manager, "_per_loop", {}).values()):
            found.extend(per_loop.items())
    seen: set[int] = set()
    unique = []
    for alias, layer in found:
        if id(layer) not in seen:
            seen.add(id(layer))
            unique.append((alias, layer))
    return unique


def layer_statistics() -> dict[str, LayerStatistics]:
    """``statistics()`` of this process's layers, summed by alias."""
    totals: dict[str, LayerStatistics] = {}
    names = [f.name for f in fields(LayerStatistics)]
    for alias, layer in _layers():
        statistics = getattr(layer, "statistics", None)
        if statistics is None:
            continue
        stats = statistics()
        if not isinstance(stats, LayerStatistics):
            continue
        before = totals.get(alias)
        if before is None:
            totals[alias] = stats
        else:
            totals[alias] = LayerStatistics(
                **{n: getattr(before, n) + getattr(stats, n) for n in names}
            )
    return totals


def _group_sizes(limit: int) -> list[GroupSize]:
    sizes = []
    for alias, layer in _layers():
        groups = getattr(getattr(layer, "_membership", None), "_groups", None)
        if not isinstance(groups, dict):
            continue
        # One C-level copy of the first entries (no Python code runs while it iterates).
        for group, members in list(itertools.islice(groups.items(), GROUP_SAMPLE)):
            sizes.append(GroupSize(layer=alias, group=group, members=len(members)))
    sizes.sort(key=lambda g: (-g.members, g.group))
    return sizes[:limit]


def realtime(groups: int = 10) -> Realtime:
    """A sample of this process's real-time state (``groups``: how many groups to list)."""
    counts = connection_counts()
    return Realtime(
        websockets=counts.websockets,
        sse=counts.sse,
        layers=layer_statistics(),
        groups=_group_sizes(groups),
    )
