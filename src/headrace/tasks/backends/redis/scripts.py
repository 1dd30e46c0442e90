"""The Lua scripts of the Redis task backend: every change of a job is one of them.

A script runs atomically, so a job is never claimed without its lease, never both READY and
RUNNING, and a lease never lapses half-way. The state table of :mod:`headrace.tasks.states`
is compiled into each script (``MOVES`` below), so Redis applies the same legal moves as
every other store. Keys follow :mod:`.layout` (``B`` = ``<prefix>:{<queue>}:``); the job
keys a script builds from ``B`` and an id share the queue's hash tag, so no script touches a
second Cluster slot.

``now`` (ARGV[1] everywhere) is empty in production: the script reads the server's ``TIME``.

Every moving script takes the same seven KEYS: ``B ready``, ``B delayed``, ``B leases``,
``B wake``, ``B stats``, ``B dead``, ``B done``; and ARGV[2] = ``B``. They also count in
``B counts`` and ``B hist`` (built from ``B``, same hash tag; see :mod:`.monitor`): counter
increments are tallied while a script runs and written at its end, one ``HINCRBY`` per
counter however many jobs it moved.

ENQUEUE  KEYS[8] job hash, KEYS[9] idempotency key (the job hash again if none), KEYS[10]
         ``B fired`` (schedule entry -> last slot fired).
         ARGV[3] id, [4] spec JSON, [5] priority, [6] delay (s), [7] expires in (s or ""),
         [8] "1" if it has a key, [9] result ttl (s), [10] schedule entry ("" if none),
         [11] its slot: with an entry, the job is added only if the slot is later than the
         entry's last fired slot, which it then becomes (beat's ``fire_slot``).
         [12] the task path (kept in the job hash for the per-task counters).
         -> {1, id, now} stored; {0, id} the id, or the live job holding the key, exists
         (or the slot was fired already).
CLAIM    ARGV[3] worker id, [4] lease (s), [5] max_deliveries, [6] how many (the worker's
         free slots). Returns lapsed leases (WorkerLost; dead-lettered after
         max_deliveries), moves due delayed jobs to ready, then pops the best ready jobs
         (expired ones fail unrun). -> {1, {token, job values, ...}, finished ids} (the
         values of :data:`.layout.READ_FIELDS`, in that order) or {0,
         seconds until the next due job or lapse ("" if none), finished ids}; finished ids
         are the jobs it expired or dead-lettered (the caller announces them).
CLAIM_ONE  KEYS[8] job. ARGV[3] id, [4] worker id, [5] lease: claim this READY job now
         (eager mode). -> {1, token, fields} or {0}.
MOVE     KEYS[8] job. ARGV[3] id, [4] move, [5] lease token ("" = none held), [6] delay (s)
         for a move to READY, [7] lease (s) for a claim, [8] worker id, [9...] field, value
         pairs to set. -> {1, fields[, token]}; {-1} no such job; {-2, state} illegal move;
         {-3, state} stale token (ignored and counted in ``stale_acks``).
ACK      ARGV[3...] per job: id, move (succeed or fail), lease token, n, then n field, value
         pairs to set: settle the jobs a worker finished, in one call. -> a flat list, two
         items per job: 1, "" done; -1, "" no such job; -2, state illegal move; -3, state
         stale token (ignored and counted in ``stale_acks``).
CANCEL   KEYS[8] job. ARGV[3] id. A READY job is CANCELLED now; a RUNNING one gets
         ``cancel=1`` (its worker's heartbeat sees it). -> {1, fields} or {-1}.
RENEW    KEYS[1] leases, [2] stats. ARGV[2] B, [3] lease (s), then id, token pairs: push each
         lease held with that token forward. -> {ids to cancel, ids whose lease is gone}.
PROGRESS KEYS[1] job. ARGV[1] JSON: set the progress of a job that still exists.
"""

from __future__ import annotations

import hashlib
from typing import Final

from headrace.tasks.states import FINISHED, MOVES

from .layout import HISTOGRAM_BOUNDS, READ_FIELDS

__all__ = [
    "ACK",
    "CANCEL",
    "CLAIM",
    "CLAIM_ONE",
    "ENQUEUE",
    "MOVE",
    "PROGRESS",
    "RENEW",
    "SCRIPTS",
    "Script",
]


class Script:
    """A script's source and its SHA-1 (what ``EVALSHA`` names it by)."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


def _lua_moves() -> str:
    by_state: dict[str, list[str]] = {}
    for (state, move), target in MOVES.items():
        by_state.setdefault(state.value, []).append(f"{move.value}='{target.value}'")
    rows = ", ".join(f"{state}={{{', '.join(moves)}}}" for state, moves in by_state.items())
    finished = ", ".join(f"{state.value}=true" for state in sorted(FINISHED, key=str))
    buckets = ", ".join(repr(bound) for bound in HISTOGRAM_BOUNDS)
    read = ", ".join(f"'{name}'" for name in READ_FIELDS)
    index = ", ".join(f"{name}={i}" for i, name in enumerate(READ_FIELDS, 1))
    return (
        f"local MOVES = {{{rows}}}\nlocal FINISHED = {{{finished}}}\n"
        f"local BUCKETS = {{{buckets}}}\nlocal READ = {{{read}}}\nlocal R = {{{index}}}\n"
    )


_PRELUDE: Final = (
    _lua_moves()
    + r"""
local fmt_x, fmt_s  -- the last number formatted: a batch formats the same ``now`` often
local function fmt(x)
  if x ~= fmt_x then fmt_x, fmt_s = x, string.format('%.17g', x) end
  return fmt_s
end
local function clock(given)
  if given ~= '' then return tonumber(given) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local B = ARGV[2]
local K_READY, K_DELAYED, K_LEASES, K_WAKE, K_STATS, K_DEAD, K_DONE =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
-- Counter increments are tallied while a script runs and written once at its end (one
-- HINCRBY per counter, however many jobs a batch moved): see flush().
local TALLY, TALLY_FLOAT = {}, {}
local function bump(key, field, by)
  local fields = TALLY[key]
  if not fields then fields = {} TALLY[key] = fields end
  fields[field] = (fields[field] or 0) + by
end
local function bump_float(key, field, by)
  local fields = TALLY_FLOAT[key]
  if not fields then fields = {} TALLY_FLOAT[key] = fields end
  fields[field] = (fields[field] or 0) + by
end
local function flush()
  for key, fields in pairs(TALLY) do
    for field, by in pairs(fields) do redis.call('HINCRBY', key, field, by) end
  end
  for key, fields in pairs(TALLY_FLOAT) do
    for field, by in pairs(fields) do redis.call('HINCRBYFLOAT', key, field, fmt(by)) end
  end
  TALLY, TALLY_FLOAT = {}, {}
end
-- Per-task counters and histograms (what the dashboard and /metrics read, see .counting).
-- ``task`` is the job's task path when the caller read it already (else it is looked up).
local function task_of(job, task)
  if task then return task end
  task = redis.call('HGET', job, 'task')
  if task then return task end
  local ok, spec = pcall(cjson.decode, redis.call('HGET', job, 'spec') or '')
  if ok and type(spec) == 'table' and type(spec.task_path) == 'string' then
    return spec.task_path
  end
  return '?'
end
local K_COUNTS, K_HIST = B .. 'counts', B .. 'hist'
local FIELDS = {}  -- name -> task -> '<name>|<task>', made once per script call
local function field_of(name, task)
  local by_task = FIELDS[name]
  if not by_task then by_task = {} FIELDS[name] = by_task end
  local found = by_task[task]
  if not found then found = name .. '|' .. task by_task[task] = found end
  return found
end
local function count(task, name)
  bump(K_COUNTS, field_of(name, task), 1)
end
local function observe(task, name, seconds)
  if seconds < 0 then seconds = 0 end
  local index = #BUCKETS
  for i, bound in ipairs(BUCKETS) do
    if seconds <= bound then index = i - 1 break end
  end
  local field = field_of(name, task)
  bump(K_HIST, field_of(field, index), 1)
  bump_float(K_HIST, field_of(field, 'sum'), seconds)
end
local function add_error(job, path, text)
  local e = cjson.encode({exception_class_path=path, traceback=text})
  local errors = redis.call('HGET', job, 'errors')
  if not errors or errors == '[]' or errors == '' then errors = '[' .. e .. ']'
  else errors = string.sub(errors, 1, -2) .. ',' .. e .. ']' end
  redis.call('HSET', job, 'errors', errors)
end
local function schedule(job, id, now, due)
  redis.call('ZREM', K_LEASES, id)
  local wake = true
  if due > now then
    -- Idle workers already wait for an earlier due job: no need to wake them for this one.
    local first = redis.call('ZRANGE', K_DELAYED, 0, 0, 'WITHSCORES')
    if #first > 0 and tonumber(first[2]) <= due then wake = false end
    redis.call('ZADD', K_DELAYED, due, id)
  else
    local seq = redis.call('HINCRBY', K_STATS, 'seq', 1)
    local prio = tonumber(redis.call('HGET', job, 'prio'))
    redis.call('ZADD', K_READY, (100 - prio) * 17592186044416 + seq, id)
  end
  redis.call('HSET', job, 'state', 'READY', 'due', fmt(due), 'token', '')
  if wake then
    redis.call('LPUSH', K_WAKE, '1')
    redis.call('LTRIM', K_WAKE, 0, 99)
  end
end
-- Finish a job. ``f``: its FINISHING fields if the caller read them; ``later``: tables
-- ``unlease`` and ``done`` to which a batch's ZREM and ZADD are left (written together).
local FINISHING = {'state', 'kkey', 'ttl', 'last', 'task'}
local function finish(job, id, state, now, dead, f, later)
  f = f or redis.call('HMGET', job, unpack(FINISHING))
  local was, kkey, task = f[1], f[2], task_of(job, f[5])
  -- A RUNNING job is in the leases only; any other in ready or delayed.
  if was == 'RUNNING' then
    if later then later.unlease[#later.unlease + 1] = id
    else redis.call('ZREM', K_LEASES, id) end
  else
    redis.call('ZREM', K_READY, id)
    redis.call('ZREM', K_DELAYED, id)
    redis.call('ZREM', K_LEASES, id)
  end
  if kkey and kkey ~= '' and redis.call('GET', kkey) == id then redis.call('DEL', kkey) end
  if dead then
    redis.call('HSET', job, 'state', state, 'finished', fmt(now), 'token', '')
    redis.call('ZADD', K_DEAD, now, id)
    bump(K_STATS, 'dead', 1)
    redis.call('HDEL', job, 'rexp')
    redis.call('PERSIST', job)
  else
    local ttl = tonumber(f[3] or '86400') or 86400
    redis.call('HSET', job, 'state', state, 'finished', fmt(now), 'token', '',
      'rexp', fmt(now + ttl))
    if later then
      later.done[#later.done + 1] = now + ttl
      later.done[#later.done + 1] = id
    else redis.call('ZADD', K_DONE, now + ttl, id) end
    redis.call('PEXPIRE', job, math.max(1, math.ceil(ttl * 1000)))
  end
  bump(K_STATS, string.lower(state), 1)
  if state == 'SUCCESSFUL' then count(task, 'succeeded')
  else count(task, string.lower(state)) end
  if dead then count(task, 'dead') end
  local last = tonumber(f[4] or '')
  if was == 'RUNNING' and last then observe(task, 'runtime', now - last) end
end
-- Make a READY job RUNNING under a new lease, given its fields ``workers``, ``back``,
-- ``due``, ``task`` (read by the caller); its worker ids after. The lease's ZADD is the
-- caller's.
local function claimed(job, now, worker, token, workers, back, due, task)
  if workers and workers ~= '' then workers = workers .. '\n' .. worker else workers = worker end
  task = task_of(job, task)
  if back == '1' then
    count(task, 'redelivered')
    redis.call('HSET', job, 'state', 'RUNNING', 'started', fmt(now), 'last', fmt(now),
      'token', token, 'workers', workers, 'back', '0')
  else
    redis.call('HSET', job, 'state', 'RUNNING', 'started', fmt(now), 'last', fmt(now),
      'token', token, 'workers', workers)
  end
  bump(K_STATS, 'claimed', 1)
  count(task, 'started')
  observe(task, 'queue_wait', now - (tonumber(due or '') or now))
  return workers
end
-- Claim one READY job (out of ready or delayed): a token and a lease of its own.
local function claim_one(job, id, now, worker, lease)
  local token = redis.call('HINCRBY', K_STATS, 'token', 1)
  redis.call('ZREM', K_READY, id)
  redis.call('ZREM', K_DELAYED, id)
  local f = redis.call('HMGET', job, 'workers', 'back', 'due', 'task')
  claimed(job, now, worker, token, f[1], f[2], f[3], f[4])
  redis.call('ZADD', K_LEASES, now + lease, id)
  return token
end
"""
)


def _moving(name: str, body: str) -> Script:
    """A script that moves jobs: the prelude, then ``body`` (whose ``return`` ends it) run
    as a function, then the counters it tallied written (``flush``)."""
    return Script(
        name,
        f"{_PRELUDE}local function main()\n{body}\nend\nlocal reply = main()\nflush()\n"
        "return reply\n",
    )


ENQUEUE: Final = _moving(
    "enqueue",
    r"""
local now = clock(ARGV[1])
local id = ARGV[3]
local job = KEYS[8]
if ARGV[10] ~= '' then  -- a schedule's slot: fire it only if later than the last fired
  local last = tonumber(redis.call('HGET', KEYS[10], ARGV[10]) or '')
  if last and tonumber(ARGV[11]) <= last then return {0, id} end
  redis.call('HSET', KEYS[10], ARGV[10], ARGV[11])
end
if redis.call('EXISTS', job) == 1 then return {0, id} end
if ARGV[8] == '1' then
  local live = redis.call('GET', KEYS[9])
  if live then
    local state = redis.call('HGET', B .. 'job:' .. live, 'state')
    if state and not FINISHED[state] then return {0, live} end
  end
  redis.call('SET', KEYS[9], id)
  redis.call('HSET', job, 'kkey', KEYS[9])
end
redis.call('HSET', job, 'id', id, 'spec', ARGV[4], 'enq', fmt(now), 'prio', ARGV[5], 'retries', '0',
  'deliv', '0', 'errors', '[]', 'workers', '', 'cancel', '0', 'ttl', ARGV[9], 'task', ARGV[12])
if ARGV[7] ~= '' then redis.call('HSET', job, 'exp', fmt(now + tonumber(ARGV[7]))) end
schedule(job, id, now, now + tonumber(ARGV[6]))
bump(K_STATS, 'enqueued', 1)
count(ARGV[12], 'enqueued')
return {1, id, fmt(now)}
""",
)

CLAIM: Final = _moving(
    "claim",
    r"""
local now = clock(ARGV[1])
local worker, lease, max_deliveries = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local expired, taken = {}, {}  -- expired: jobs this call finished (expired or dead-lettered)
-- Leases that lapsed: their worker is gone.
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K_LEASES, '-inf', now, 'LIMIT', 0, 100)) do
  redis.call('ZREM', K_LEASES, id)
  local job = B .. 'job:' .. id
  if redis.call('HGET', job, 'state') == 'RUNNING' then
    local deliveries = redis.call('HINCRBY', job, 'deliv', 1)
    local workers = redis.call('HGET', job, 'workers') or ''
    local last = string.match(workers, '([^\n]*)$') or ''
    add_error(job, 'headrace.tasks.exceptions.WorkerLost',
      'headrace.tasks.exceptions.WorkerLost: worker ' .. last .. ' stopped renewing its ' ..
      'lease (delivery ' .. deliveries .. ' of at most ' .. max_deliveries .. ')\n')
    bump(K_STATS, 'lost', 1)
    redis.call('HSET', job, 'back', '1')
    if deliveries >= max_deliveries then
      finish(job, id, MOVES.RUNNING.fail, now, true)
      expired[#expired + 1] = id
    else
      schedule(job, id, now, now)
    end
  end
end
-- Delayed jobs now due.
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K_DELAYED, '-inf', now, 'LIMIT', 0, 1000)) do
  redis.call('ZREM', K_DELAYED, id)
  local job = B .. 'job:' .. id
  local seq = redis.call('HINCRBY', K_STATS, 'seq', 1)
  local prio = tonumber(redis.call('HGET', job, 'prio') or '0')
  redis.call('ZADD', K_READY, (100 - prio) * 17592186044416 + seq, id)
end
-- The best ready jobs, as many as asked: popped together, their tokens drawn together, their
-- leases written together.
local wanted = tonumber(ARGV[6] or '1') or 1
local leases = {}
while #taken < 2 * wanted do
  local top = redis.call('ZPOPMIN', K_READY, wanted - #taken / 2)
  if #top == 0 then break end
  local token = redis.call('HINCRBY', K_STATS, 'token', #top / 2) - #top / 2
  for p = 1, #top, 2 do
    token = token + 1
    local id = top[p]
    local job = B .. 'job:' .. id
    local f = redis.call('HMGET', job, 'back', 'task', unpack(READ))
    local v = {unpack(f, 3)}  -- its READ values, returned as they are once claimed
    if v[R.state] == 'READY' then
      local exp = tonumber(v[R.exp] or '')
      if exp and exp <= now then
        add_error(job, 'headrace.tasks.exceptions.TaskExpired',
          'headrace.tasks.exceptions.TaskExpired: expired before a worker took it\n')
        finish(job, id, MOVES.READY.expire, now, false)
        bump(K_STATS, 'expired', 1)
        expired[#expired + 1] = id
      else
        v[R.workers] = claimed(job, now, worker, token, v[R.workers], f[1], v[R.due], f[2])
        v[R.state], v[R.started], v[R.last] = 'RUNNING', fmt(now), fmt(now)
        leases[#leases + 1] = now + lease
        leases[#leases + 1] = id
        taken[#taken + 1] = tostring(token)
        taken[#taken + 1] = v
      end
    end
  end
end
for i = 1, #leases, 400 do
  redis.call('ZADD', K_LEASES, unpack(leases, i, math.min(i + 399, #leases)))
end
if redis.call('ZCARD', K_READY) == 0 then redis.call('DEL', K_WAKE) end
if #taken > 0 then return {1, taken, expired} end
local wait = ''
local first = redis.call('ZRANGE', K_DELAYED, 0, 0, 'WITHSCORES')
if #first > 0 then wait = tonumber(first[2]) - now end
local lapse = redis.call('ZRANGE', K_LEASES, 0, 0, 'WITHSCORES')
if #lapse > 0 then
  local until_lapse = tonumber(lapse[2]) - now
  if wait == '' or until_lapse < wait then wait = until_lapse end
end
if wait ~= '' then wait = fmt(math.max(wait, 0)) end
return {0, wait, expired}
""",
)

CLAIM_ONE: Final = _moving(
    "claim_one",
    r"""
local now = clock(ARGV[1])
local job = KEYS[8]
if redis.call('HGET', job, 'state') ~= 'READY' then return {0} end
local token = claim_one(job, ARGV[3], now, ARGV[4], tonumber(ARGV[5]))
return {1, tostring(token), redis.call('HGETALL', job)}
""",
)

MOVE: Final = _moving(
    "move",
    r"""
local now = clock(ARGV[1])
local id, move, token = ARGV[3], ARGV[4], ARGV[5]
local job = KEYS[8]
local state = redis.call('HGET', job, 'state')
if not state then return {-1} end
if token ~= '' and redis.call('HGET', job, 'token') ~= token then
  bump(K_STATS, 'stale_acks', 1)
  return {-3, state}
end
local target = (MOVES[state] or {})[move]
if not target then return {-2, state} end
if #ARGV >= 9 then redis.call('HSET', job, unpack(ARGV, 9)) end
if target == 'READY' then
  schedule(job, id, now, now + tonumber(ARGV[6]))
  if move == 'lose' then
    bump(K_STATS, 'returned', 1)
    redis.call('HSET', job, 'back', '1')
  else
    bump(K_STATS, 'retried', 1)
    local task = task_of(job)
    count(task, 'retried')
    local last = tonumber(redis.call('HGET', job, 'last') or '')
    if last then observe(task, 'runtime', now - last) end
  end
elseif target == 'RUNNING' then
  local new = claim_one(job, id, now, ARGV[8], tonumber(ARGV[7]))
  return {1, redis.call('HGETALL', job), tostring(new)}
else
  if move == 'cancel' then redis.call('HSET', job, 'cancel', '1') end
  finish(job, id, target, now, false)
end
return {1, redis.call('HGETALL', job)}
""",
)

ACK: Final = _moving(
    "ack",
    r"""
local now = clock(ARGV[1])
local codes = {}
local later = {unlease = {}, done = {}}
local i = 3
while i <= #ARGV do
  local id, move, token, n = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local first, last = i + 4, i + 3 + 2 * n
  i = last + 1
  local job = B .. 'job:' .. id
  local f = redis.call('HMGET', job, 'token', unpack(FINISHING))
  local state = f[2]
  if not state then
    codes[#codes + 1] = -1
    codes[#codes + 1] = ''
  elseif token ~= '' and f[1] ~= token then
    bump(K_STATS, 'stale_acks', 1)
    codes[#codes + 1] = -3
    codes[#codes + 1] = state
  else
    local target = (MOVES[state] or {})[move]
    if not target or not FINISHED[target] then
      codes[#codes + 1] = -2
      codes[#codes + 1] = state
    else
      local read = {unpack(f, 2)}
      if n > 0 then
        redis.call('HSET', job, unpack(ARGV, first, last))
        for p = first, last, 2 do  -- a field FINISHING read that the ack changes
          if ARGV[p] == 'last' then read[4] = ARGV[p + 1] end
        end
      end
      finish(job, id, target, now, false, read, later)
      codes[#codes + 1] = 1
      codes[#codes + 1] = ''
    end
  end
end
for p = 1, #later.unlease, 400 do
  redis.call('ZREM', K_LEASES, unpack(later.unlease, p, math.min(p + 399, #later.unlease)))
end
for p = 1, #later.done, 400 do
  redis.call('ZADD', K_DONE, unpack(later.done, p, math.min(p + 399, #later.done)))
end
return codes
""",
)

CANCEL: Final = _moving(
    "cancel",
    r"""
local now = clock(ARGV[1])
local id = ARGV[3]
local job = KEYS[8]
local state = redis.call('HGET', job, 'state')
if not state then return {-1} end
if state == 'READY' then
  redis.call('HSET', job, 'cancel', '1')
  add_error(job, 'headrace.tasks.exceptions.TaskCancelled',
    'headrace.tasks.exceptions.TaskCancelled: cancelled before it started\n')
  finish(job, id, MOVES.READY.cancel, now, false)
elseif state == 'RUNNING' then
  redis.call('HSET', job, 'cancel', '1')
end
return {1, redis.call('HGETALL', job)}
""",
)

RENEW: Final = Script(
    "renew",
    r"""
local now = tonumber(ARGV[1])
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local B, lease = ARGV[2], tonumber(ARGV[3])
local cancel, gone = {}, {}
for i = 4, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local job = B .. 'job:' .. id
  local found = redis.call('HMGET', job, 'state', 'token', 'cancel')
  if found[1] == 'RUNNING' and found[2] == token then
    redis.call('ZADD', KEYS[1], now + lease, id)
    if found[3] == '1' then cancel[#cancel + 1] = id end
  else
    gone[#gone + 1] = id
  end
end
redis.call('HINCRBY', KEYS[2], 'renewals', 1)
return {cancel, gone}
""",
)

PROGRESS: Final = Script(
    "progress",
    r"""
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'progress', ARGV[1]) end
return 0
""",
)

SCRIPTS: Final = (ENQUEUE, CLAIM, CLAIM_ONE, MOVE, ACK, CANCEL, RENEW, PROGRESS)
