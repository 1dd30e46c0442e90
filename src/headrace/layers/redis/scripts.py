"""The Lua scripts of the Redis channel layer.

The keys and entries they read and write are described, and built, in
:mod:`headrace.layers.redis.layout`: each script's header names the :class:`~.layout.Keys`
method that builds each of its KEYS and the entry format of its arguments. The scripts that
build keys themselves (from the shard tag ``T`` they are given) build them the same way.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "DECREMENT",
    "DELIVER",
    "GROUP_SEND",
    "MOVE_DUE",
    "PUSH_DIRECT",
    "SCHEDULE",
    "SCRIPTS",
    "Script",
]


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script and its SHA1 (for EVALSHA)."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()
        object.__setattr__(self, "sha", digest)


#: Lua shared by the scripts that deliver to a normal channel: remove the expired entries at
#: the head of the list ``key``; if there were any, the channel's reader is gone, so the
#: channel leaves its groups (its index ``index`` is deleted). Returns how many expired and the
#: groups it left.
_EXPIRE_HEAD: Final = """
local function expire_head(key, index, now)
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
    groups = redis.call('SMEMBERS', index)
    redis.call('DEL', index)
  end
  return expired, groups
end
"""

#: Deliver channel entries to a normal channel (the sends of one batch share one call).
#: KEYS[1] the channel's list (``Keys.channel``), KEYS[2] its group index (``Keys.groups_of``).
#: Entries: channel entries (``layout.channel_entry``).
#: ARGV[1] now, ARGV[2] capacity, ARGV[3] TTL in ms, ARGV[4] ``"send"`` (direct sends) or
#: ``"group"`` (a group member: an expired head means the member is gone, so nothing is
#: delivered), ARGV[5...] the channel entries, in sending order.
#: Expired entries at the head are removed first; if there were any, the channel leaves its
#: groups (the index is deleted and the group names returned for the caller to update). Then
#: as many entries as there is room for are appended, first come first served.
#: Returns ``{expired, groups, taken}``: the first ``taken`` entries were delivered, the others
#: refused (channel full); ``taken`` is -1 when a group member was found gone.
DELIVER: Final = Script(
    "deliver",
    _EXPIRE_HEAD
    + """
local key = KEYS[1]
local now = tonumber(ARGV[1])
local expired, groups = expire_head(key, KEYS[2], now)
if expired > 0 and ARGV[4] == 'group' then return {expired, groups, -1} end
local taken = math.min(tonumber(ARGV[2]) - redis.call('LLEN', key), #ARGV - 4)
if taken <= 0 then return {expired, groups, 0} end
for first = 5, 4 + taken, 1000 do
  redis.call('RPUSH', key, unpack(ARGV, first, math.min(first + 999, 4 + taken)))
end
redis.call('PEXPIRE', key, ARGV[3])
return {expired, groups, taken}
""",
)

#: Put direct messages for process channels into their process's inbox, each within its
#: channel's capacity (the sends of one batch to one process share one call).
#: KEYS[1] the inbox (``Keys.inbox``), KEYS[2] the counts (``Keys.counts``).
#: Entries: inbox entries of kind ``EntryKind.DIRECT``.
#: ARGV[1] TTL ms, then per message: the full channel name, its capacity, the inbox entry.
#: Returns one status per message: 1 queued, 0 refused (its channel already holds
#: ``capacity`` messages).
PUSH_DIRECT: Final = Script(
    "push_direct",
    """
local statuses = {}
local queued = {}
local added = {}
local entries = {}
for i = 2, #ARGV, 3 do
  local channel = ARGV[i]
  local count = queued[channel]
  if count == nil then count = tonumber(redis.call('HGET', KEYS[2], channel) or '0') end
  if count >= tonumber(ARGV[i + 1]) then
    statuses[#statuses + 1] = 0
  else
    count = count + 1
    added[channel] = (added[channel] or 0) + 1
    entries[#entries + 1] = ARGV[i + 2]
    statuses[#statuses + 1] = 1
  end
  queued[channel] = count
end
if #entries == 0 then return statuses end
for channel, count in pairs(added) do redis.call('HINCRBY', KEYS[2], channel, count) end
redis.call('PEXPIRE', KEYS[2], ARGV[1])
for first = 1, #entries, 1000 do
  redis.call('RPUSH', KEYS[1], unpack(entries, first, math.min(first + 999, #entries)))
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return statuses
""",
)

#: Send to a group: the serialized message is written once per live process with members.
#: KEYS[1] the group (``Keys.group``; fields ``layout.process_field``/``channel_field``).
#: ARGV[1] now, ARGV[2] the inbox entry (``EntryKind.GROUP``), ARGV[3] TTL ms, ARGV[4] the
#: shard tag ``Keys.tag`` (the script builds inbox and alive keys as ``Keys.inbox`` and
#: ``Keys.alive`` do: ``T i:X`` / ``T a:X``, in the group's slot).
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

#: Schedule delayed messages (those of one batch on one shard share one call).
#: KEYS[1] the delayed set (``Keys.delayed``), KEYS[2] its counter (``Keys.sequence``).
#: ARGV per message: its due time, its delayed entry without the sequence, and a TTL in ms
#: for both keys (only ever extended). Sequence numbers follow the order of ARGV.
#: Returns the last sequence number given.
SCHEDULE: Final = Script(
    "schedule",
    """
local count = #ARGV / 3
local seq = redis.call('INCRBY', KEYS[2], count) - count
local ttl = 0
for i = 1, #ARGV, 3 do
  seq = seq + 1
  redis.call('ZADD', KEYS[1], ARGV[i], struct.pack('>d', seq) .. ARGV[i + 1])
  ttl = math.max(ttl, tonumber(ARGV[i + 2]))
end
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return seq
""",
)

#: Take the delayed messages that are due, atomically (several movers never take the same
#: one), and deliver those for channels on the spot: a normal channel's entry is appended to
#: its list (expired head removed, capacity checked, as DELIVER does), a process channel's
#: to its process's inbox (capacity checked, as PUSH_DIRECT does). Both live in the delayed
#: set's slot: a delayed message is stored on the shard of its target's owner.
#: KEYS[1] the delayed set (``Keys.delayed``); members are ``layout.delayed_entry``s. Lists
#: and inboxes are built from the tag as ``Keys.channel``, ``Keys.groups_of``,
#: ``Keys.inbox`` and ``Keys.counts`` build them; inbox entries as ``EntryKind.DIRECT``.
#: ARGV[1] now, ARGV[2] the most to take, ARGV[3] expiry in seconds (a moved message expires
#: that long after it was due, or after now if later), ARGV[4] TTL ms, ARGV[5] the shard tag
#: ``T``, ARGV[6] the origin written into the delivered entries.
#: Returns ``{taken, delivered, refused (full), expired, {group entry, score, ...},
#: {channel, {groups it left}, ...}}``: group messages are left to the caller (their normal
#: channel members live on other shards), as are the groups that channels with an expired
#: head have left.
MOVE_DUE: Final = Script(
    "move_due",
    _EXPIRE_HEAD
    + """
local now = tonumber(ARGV[1])
local expiry = tonumber(ARGV[3])
local ttl = ARGV[4]
local tag = ARGV[5]
local origin = ARGV[6]
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0,
  tonumber(ARGV[2]))
local delivered, refused, expired = 0, 0, 0
local groups, left = {}, {}
for i = 1, #due, 2 do
  local entry = due[i]
  redis.call('ZREM', KEYS[1], entry)
  local kind = string.sub(entry, 9, 9)
  if kind == 'g' then
    groups[#groups + 1] = entry
    groups[#groups + 1] = due[i + 1]
  else
    local capacity = struct.unpack('>I4', entry, 10)
    local length = string.byte(entry, 14)
    local target = string.sub(entry, 15, 14 + length)
    local expires = struct.pack('>d', math.max(tonumber(due[i + 1]), now) + expiry)
    local payload = string.sub(entry, 15 + length)
    if kind == 'c' then
      local key = tag .. 'c:' .. target
      local gone, was_in = expire_head(key, tag .. 'm:' .. target, now)
      expired = expired + gone
      if #was_in > 0 then
        left[#left + 1] = target
        left[#left + 1] = was_in
      end
      if redis.call('LLEN', key) >= capacity then
        refused = refused + 1
      else
        redis.call('RPUSH', key, expires .. origin .. payload)
        redis.call('PEXPIRE', key, ttl)
        delivered = delivered + 1
      end
    else
      local process = string.match(target, '^[^!]*!')
      local counts = tag .. 'n:' .. process
      if tonumber(redis.call('HGET', counts, target) or '0') >= capacity then
        refused = refused + 1
      else
        redis.call('HINCRBY', counts, target, 1)
        redis.call('PEXPIRE', counts, ttl)
        local inbox = tag .. 'i:' .. process
        redis.call('RPUSH', inbox, 'D' .. expires .. origin .. string.char(length) .. target
          .. payload)
        redis.call('PEXPIRE', inbox, ttl)
        delivered = delivered + 1
      end
    end
  end
end
return {#due / 2, delivered, refused, expired, groups, left}
""",
)

#: Forget messages that left a process's inbox. KEYS[1] the counts (``Keys.counts``).
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
