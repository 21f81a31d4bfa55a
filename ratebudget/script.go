package ratebudget

import "github.com/redis/go-redis/v9"

// The budget's state is one Redis hash (one key, so every script is safe on
// Redis Cluster) with two fields, both in microseconds of Redis server time:
//
//	tat   theoretical arrival time: the next free slot of the steady schedule
//	cool  end of the shared cool-down (absent or in the past: none)
//
// Times are read with redis.call('TIME') inside the scripts, so the clocks of
// the worker processes never enter the arithmetic: every process books on the
// same clock. Microseconds since the epoch (~1.7e15) are exact in a Lua
// double (2^53 ~ 9e15). Values are written with string.format('%.3f') because
// Lua's default number-to-string conversion keeps only 14 significant digits,
// which would round TAT to 10 µs and drift the schedule.
//
// The key expires one second after both fields lie in the past: a state whose
// TAT is past is the same as no state, so an idle budget leaves nothing behind.

// reserveScript books the next free slot, GCRA by virtual scheduling:
//
//	slot = max(now, TAT - tau),  tau = (burst-1) * interval
//	TAT' = max(TAT, now) + interval
//
// so a fresh budget grants burst slots at once and then one every interval.
// When the slot is more than max_wait away nothing is written: the caller is
// told the delay and no slot is held for it.
//
// ARGV: interval_us (may be fractional), burst, max_wait_us.
// Returns {booked (0|1), delay_us, in_cooldown (0|1)}.
var reserveScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tau = (tonumber(ARGV[2]) - 1) * interval
local max_wait = tonumber(ARGV[3])

local v = redis.call('HMGET', KEYS[1], 'tat', 'cool')
local tat = tonumber(v[1]) or now
local cool = tonumber(v[2]) or 0
if tat < now then tat = now end
local in_cool = 0
if cool > now then in_cool = 1 end

local slot = tat - tau
if slot < now then slot = now end
local delay = math.ceil(slot - now)
if delay > max_wait then
  return {0, delay, in_cool}
end

tat = tat + interval
redis.call('HSET', KEYS[1], 'tat', string.format('%.3f', tat))
redis.call('PEXPIRE', KEYS[1], math.ceil((math.max(tat, cool) - now) / 1000) + 1000)
return {1, delay, in_cool}
`)

// coolDownScript moves the booking clock forward for the whole fleet:
//
//	cool' = max(cool, now + d)
//	TAT'  = max(TAT, now + d + tau)
//
// Adding tau makes the first slot after the cool-down exactly now + d and
// spends the burst: an API that just answered 429 should not be met with a
// burst the moment it allows calls again.
//
// ARGV: interval_us, burst, d_us. Returns the cool-down remaining in µs.
var coolDownScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tau = (tonumber(ARGV[2]) - 1) * interval
local d = tonumber(ARGV[3])

local v = redis.call('HMGET', KEYS[1], 'tat', 'cool')
local tat = tonumber(v[1]) or now
local cool = tonumber(v[2]) or 0
local ends = now + d
if cool < ends then cool = ends end
if tat < ends + tau then tat = ends + tau end

redis.call('HSET', KEYS[1], 'tat', string.format('%.3f', tat), 'cool', string.format('%.3f', cool))
redis.call('PEXPIRE', KEYS[1], math.ceil((math.max(tat, cool) - now) / 1000) + 1000)
return math.ceil(cool - now)
`)

// coolDownRemainingScript returns the shared cool-down remaining in µs (0
// when none is in force). A script rather than HGET so that the answer is on
// the server's clock, in one round trip.
var coolDownRemainingScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cool = tonumber(redis.call('HGET', KEYS[1], 'cool')) or 0
if cool <= now then return 0 end
return math.ceil(cool - now)
`)
