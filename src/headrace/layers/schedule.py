"""The order of delayed messages, as a plain class over values.

Delayed messages leave in due order; messages due at the same instant leave in the order they
were scheduled.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Any

__all__ = ["DelaySchedule"]


class DelaySchedule[T]:
    """A priority queue of items by due time, stable for equal times."""

    __slots__ = ("_heap", "_order", "pending")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Any]] = []
        self._order = itertools.count()
        #: How many items are scheduled (a plain attribute: hot paths read it).
        self.pending = 0

    def push(self, due: float, item: T) -> bool:
        """Schedule ``item``; True when it is now the earliest (the timer must be re-armed)."""
        entry = (due, next(self._order), item)
        heapq.heappush(self._heap, entry)
        self.pending += 1
        return self._heap[0] is entry

    def pop_due(self, now: float) -> list[T]:
        """Remove and return every item due at or before ``now``, in due order."""
        heap = self._heap
        due: list[T] = []
        while heap and heap[0][0] <= now:
            due.append(heapq.heappop(heap)[2])
        self.pending -= len(due)
        return due

    def next_due(self) -> float | None:
        """When the earliest item is due, or None when nothing is scheduled."""
        return self._heap[0][0] if self._heap else None

    def clear(self) -> None:
        self._heap.clear()
        self.pending = 0

    def __len__(self) -> int:
        return self.pending
