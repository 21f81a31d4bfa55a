package ledger

import "github.com/redis/go-redis/v9"

// The scripts share one prelude. Keys are always, in this order, the
// rollout's def, orgs and counts keys (one hash tag, one cluster slot).
// Clock readings come in ARGV rather than from TIME so that a script's
// effects are deterministic and the caller's clock is the only clock.
//
// Counters are never incremented by hand: every write goes through move,
// which diffs what the old and the new record contribute (contrib), so the
// counters stay a pure function of the records whatever the interleaving.
//
// Return codes below zero are errors mapped in Go: -1 rollout not found,
// -2 organisation not found, -3 rollout definition mismatch.
const prelude = `
local function str(v)
  if type(v) == 'string' and v ~= '' then return v end
  return nil
end

local function contrib(r)
  local t = {}
  if r == nil then return t end
  local s = str(r.s)
  if s == nil then return t end
  t[s] = true
  local c = str(r.c)
  if s == 'pending' then
    if (tonumber(r.a) or 0) > 0 then
      t['retrying'] = true
      if c then t['retry:' .. c] = true end
    end
  elseif s == 'succeeded' or s == 'failed' then
    if c then t['class:' .. c] = true end
    local v = str(r.v)
    if s == 'succeeded' and v then t['version:' .. v] = true end
  end
  return t
end

local function move(key, old, new)
  local o, n = contrib(old), contrib(new)
  for k in pairs(o) do
    if not n[k] then redis.call('HINCRBY', key, k, -1) end
  end
  for k in pairs(n) do
    if not o[k] then redis.call('HINCRBY', key, k, 1) end
  end
end

local function setstr(r, k, v)
  if v == '' then r[k] = nil else r[k] = v end
end

local function setnum(r, k, v)
  local n = tonumber(v)
  if n == nil or n == 0 then r[k] = nil else r[k] = n end
end
`

// createScript stores the definition unless one exists.
// ARGV: id, connector_id, version, created_at_ms, queue ("" for unknown).
// Returns {1, created} when stored, {0, created} when an identical one
// existed, {-3, created} when one with another connector or version did,
// {-4, created} when one on another queue did. A definition without a
// queue gets the one given.
var createScript = redis.NewScript(`
local cur = redis.call('HMGET', KEYS[1], 'connector_id', 'version', 'created_at_ms', 'queue')
if cur[1] then
  if cur[1] ~= ARGV[2] or cur[2] ~= ARGV[3] then return {-3, cur[3]} end
  if ARGV[5] ~= '' then
    if cur[4] and cur[4] ~= ARGV[5] then return {-4, cur[3]} end
    if not cur[4] then redis.call('HSET', KEYS[1], 'queue', ARGV[5]) end
  end
  return {0, cur[3]}
end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'connector_id', ARGV[2], 'version', ARGV[3], 'created_at_ms', ARGV[4])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'queue', ARGV[5]) end
redis.call('HSETNX', KEYS[3], 'total', 0)
return {1, ARGV[4]}
`)

// addScript adds pending records for organisations not yet in the rollout.
// ARGV: pending record JSON, organisation IDs...
// Returns how many were added.
var addScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local n = 0
for i = 2, #ARGV do
  n = n + redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[1])
end
if n > 0 then
  redis.call('HINCRBY', KEYS[3], 'total', n)
  redis.call('HINCRBY', KEYS[3], 'pending', n)
end
return n
`)

// attemptScript records a call that did not finish a pending organisation.
// ARGV: org, class, http_status, error, duration_us, now_ms.
// Returns 1 when recorded, 0 when the record is no longer pending.
var attemptScript = redis.NewScript(prelude + `
local raw = redis.call('HGET', KEYS[2], ARGV[1])
if not raw then
  if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
  return -2
end
local old = cjson.decode(raw)
if old.s ~= 'pending' then return 0 end
local r = cjson.decode(raw)
r.a = (tonumber(old.a) or 0) + 1
setstr(r, 'c', ARGV[2])
setnum(r, 'h', ARGV[3])
setstr(r, 'e', ARGV[4])
setnum(r, 'd', ARGV[5])
setnum(r, 'u', ARGV[6])
redis.call('HSET', KEYS[2], ARGV[1], cjson.encode(r))
move(KEYS[3], old, r)
return 1
`)

// finishFields is how many ARGV entries finishScript takes per organisation.
const finishFields = 9

// finishScript moves organisations of one rollout to succeeded or failed:
// one call per batch of the handlers' outcomes (see Batcher), one for
// Finish. It reads every record with one HMGET and writes them with one
// HSET, and moves the counters with one HMGET and one HSET, instead of a
// read, a write and an HINCRBY per counter for each organisation: the
// commands inside a script cost Redis as much as those sent to it (figure
// 2 of BENCHMARKS.md counts both).
// ARGV: now_ms, then per organisation: org, state, class, http_status,
// error, connector_id, version, duration_us, count_attempt (0|1).
// Returns {pending, code...}: the rollout's pending count after the batch,
// then per organisation 1 when its record changed, 0 when it did not, -2
// when it is not in the rollout; -1 alone for an unknown rollout. An
// organisation listed twice is applied in order, the second seeing the
// first's write.
var finishScript = redis.NewScript(prelude + `
local now = ARGV[1]
local n = (#ARGV - 1) / 9
local ids = {}
for i = 1, n do ids[i] = ARGV[2 + (i - 1) * 9] end
local raws = redis.call('HMGET', KEYS[2], unpack(ids))
local out = {0}
local cur, order = {}, {}
local delta = {}
local changed = false
for i = 1, n do
  local b = 1 + (i - 1) * 9
  local org = ARGV[b + 1]
  local raw = cur[org] or raws[i]
  local code = 0
  if not raw then
    if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
    code = -2
  else
    local old = cjson.decode(raw)
    local to, from = ARGV[b + 2], old.s
    if from == 'pending' or ((from == 'failed' or from == 'cancelled') and to == 'succeeded') then
      local r = {s = to, q = old.q} -- the position stays: reports de-duplicate by it
      local a = tonumber(old.a) or 0
      if ARGV[b + 9] == '1' then a = a + 1 end
      setnum(r, 'a', a)
      setstr(r, 'c', ARGV[b + 3])
      setnum(r, 'h', ARGV[b + 4])
      setstr(r, 'e', ARGV[b + 5])
      setstr(r, 'ci', ARGV[b + 6])
      setstr(r, 'v', ARGV[b + 7])
      setnum(r, 'd', ARGV[b + 8])
      -- u is left out: a finished record changed last when it finished
      -- (decodeRecord reads f), and 20 bytes less of each of a million
      -- records is 20 MB of Redis.
      setnum(r, 'f', now)
      if not cur[org] then order[#order + 1] = org end
      cur[org] = cjson.encode(r)
      local o, nw = contrib(old), contrib(r)
      for k in pairs(o) do if not nw[k] then delta[k] = (delta[k] or 0) - 1 end end
      for k in pairs(nw) do if not o[k] then delta[k] = (delta[k] or 0) + 1 end end
      changed = true
      code = 1
    end
  end
  out[i + 1] = code
end
local fields = {'pending'}
if changed then
  local hset = {}
  for _, org in ipairs(order) do
    hset[#hset + 1] = org
    hset[#hset + 1] = cur[org]
  end
  redis.call('HSET', KEYS[2], unpack(hset))
  fields[2], fields[3] = 'first_finish_ms', 'last_finish_ms'
  for k in pairs(delta) do
    if k ~= 'pending' then fields[#fields + 1] = k end
  end
end
local vals = redis.call('HMGET', KEYS[3], unpack(fields))
local pending = (tonumber(vals[1]) or 0) + (delta['pending'] or 0)
out[1] = pending
if changed then
  -- Workers' clocks differ: keep the extremes, not the latest writes.
  local t = tonumber(now)
  local set = {'pending', pending}
  if not tonumber(vals[2]) or t < tonumber(vals[2]) then set[#set + 1] = 'first_finish_ms'; set[#set + 1] = now end
  if not tonumber(vals[3]) or t > tonumber(vals[3]) then set[#set + 1] = 'last_finish_ms'; set[#set + 1] = now end
  for i = 4, #fields do
    set[#set + 1] = fields[i]
    set[#set + 1] = (tonumber(vals[i]) or 0) + delta[fields[i]]
  end
  redis.call('HSET', KEYS[3], unpack(set))
end
return out
`)

// transitionScript moves every listed organisation found in state ARGV[1]
// to state ARGV[2], keeping the rest of the record. finished_at is set when
// the target is not pending and cleared when it is.
// ARGV: from, to, now_ms, organisation IDs...
// Returns the IDs that moved (a list), or -1 for an unknown rollout. The
// move is atomic, so of two concurrent calls each ID moves in one only.
var transitionScript = redis.NewScript(prelude + `
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local from, to, now = ARGV[1], ARGV[2], ARGV[3]
local moved = {}
for i = 4, #ARGV do
  local raw = redis.call('HGET', KEYS[2], ARGV[i])
  if raw then
    local old = cjson.decode(raw)
    if old.s == from then
      local r = cjson.decode(raw)
      r.s = to
      if to == 'pending' then
        r.f = nil
        setnum(r, 'u', now)
      else
        setnum(r, 'f', now)
        r.u = nil
      end
      redis.call('HSET', KEYS[2], ARGV[i], cjson.encode(r))
      move(KEYS[3], old, r)
      moved[#moved + 1] = ARGV[i]
    end
  end
end
return moved
`)

// registerScript is addScript that also reports each organisation's state
// before the call ("" when new), in order. A record that does not decode
// fails the script, as it fails every other read. Given a fourth key, the
// rollout's backlog (Enlist), it also gives each new record its position
// (1-based, in list order, field q; counter seq) and appends it there.
// KEYS: def, orgs, counts[, backlog].
// ARGV: pending record JSON, organisation IDs...
var registerScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local backlog = KEYS[4]
local head, seq = nil, 0
if backlog then
  head = string.sub(ARGV[1], 1, -2)
  seq = tonumber(redis.call('HGET', KEYS[3], 'seq')) or 0
end
local out = {}
local n = 0
for i = 2, #ARGV do
  local raw = redis.call('HGET', KEYS[2], ARGV[i])
  if raw then
    local s = cjson.decode(raw).s
    if type(s) ~= 'string' or s == '' then return redis.error_reply('record of ' .. ARGV[i] .. ' has no state') end
    out[#out + 1] = s
  else
    if backlog then
      seq = seq + 1
      redis.call('HSET', KEYS[2], ARGV[i], head .. ',"q":' .. seq .. '}')
      redis.call('RPUSH', backlog, ARGV[i])
    else
      redis.call('HSET', KEYS[2], ARGV[i], ARGV[1])
    end
    n = n + 1
    out[#out + 1] = ''
  end
end
if n > 0 then
  redis.call('HINCRBY', KEYS[3], 'total', n)
  redis.call('HINCRBY', KEYS[3], 'pending', n)
  if backlog then redis.call('HSET', KEYS[3], 'seq', seq) end
end
return out
`)
