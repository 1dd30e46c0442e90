"""The Redis key layout, the entry formats and the Lua scripts of the Redis channel layer.

Key layout
==========

Every key starts with a *shard tag* ``T``: ``"{prefix}:"`` on a standalone server, Sentinel or
each of several independent hosts, and ``"{prefix}:{{{prefix}.N}}:"`` on Redis Cluster, where
``N`` is one of ``cluster_buckets`` buckets (the braces are a Cluster hash tag, so every key of
one bucket lives in one slot and no script ever touches two slots). Which shard holds a key is
decided by a consistent hash of the *owner* of the key (a channel, a group or a process name),
see :mod:`headrace.layers.redis.topology`. ``X`` below is a process name: the part of a
process-specific channel up to and including ``!`` (``specific.3f9a1c2b7d4e!``).

``T c:<channel>``  (list)
    A normal channel's queue; entries are *channel entries* (below). Read by BLPOP/LPOP from
    any number of processes. TTL: ``expiry`` + margin, renewed by every push (garbage
    collection only; the layer's clock decides expiry).
``T i:X``  (list)
    Process X's inbox: *inbox entries* for all of X's ``!`` channels, direct messages, group
    messages and membership changes, in one FIFO. Only X reads it. X has one inbox per shard
    (group messages land on the group's shard). TTL like a channel.
``T n:X``  (hash: channel -> count)
    Direct messages queued in X's inbox per full channel name, for capacity. Incremented by
    the sender's script, decremented by X when it takes messages in.
``T a:X``  (string)
    X is alive. Set with a TTL by X's heartbeat (and by ``group_add`` of one of X's channels,
    which vouches for it until X starts reading). A group send skips, and forgets, processes
    whose key is gone.
``T g:<group>``  (hash)
    Group membership. ``p:X`` -> when X's latest membership in the group expires (the members
    themselves are known only to X, which learned them in order through its inbox);
    ``c:<channel>`` -> when a normal channel's membership expires. TTL: ``group_expiry`` +
    margin, renewed by ``group_add``.
``T m:<channel>``  (set)
    The groups a normal channel is in, so a channel that lets a message expire unread can be
    dropped from all of them.
``T d``  (sorted set)  and  ``T s``  (counter)
    Delayed messages by due time; members are *delayed entries*. ``s`` numbers them so that
    messages due at the same instant leave in the order they were sent.

Entry formats (binary; ``>d`` is a big-endian IEEE double, ``>B`` an unsigned byte)
====================================================================================

channel entry
    ``>d expires_at`` + origin (4 bytes) + payload
inbox entry
    kind (1 byte) + ``>d expires_at`` + origin (4 bytes) + ``>B len(name)`` + name + body,
    where kind is
    ``D`` direct (name = channel, body = payload), ``G`` group message (name = group,
    body = payload), ``A`` membership added (name = group, body = channel, ``expires_at`` =
    when the membership expires), ``R`` membership removed (name = group, body = channel).
delayed entry
    ``>d sequence`` + kind (``c`` normal channel, ``p`` process channel, ``g`` group) +
    ``>B len(target)`` + target + payload; the score is the due time.

The payload is the msgpack encoding of the message (encrypted when
``symmetric_encryption_keys`` is set). Times are the layer clock's epoch seconds. The origin
names the event loop (of one process) that wrote the entry: a reader that takes in its own
loop's entries knows none of them is still queued, which allows the local hand-over (see
``RedisChannelLayer.send``).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Final

__all__ = [
    "CHANNEL_HEADER",
    "DECREMENT",
    "DELIVER",
    "GROUP_SEND",
    "MOVE_DUE",
    "PUSH_DIRECT",
    "SCHEDULE",
    "SCRIPTS",
    "Script",
    "channel_entry",
    "delayed_entry",
    "inbox_entry",
    "parse_delayed_entry",
    "parse_inbox_entry",
    "unpack_double",
]

_DOUBLE: Final = struct.Struct(">d")


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script and its SHA1 (for EVALSHA)."""

    name: str
    source: str

    @property
    def sha(self) -> str:
        return hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()


#: Deliver one channel entry to a normal channel.
#: KEYS[1] the channel's list (``T c:<channel>``), KEYS[2] its group index (``T m:<channel>``).
#: ARGV[1] now, ARGV[2] capacity, ARGV[3] the channel entry, ARGV[4] TTL in ms,
#: ARGV[5] ``"send"`` (a direct send) or ``"group"`` (a group member: an expired head means
#: the member is gone, so nothing is delivered).
#: Expired entries at the head are removed first; if there were any, the channel leaves its
#: groups (the index is deleted and the group names returned for the caller to update).
#: Returns ``{status, expired, groups}``: status 1 delivered, 0 full, -1 member gone.
DELIVER: Final = Script(
    "deliver",
    """
local key = KEYS[1]
local now = tonumber(ARGV[1])
local expired = 0
local head = redis.call('LINDEX', key, 0)
while head do
  if struct.unpack('>d', head) > now then break end
  redis.call('LPOP', key)
  expired = expired + 1
  head = redis.call('LINDEX', key, 0)
end
local groups = {}
if expired > 0 then
  groups = redis.call('SMEMBERS', KEYS[2])
  redis.call('DEL', KEYS[2])
  if ARGV[5] == 'group' then return {-1, expired, groups} end
end
if redis.call('LLEN', key) >= tonumber(ARGV[2]) then return {0, expired, groups} end
redis.call('RPUSH', key, ARGV[3])
redis.call('PEXPIRE', key, ARGV[4])
return {1, expired, groups}
""",
)

#: Put a direct message for a process channel into its process's inbox, within capacity.
#: KEYS[1] the inbox (``T i:X``), KEYS[2] the counts (``T n:X``).
#: ARGV[1] the full channel name, ARGV[2] capacity, ARGV[3] the inbox entry, ARGV[4] TTL ms.
#: Returns 1 when queued, 0 when the channel already holds ``capacity`` messages.
PUSH_DIRECT: Final = Script(
    "push_direct",
    """
local queued = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if queued >= tonumber(ARGV[2]) then return 0 end
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('RPUSH', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
""",
)

#: Send to a group: the serialized message is written once per live process with members.
#: KEYS[1] the group (``T g:<group>``).
#: ARGV[1] now, ARGV[2] the inbox entry (kind ``G``), ARGV[3] TTL ms, ARGV[4] the shard tag
#: ``T`` (inbox and alive keys are ``T i:X`` / ``T a:X``, in the group's slot).
#: Expired memberships and dead processes are removed on the way.
#: Returns ``{processes reached, {normal channel members}}``; the caller delivers to the
#: normal channels (each lives on its own shard).
GROUP_SEND: Final = Script(
    "group_send",
    """
local now = tonumber(ARGV[1])
local tag = ARGV[4]
local fields = redis.call('HGETALL', KEYS[1])
local normal = {}
local reached = 0
for i = 1, #fields, 2 do
  local field = fields[i]
  if tonumber(fields[i + 1]) <= now then
    redis.call('HDEL', KEYS[1], field)
  elseif string.sub(field, 1, 2) == 'p:' then
    local process = string.sub(field, 3)
    if redis.call('EXISTS', tag .. 'a:' .. process) == 1 then
      local inbox = tag .. 'i:' .. process
      redis.call('RPUSH', inbox, ARGV[2])
      redis.call('PEXPIRE', inbox, ARGV[3])
      reached = reached + 1
    else
      redis.call('HDEL', KEYS[1], field)
    end
  else
    normal[#normal + 1] = string.sub(field, 3)
  end
end
return {reached, normal}
""",
)

#: Schedule a delayed message.
#: KEYS[1] the delayed set (``T d``), KEYS[2] its sequence counter (``T s``).
#: ARGV[1] due time, ARGV[2] the delayed entry without its sequence, ARGV[3] TTL ms (only
#: ever extended).
SCHEDULE: Final = Script(
    "schedule",
    """
local seq = redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[1], ARGV[1], struct.pack('>d', seq) .. ARGV[2])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
return seq
""",
)

#: Take the delayed messages that are due, atomically (several movers never take the same
#: one). KEYS[1] the delayed set (``T d``). ARGV[1] now, ARGV[2] the most to take.
#: Returns ``{entry, score, entry, score, ...}`` in due order (then sending order).
MOVE_DUE: Final = Script(
    "move_due",
    """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0,
  tonumber(ARGV[2]))
for i = 1, #due, 2 do redis.call('ZREM', KEYS[1], due[i]) end
return due
""",
)

#: Forget messages that left a process's inbox. KEYS[1] the counts (``T n:X``).
#: ARGV: channel, how many, channel, how many, ...
DECREMENT: Final = Script(
    "decrement",
    """
for i = 1, #ARGV, 2 do
  if redis.call('HINCRBY', KEYS[1], ARGV[i], -tonumber(ARGV[i + 1])) <= 0 then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return 1
""",
)

SCRIPTS: Final = (DELIVER, PUSH_DIRECT, GROUP_SEND, SCHEDULE, MOVE_DUE, DECREMENT)


#: Bytes before a channel entry's payload.
CHANNEL_HEADER: Final = 12


def channel_entry(expires_at: float, origin: bytes, payload: bytes) -> bytes:
    return _DOUBLE.pack(expires_at) + origin + payload


def inbox_entry(kind: bytes, expires_at: float, origin: bytes, name: str, body: bytes) -> bytes:
    encoded = name.encode("ascii")
    return kind + _DOUBLE.pack(expires_at) + origin + bytes((len(encoded),)) + encoded + body


def parse_inbox_entry(entry: bytes) -> tuple[int, float, bytes, str, bytes]:
    """``(kind, expires_at, origin, name, body)`` of an inbox entry; kind is the byte's value."""
    length = entry[13]
    return (
        entry[0],
        _DOUBLE.unpack_from(entry, 1)[0],
        entry[9:13],
        entry[14 : 14 + length].decode("ascii"),
        entry[14 + length :],
    )


def delayed_entry(kind: bytes, target: str, payload: bytes) -> bytes:
    encoded = target.encode("ascii")
    return kind + bytes((len(encoded),)) + encoded + payload


def parse_delayed_entry(entry: bytes) -> tuple[int, str, bytes]:
    """``(kind, target, payload)`` of a delayed entry (with its 8-byte sequence)."""
    length = entry[9]
    return entry[8], entry[10 : 10 + length].decode("ascii"), entry[10 + length :]


def unpack_double(data: bytes) -> float:
    return float(_DOUBLE.unpack_from(data, 0)[0])
