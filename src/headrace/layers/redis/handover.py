"""When a message may skip Redis: the local hand-over's bookkeeping, as plain values.

A send to a channel that the sending event loop itself reads could be handed to the local
reader directly, saving two round trips. It may only be if that cannot overtake an earlier
message of the same loop still queued in Redis for that channel (FIFO per sender is owed;
messages of other processes were sent concurrently, so no order is owed between them).

:class:`HandOverLedger` keeps, per event loop, what that decision needs:

- per *source* (a normal channel, or a process name for its inboxes), how many entries this
  loop wrote (``pushed``) and how many of them may still be queued (``unsettled``). The
  reader counts its own loop's entries back in as it takes them (entries carry the writing
  loop's *origin*), and a pop that found the list empty settles everything written before
  it;
- a *group epoch* counting this loop's group operations (``group_add``/``group_discard``/
  ``group_send`` write into inboxes too), and per process pump the epoch at which it last
  found its inbox empty.

No I/O and no event loop: the sender asks :meth:`channel_settled`/:meth:`process_settled`,
the reader reports what it took and what it found empty.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

__all__ = ["HandOverLedger", "PopMark"]

Pump = tuple[str, int]  # (source, shard); a normal channel's pump has shard 0


@dataclass(frozen=True, slots=True)
class PopMark:
    """What the ledger looked like when a pop was issued (see :meth:`HandOverLedger.mark`)."""

    pushed: int
    epoch: int


class HandOverLedger:
    """The local hand-over bookkeeping of one event loop (pure; see the module docstring)."""

    __slots__ = ("_clean", "_epoch", "_pushed", "_unsettled", "origin")

    def __init__(self, origin: bytes) -> None:
        self.origin = origin  #: tags the entries this loop writes
        self._pushed: Counter[str] = Counter()
        self._unsettled: Counter[str] = Counter()
        self._epoch = 0
        self._clean: dict[Pump, int] = {}

    # -- the sender's side -------------------------------------------------------------------

    def wrote(self, source: str) -> None:
        """An entry for ``source`` is on its way to Redis (it may be queued from now on)."""
        self._pushed[source] += 1
        self._unsettled[source] += 1

    def refused(self, source: str) -> None:
        """The entry just :meth:`wrote` was not queued after all (the channel was full)."""
        self._unsettled[source] -= 1

    def group_changed(self) -> None:
        """A group operation of this loop may have written into any process's inbox."""
        self._epoch += 1

    def channel_settled(self, channel: str) -> bool:
        """True when none of this loop's entries for normal ``channel`` may still be queued."""
        return self._unsettled[channel] <= 0

    def process_settled(self, process: str, shards: int) -> bool:
        """True when none of this loop's entries may still be queued in ``process``'s inboxes:
        no direct message, and every inbox was found empty since the last group operation."""
        if self._unsettled[process] > 0:
            return False
        epoch = self._epoch
        clean = self._clean
        if shards == 1:  # the usual case, on every local send's path: no generator
            return clean.get((process, 0)) == epoch
        return all(clean.get((process, shard)) == epoch for shard in range(shards))

    # -- the reader's side -------------------------------------------------------------------

    def took_own(self, source: str, count: int) -> None:
        """The reader took ``count`` of this loop's own entries for ``source`` out of Redis."""
        self._unsettled[source] = max(0, self._unsettled[source] - count)

    def nothing_to_settle(self, source: str, pump: Pump) -> bool:
        """True when a pop could not settle anything, so a reader may block at once."""
        if "!" in source:
            return self._clean.get(pump) == self._epoch
        return self._unsettled[source] <= 0

    def mark(self, source: str) -> PopMark:
        """Taken just before a non-blocking pop of ``source``."""
        return PopMark(self._pushed[source], self._epoch)

    def found_empty(self, source: str, pump: Pump, mark: PopMark, *, settle: bool) -> None:
        """The pop issued at ``mark`` found ``pump``'s list empty: everything written before
        it was taken, only what was written since may still be queued. ``settle`` is False
        for a process's inboxes on other shards than its direct messages' (they hold only
        group entries)."""
        if settle:
            self._unsettled[source] = self._pushed[source] - mark.pushed
        self._clean[pump] = mark.epoch

    def forget(self) -> None:
        """Redis was flushed: nothing of this loop's is queued any more."""
        self._unsettled.clear()
