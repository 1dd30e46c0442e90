"""The Redis layer's storage layout: key names and the binary entries stored under them.

Everything the layer writes to Redis is named here, once: :class:`Keys` builds every key of
one shard, and the entry kinds are enums that pack and parse their own bytes. The Python code
and the Lua scripts in :mod:`headrace.layers.redis.scripts` use the same names (each script's
header says which :class:`Keys` method builds each of its KEYS).

Key layout
==========

Every key starts with a *shard tag* ``T``: ``"{prefix}:"`` on a standalone server, Sentinel or
each of several independent hosts, and ``"{prefix}:{{{prefix}.N}}:"`` on Redis Cluster, where
``N`` is one of ``cluster_buckets`` buckets (the braces are a Cluster hash tag, so every key of
one bucket lives in one slot and no script ever touches two slots). Which shard holds a key is
decided by a consistent hash of the *owner* of the key (a channel, a group or a process name),
see :mod:`headrace.layers.redis.topology`. ``X`` below is a process name: the part of a
process-specific channel up to and including ``!`` (``specific.3f9a1c2b7d4e!``).

``T c:<channel>``  (list) :meth:`Keys.channel`
    A normal channel's queue; entries are *channel entries* (below). Read by BLPOP/LPOP from
    any number of processes. TTL: ``expiry`` + margin, renewed by every push (garbage
    collection only; the layer's clock decides expiry).
``T i:X``  (list) :meth:`Keys.inbox`
    Process X's inbox: *inbox entries* for all of X's ``!`` channels, direct messages, group
    messages and membership changes, in one FIFO. Only X reads it. X has one inbox per shard
    (group messages land on the group's shard). TTL like a channel.
``T n:X``  (hash: channel -> count) :meth:`Keys.counts`
    Direct messages queued in X's inbox per full channel name, for capacity. Incremented by
    the sender's script, decremented by X when it takes messages in.
``T a:X``  (string) :meth:`Keys.alive`
    X is alive. Set with a TTL by X's heartbeat (and by ``group_add`` of one of X's channels,
    which vouches for it until X starts reading). A group send skips, and forgets, processes
    whose key is gone.
``T g:<group>``  (hash) :meth:`Keys.group`
    Group membership. ``p:X`` (:func:`process_field`) -> when X's latest membership in the
    group expires (the members themselves are known only to X, which learned them in order
    through its inbox); ``c:<channel>`` (:func:`channel_field`) -> when a normal channel's
    membership expires. TTL: ``group_expiry`` + margin, renewed by ``group_add``.
``T m:<channel>``  (set) :meth:`Keys.groups_of`
    The groups a normal channel is in, so a channel that lets a message expire unread can be
    dropped from all of them.
``T d``  (sorted set) :attr:`Keys.delayed`  and  ``T s``  (counter) :attr:`Keys.sequence`
    Delayed messages by due time; members are *delayed entries*. ``s`` numbers them so that
    messages due at the same instant leave in the order they were sent.

Entry formats (binary; ``>d`` is a big-endian IEEE double, ``>B`` an unsigned byte)
====================================================================================

channel entry (:func:`channel_entry`)
    ``>d expires_at`` + origin (4 bytes) + payload
inbox entry (:func:`inbox_entry`, :func:`parse_inbox_entry`)
    kind (1 byte, :class:`EntryKind`) + ``>d expires_at`` + origin (4 bytes) +
    ``>B len(name)`` + name + body, where kind is ``D`` direct (name = channel, body =
    payload), ``G`` group message (name = group, body = payload), ``A`` membership added
    (name = group, body = channel, ``expires_at`` = when the membership expires), ``R``
    membership removed (name = group, body = channel).
delayed entry (:func:`delayed_entry`, :func:`parse_delayed_entry`)
    ``>d sequence`` + kind (1 byte, :class:`DelayedKind`: ``c`` normal channel, ``p`` process
    channel, ``g`` group) + ``>I`` the target's capacity (0 for a group) + ``>B len(target)``
    + target + payload; the score is the due time.

The payload is the msgpack encoding of the message (encrypted when
``symmetric_encryption_keys`` is set). Times are the layer clock's epoch seconds. The origin
names the event loop (of one process) that wrote the entry: a reader that takes in its own
loop's entries knows none of them is still queued, which allows the local hand-over (see
:mod:`headrace.layers.redis.handover`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Final, NamedTuple

__all__ = [
    "CHANNEL_HEADER",
    "NO_ORIGIN",
    "ORIGIN_SIZE",
    "DelayedEntry",
    "DelayedKind",
    "EntryKind",
    "InboxEntry",
    "Keys",
    "channel_entry",
    "channel_field",
    "delayed_entry",
    "entry_origin",
    "parse_delayed_entry",
    "parse_inbox_entry",
    "process_field",
    "unpack_double",
]

_DOUBLE: Final = struct.Struct(">d")
_CAPACITY: Final = struct.Struct(">I")

#: Bytes of the origin (the writing event loop's id) in every channel and inbox entry.
ORIGIN_SIZE: Final = 4
#: The origin of entries that belong to no loop's hand-over bookkeeping (moved delayed ones).
NO_ORIGIN: Final = bytes(ORIGIN_SIZE)
#: Bytes before a channel entry's payload.
CHANNEL_HEADER: Final = 8 + ORIGIN_SIZE
_INBOX_NAME: Final = 1 + 8 + ORIGIN_SIZE + 1  # where an inbox entry's name starts


@dataclass(frozen=True, slots=True)
class Keys:
    """The keys of one shard, all starting with its tag (see the layout above)."""

    tag: str

    def channel(self, channel: str) -> str:
        """A normal channel's list."""
        return f"{self.tag}c:{channel}"

    def inbox(self, process: str) -> str:
        """A process's inbox list (``process`` ends with ``!``)."""
        return f"{self.tag}i:{process}"

    def counts(self, process: str) -> str:
        """Direct messages queued per channel in a process's inbox (for capacity)."""
        return f"{self.tag}n:{process}"

    def alive(self, process: str) -> str:
        """Present while the process heartbeats."""
        return f"{self.tag}a:{process}"

    def group(self, group: str) -> str:
        """A group's hash of member processes and normal channels."""
        return f"{self.tag}g:{group}"

    def groups_of(self, channel: str) -> str:
        """The set of groups a normal channel is in."""
        return f"{self.tag}m:{channel}"

    @property
    def delayed(self) -> str:
        """Delayed messages by due time."""
        return f"{self.tag}d"

    @property
    def sequence(self) -> str:
        """The counter that orders delayed messages due at the same instant."""
        return f"{self.tag}s"


def process_field(process: str) -> str:
    """A group hash's field for a process with members."""
    return f"p:{process}"


def channel_field(channel: str) -> str:
    """A group hash's field for a normal channel member."""
    return f"c:{channel}"


class EntryKind(IntEnum):
    """What an inbox entry carries; the value is its first byte."""

    DIRECT = ord("D")
    GROUP = ord("G")
    ADD = ord("A")
    REMOVE = ord("R")

    def pack(self, expires_at: float, origin: bytes, name: str, body: bytes) -> bytes:
        """An inbox entry of this kind."""
        encoded = name.encode("ascii")
        return (
            bytes((self.value,))
            + _DOUBLE.pack(expires_at)
            + origin
            + bytes((len(encoded),))
            + encoded
            + body
        )


class DelayedKind(IntEnum):
    """What a delayed entry targets; the value is its kind byte (after the sequence)."""

    CHANNEL = ord("c")
    PROCESS = ord("p")
    GROUP = ord("g")

    def pack(self, capacity: int, target: str, payload: bytes) -> bytes:
        """A delayed entry of this kind, without the sequence the script puts in front."""
        encoded = target.encode("ascii")
        return (
            bytes((self.value,))
            + _CAPACITY.pack(capacity)
            + bytes((len(encoded),))
            + encoded
            + payload
        )


_ENTRY_KINDS: Final = {kind.value: kind for kind in EntryKind}  # faster than EntryKind(byte)


class InboxEntry(NamedTuple):
    kind: EntryKind
    expires_at: float
    origin: bytes
    name: str
    body: bytes


class DelayedEntry(NamedTuple):
    kind: DelayedKind
    target: str
    payload: bytes


def channel_entry(expires_at: float, origin: bytes, payload: bytes) -> bytes:
    return _DOUBLE.pack(expires_at) + origin + payload


def entry_origin(entry: bytes) -> bytes:
    """The origin of a channel entry."""
    return entry[8:CHANNEL_HEADER]


def inbox_entry(kind: EntryKind, expires_at: float, origin: bytes, name: str, body: bytes) -> bytes:
    return kind.pack(expires_at, origin, name, body)


def parse_inbox_entry(entry: bytes) -> InboxEntry:
    """The parts of an inbox entry; ``ValueError`` when it is not one (truncated, unknown
    kind, a name that is not ASCII)."""
    if len(entry) < _INBOX_NAME:
        raise ValueError(f"an inbox entry needs {_INBOX_NAME} bytes or more, got {len(entry)}")
    length = entry[_INBOX_NAME - 1]
    end = _INBOX_NAME + length
    if len(entry) < end:
        raise ValueError(f"an inbox entry's name is cut short ({len(entry)} of {end} bytes)")
    kind = _ENTRY_KINDS.get(entry[0])
    if kind is None:
        raise ValueError(f"unknown inbox entry kind {entry[:1]!r}")
    return InboxEntry(
        kind,
        _DOUBLE.unpack_from(entry, 1)[0],
        entry[9 : _INBOX_NAME - 1],
        entry[_INBOX_NAME:end].decode("ascii"),
        entry[end:],
    )


def delayed_entry(kind: DelayedKind, capacity: int, target: str, payload: bytes) -> bytes:
    return kind.pack(capacity, target, payload)


def parse_delayed_entry(entry: bytes) -> DelayedEntry:
    """The parts of a delayed entry (with its 8-byte sequence)."""
    length = entry[13]
    return DelayedEntry(
        DelayedKind(entry[8]), entry[14 : 14 + length].decode("ascii"), entry[14 + length :]
    )


def unpack_double(data: bytes) -> float:
    """The ``>d`` at the start of ``data`` (a channel entry's expiry)."""
    if len(data) < 8:
        raise ValueError(f"an entry needs 8 bytes or more, got {len(data)}")
    return float(_DOUBLE.unpack_from(data, 0)[0])
