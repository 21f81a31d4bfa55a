package ratebudget

import "github.com/redis/go-redis/v9"

// The budget's state is one Redis hash (one key, so every script is safe on
// Redis Cluster). Times are microseconds of Redis server time, rates calls
// per second:
//
//	tat   theoretical arrival time: the next free slot of the schedule
//	cool  end of the shared cool-down (absent or in the past: none)
//	ceil  the ceiling the last writer was configured with (for readers)
//
// the adaptive rate (see the package doc, "Adaptive rate"):
//
//	rate  the rate held since tp (0.95 of good after a decision)
//	good  W: the fleet's estimate of the API's limit (the rate at which
//	      429s last began), the ceiling while none was found
//	tp    end of the hold: from tp on the fleet probes just above good
//	fs    when the probe found the API accepting more than good: from fs
//	      on the rate grows fast (0: not past good)
//	tb    evidence from calls booked before the last decision is ignored until tb
//	w0, wok, wrl  the evidence window: its start, accepted calls, 429s
//	hf    until when the API's rate-limit headers hold the rate
//	arm, sc  whether a cut may follow the last one, and its 429 share
//	pf    probes in a row that found the limit where it was (the slow probe's
//	      step shrinks with it; the metrics' log)
//	hot   whether the last closed window had a cut_share of 429s
//	pw    the last decision was a failed slow probe (see the reaction window)
//	zr, zn  429s and answers seen while the rate was held below good, 3/4
//	      of them kept at each hold's end
//	cr, cn  the same at the ceiling (good at the ceiling, no probe), 3/4
//	      kept at each window's end
//	fc    the last decision was a cut from the ceiling
//
// and the circuit breaker (see "Circuit breaker"):
//
//	bs    0 closed, 1 open, 2 half-open
//	bu    end of the open interval
//	bi    the open interval in force
//	bo    when the breaker first opened, for the interval's growth
//	bn, bf, bt    current bucket of outcomes: count, failures, start
//	bn0, bf0, bt0 the previous bucket
//	pt    when the half-open breaker granted its probe (0: none yet)
//
// Times are read with redis.call('TIME') inside the scripts, so the clocks of
// the worker processes never enter the arithmetic: every process books on the
// same clock. Microseconds since the epoch (~1.7e15) are exact in a Lua
// double (2^53 ~ 9e15). Values are written with string.format('%.3f') because
// Lua's default number-to-string conversion keeps only 14 significant digits,
// which would round TAT to 10 µs and drift the schedule.

// rateAtLua defines rateAt, the adaptive rate in force at time t, and
// probeStepAfter, shared by the booking script and Inspect. After a
// decision the fleet holds rate (0.95 of good after a cut, 0.9 after a
// failed probe; good is W_max in
// CUBIC's terms: the rate at which the API began to refuse) until tp.
// Then it probes, in two stages, in the shape of CUBIC's window around
// W_max (flat near the last known limit, fast once clearly past it), each
// stage opened by the API's answers rather than by a clock alone:
//
//   - slow: from rate up to (1 + step) x good over approach, then flat.
//     A limit that did not move refuses the probe once the excess has
//     spent the API's burst: one 429, about a second in (the first 429
//     ends it, see the script), so a probe costs about one refused call.
//     The step halves with each probe in a row that found the limit
//     where it was (pf), down to a quarter (probeStep / 4): a limit that
//     lies between good and a full step above it, as an API without a
//     burst has it (good is where a probe was refused, a little short of
//     such a limit), refused every full-step probe at its top before it
//     could confirm, and the fleet stayed 10% under the limit for good
//     (TestAdaptiveAPIWithoutBurst: 7.9 accepted/s of 10, 8.7 now). A
//     smaller excess also spends an API's burst later, so steady probes
//     come less often (figure 7 rows 1-2 simulated: 4.7 -> 4.1% of calls
//     429), and after a fall of the limit the probes above it cost less.
//   - fast, from fs (set once the slow probe ran a confirm window at its
//     top with no 429 and the API accepted clearly more than good): the
//     limit has moved, so grow as a cubic of the time since,
//     good x (1 + ramp x s^3), clocked by the answers as TCP's slow start
//     is by its acknowledgements: never above 2.5 times what the API was
//     seen to accept (good is raised by every clean 250-ms window).
//
// Never below floor nor above ceil; a good at the ceiling has nothing to
// probe for.
const rateAtLua = `
-- probeStepAfter is the slow probe's step after pf probes in a row that
-- found the limit where it was: halved with each, down to a quarter.
local function probeStepAfter(step, pf)
  return step / 2 ^ math.min(pf, 2)
end

local function rateAt(t, tp, fs, rate, good, w0, wok, ceil, floor, ramp, step, approach)
  local r
  if t < tp then
    r = rate
  elseif good >= ceil then
    r = ceil
  elseif fs > 0 and t >= fs then
    local s = (t - fs) / 1000000
    local seen = good
    if w0 >= fs and t - w0 >= 250000 then seen = math.max(seen, wok * 1000000 / (t - w0)) end
    r = math.min(good * (1 + ramp * s * s * s), 2.5 * seen)
  else
    local top = (1 + step) * good
    r = rate + (top - rate) * math.min(1, (t - tp) / approach)
  end
  if r < floor then r = floor end
  if r > ceil then r = ceil end
  return r
end
`

// bookScript is the one script of the hot path. It folds the outcomes this
// process saw since its last call into the shared state (the adaptive rate's
// evidence and the breaker's buckets), then, in mode 1, books the next free
// slot, GCRA by virtual scheduling at the current rate r:
//
//	slot = max(now, TAT - tau),  tau = (burst-1) / r
//	TAT' = max(TAT, now) + 1/r
//
// so a fresh budget grants burst slots at once and then one every 1/r. The
// rate only ever spaces new bookings, and r never exceeds the ceiling, so no
// change of r can put more than ceiling + burst calls into one second. When
// the slot is more than max_wait away nothing is booked. Mode 0 only folds
// the outcomes in (a probe's answer, or failures that must not wait for the
// next booking).
//
// ARGV: see bookArgs in ratebudget.go.
// Returns {booked, delay_us, reason (0 budget, 1 cool-down, 2 breaker),
// rate_milli, breaker_state, probe, rate_event (0 none, 1 cut, 2 probe
// failed, 3 set by headers), breaker_transition (0 none, 1 opened,
// 2 half-opened, 3 closed, 4 re-opened), breaker_remaining_us, watch (1:
// the fleet is probing, so a 429 is sent at once), window_answers,
// window_failures (the closed breaker's window)}.
var bookScript = redis.NewScript(rateAtLua + `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local A = {}
for i = 1, #ARGV do A[i] = tonumber(ARGV[i]) end
local mode, ceil, burst, max_wait = A[1], A[2], A[3], A[4]
local adaptive, floor = A[5] == 1, A[6]
local d_ok, d_rl, d_fail, d_pok, d_pfail, ra = A[7], A[8], A[9], A[10], A[11], A[12]
local h_rate, h_rem, h_reset = A[13], A[14], A[15]
local brk, b_min, b_ratio, b_win, b_open, b_max, b_grow = A[16] == 1, A[17], A[18], A[19], A[20], A[21], A[22]
local max_cool, ttl = A[23], A[24]
local hold, react, win, ramp = A[25], A[26], A[27], A[28]
local cut_share, cut_min, probe_share, cluster_share, cluster_min = A[29], A[30], A[31], A[32], A[33]
local step, approach, confirm, h_derived = A[34], A[35], A[36], A[37] == 1

local names = {'tat','cool','rate','good','tp','tb','w0','wok','wrl','hf',
  'bs','bu','bi','bo','bn','bf','bt','bn0','bf0','bt0','pt','arm','sc','pf','hot','fs','pw','zr','zn','cr','cn','fc'}
local v = redis.call('HMGET', KEYS[1], unpack(names))
local tat0 = tonumber(v[1])
local tat = tat0 or now
local cool = tonumber(v[2]) or 0
local rate = tonumber(v[3]) or ceil
local good = tonumber(v[4]) or ceil
local tp = tonumber(v[5]) or 0
local tb = tonumber(v[6]) or 0
local w0 = tonumber(v[7]) or now
local wok = tonumber(v[8]) or 0
local wrl = tonumber(v[9]) or 0
local hf = tonumber(v[10]) or 0
local bs = tonumber(v[11]) or 0
local bu = tonumber(v[12]) or 0
local bi = tonumber(v[13]) or b_open
local bo = tonumber(v[14]) or 0
local bn = tonumber(v[15]) or 0
local bf = tonumber(v[16]) or 0
local bt = tonumber(v[17]) or 0
local bn0 = tonumber(v[18]) or 0
local bf0 = tonumber(v[19]) or 0
local bt0 = tonumber(v[20]) or 0
local pt = tonumber(v[21]) or 0
local arm = tonumber(v[22]) or 1
local sc = tonumber(v[23]) or 1
local pf = tonumber(v[24]) or 0
local hot = tonumber(v[25]) or 0
local fs = tonumber(v[26]) or 0
local pw = tonumber(v[27]) or 0
local zr = tonumber(v[28]) or 0
local zn = tonumber(v[29]) or 0
local cr = tonumber(v[30]) or 0
local cn = tonumber(v[31]) or 0
local fc = tonumber(v[32]) or 0

local function clamp(x, lo, hi)
  if x < lo then return lo end
  if x > hi then return hi end
  return x
end
-- A ceiling lowered by a new configuration applies at once.
rate = clamp(rate, floor, ceil)
good = clamp(good, floor, ceil)
if tat < now then tat = now end

local function cool_down(d)
  if d > max_cool then d = max_cool end
  local ends = now + d
  if cool < ends then cool = ends end
  local tau = (burst - 1) * 1000000 / ceil
  if tat < ends + tau then tat = ends + tau end
end

local function pstep() return probeStepAfter(step, pf) end

local function current()
  if not adaptive then return ceil end
  return rateAt(now, tp, fs, rate, good, w0, wok, ceil, floor, ramp, pstep(), approach)
end

-- The scatter: 429s the API gives at any rate, which say nothing about
-- the rate. 429s that come from a limit below the ceiling are most of
-- the answers at the ceiling and fall off below the limit; a scatter
-- keeps its share at any rate. So the share at the ceiling (cr/cn) and
-- the share in the holds below it (zr/zn) tell them apart: when the
-- ceiling's 429s are about what the holds' share would give there (two
-- standard deviations and one either way: the window that cut at the
-- ceiling is chosen for its 429s; fewer say the holds' 429s are new, a
-- limit that fell), the holds' share is the scatter's, and only 429s
-- beyond it (three standard deviations and one: the test is repeated at
-- every answer) are evidence of the rate. A share under cut_share is no
-- scatter: the cut rules already ignore it. Without this a 5-10% scatter
-- of random 429s refused every probe and cut every hold: a fleet sank
-- from 100 to 5 calls/s in a minute
-- (TestAdaptiveRandomScatterKeepsTheRate). The holds
-- alone cannot tell: just below a limit an API refuses some calls anyway
-- (a probe spent its burst and the calls' jitter meets it: 10% of a
-- hold's calls at 0.95 of a limit with a burst of 1, measured), and
-- learnt from them alone the "scatter" blinded the probes (18% of calls
-- 429 at a steady limit, against 7%).
local nz = 0
if zn >= 12 and cn >= 20 then
  local sh = zr / zn
  local e = sh * cn
  if sh >= cut_share and math.abs(cr - e) <= 2 * math.sqrt(e) + 1 then nz = math.min(0.5, sh) end
end
-- A scatter under cut_share is not learnt so, but it still refused a
-- slow probe at its first 429 and cut holds that met two early: once a
-- stray cut took a fleet off its ceiling, a 2% scatter held it below for
-- good (figure 7 row 4 at N=6,000: 1.45 x N/R, 3 cuts, 17 failed
-- probes; simulated, 5 minutes in 30 lost 6-37% of the rate). Where both
-- the ceiling and the holds have enough answers, the lower of their
-- shares is a floor no limit explains (a limit's 429s fall off below it,
-- and a fleet that met one at the ceiling holds clean below it), and only
-- 429s beyond it (three standard deviations) are evidence. A fleet that
-- never ran at its ceiling, or ran there clean, has no floor.
local nb = 0
if nz == 0 and cn >= 40 and zn >= 40 then nb = math.min(cr / cn, zr / zn) end
local function excess(rl, n)
  if nz == 0 then
    if nb == 0 then return rl end
    local e = nb * n
    return math.max(0, rl - e - 3 * math.sqrt(e))
  end
  local e = nz * n
  return math.max(0, rl - e - 3 * math.sqrt(e) - 1)
end
-- fold adds a window's 429s and answers to a pair of pooled counts,
-- keeping 3/4 of what they held.
local function fold(r, n, rl, dn)
  return 0.75 * r + rl, 0.75 * n + dn
end

local event = 0
if adaptive then
  local r = current()
  if h_rate > 0 then
    -- The API states its policy: obey it, and do not probe above it
    -- while it keeps saying so.
    local target = ceil
    if h_rate < ceil then target = math.max(floor, h_rate * 0.97) end
    if math.abs(target - r) > 0.01 * r then event = 3 end
    rate = target
    good = clamp(h_rate, floor, ceil)
    hf = now + 10000000
    tp = hf
    fs = 0
    r = rate
  end
  if now >= tp and w0 < tp then
    -- The probe has begun: its evidence is its own. The hold's joins
    -- the scatter's.
    if wok + wrl > 0 and excess(wrl, wok + wrl) < cut_share * (wok + wrl) then arm = 1 end
    if wok + wrl > 0 then zr, zn = fold(zr, zn, wrl, wok + wrl) end
    w0, wok, wrl = now, 0, 0
  end
  if now >= tb then
    -- A call that failed (5xx, timeout, reset) was not refused for the
    -- rate: it counts as accepted here (the breaker judges failures).
    -- Left out, every cut measured the rate the API accepted net of the
    -- failures: at 25% of them each cut took a quarter more off, and a
    -- probe never saw the API accept more than good.
    wok = wok + d_ok + d_fail
    wrl = wrl + d_rl
  else
    -- Answers to calls booked before the last decision say nothing of it:
    -- the window starts when they are in. Except one thing: a second 429
    -- from the calls a slow probe had booked when its first came back
    -- says the probe was far above the limit (at 15% above it the API's
    -- burst takes several calls to spend again), so good was too high.
    -- Only when armed (the hold before the probe was clean), as below.
    if pw == 1 and d_rl > 0 and arm == 1 and nz == 0 then
      good = clamp(0.95 * good, floor, ceil)
      rate = clamp(0.9 * good, floor, ceil)
      pw = 0
      arm = 0
    end
    w0 = now
  end
  local el = now - w0
  local n = wok + wrl
  local wx = excess(wrl, n)
  local held = now < tp
  local atCeil = good >= ceil and now >= tp
  local decided = false
  -- The fleet probes when it holds a limit below the ceiling and the hold
  -- is over (and no header states the rate).
  local probing = now >= tp and good < ceil and now >= hf
  -- A window closes after win with at least 40 answers in it, so that a
  -- share of a few percent means something at low rates too, or after ten
  -- windows anyway. A share under 4 x cut_share is judged only as a window
  -- closes, and under 2 x cut_share only on the second window in a row:
  -- judged on every answer, a 2% scatter of 429s crosses 5% somewhere in
  -- most windows.
  local closing = (el >= win and n >= 40) or el >= 10 * win
  if wx > 0 and now >= tb and now >= hf then
    local share = wx / n
    if probing and (fs == 0 or share >= probe_share) then
      -- A probe met a 429: the limit lies where it was found, and the
      -- fleet goes back to just below it. Counted on the first 429: the
      -- calls the API sees lag the rate by the slots booked ahead, so every
      -- answer waited for is another call above the limit.
      --
      -- Slow probe (fs == 0): the limit is below the rate the refused
      -- call was booked at, about a reaction window ago; if that was
      -- below good (the probe was refused while still approaching it, or
      -- at once), good was too high and comes down to it.
      -- Fast growth (fs > 0): the limit lies between the last clean
      -- window's rate (good) and now. good stays: what the API accepted in
      -- the short window that met the 429 includes its burst (measured at
      -- up to 1.2 x the limit), and the next probe starts from good anyway.
      local w = good
      if fs == 0 then
        local booked = rateAt(now - react, tp, 0, rate, good, w0, wok, ceil, floor, ramp, pstep(), approach)
        -- Only when armed (the hold before the probe was clean): a
        -- scatter of 429s refuses probes early too, and lowering good
        -- for each would sink the fleet to its floor.
        if booked < w and arm == 1 then
          w = booked
          arm = 0
        end
        pf = pf + 1
        pw = 1
      else
        pf = 0
      end
      -- Back to 0.9 of it, not 0.95: the probe spent the API's burst, and
      -- just below the limit it would refill so slowly that the jitter of
      -- the next seconds' calls met it empty (a 429 or two after every
      -- probe, measured).
      good = clamp(w, floor, ceil)
      rate = clamp(0.9 * good, floor, ceil)
      event = 2
      decided = true
      fc = 0
    elseif (el >= 50000 and n >= 4 and wx >= 3 and share >= cluster_share) or
        -- During a hold the rate is constant and meant to be below the
        -- limit: 429s at a tenth of the answers say the estimate is too
        -- high (the first cut measures a short window), unless they are
        -- a scatter, which keeps its share when the rate falls (sc).
        (now < tp and n >= 10 and wx >= 2 and share >= 2 * cut_share and (arm == 1 or share < 0.8 * sc)) or
        (wx >= cut_min and (arm == 1 or share < 0.8 * sc) and (
          (n >= 20 and share >= 4 * cut_share) or
          (closing and share >= cut_share and (hot == 1 or share >= 2 * cut_share)))) then
      -- 429s show the fleet is above the API's limit. While above it, the
      -- rate the API accepts is its limit: measure it and go just below.
      -- Two measures of it, the accepted calls per second and the share
      -- of the rate not refused; the lower is the safer.
      -- At the ceiling (nothing learned yet, or the limit was the
      -- ceiling) the API's bucket was full when the window began, so
      -- what it accepted includes its burst: at least one call, often
      -- most of a short window's (the first cut of a fleet at 50/s
      -- against 10/s, a burst of 2, read 2 accepted in 0.11 s: 18/s, and
      -- a second cut was needed 0.7-0.9 s later). Every bucket holds at
      -- least one call, so one less is the better reading (9.1/s there:
      -- a window shorter than the refills may read a little low, which
      -- the next probe corrects). It took the start of figure 7's rows
      -- 1-2 from 12-13 429s to 7 (simulated); later windows, longer and
      -- begun at an empty bucket, keep their count.
      local k = wok
      if atCeil and wok >= 2 then k = wok - 1 end
      local acc = math.min(k * 1000000 / math.max(el, 1), r * (1 - share))
      -- A window the API accepted nothing of measures nothing (four 429s
      -- in a row, which a 20% scatter makes now and then): cut to a
      -- fifth, never far below what was being accepted, not to the floor.
      if wok == 0 then acc = r / 5 end
      -- The hold after the first cut from the ceiling rests on that
      -- cut's short window, which may read the limit a little high; an
      -- API without a burst (a bucket of one call) met a little above
      -- its limit refuses every other call, so that hold (10.6/s against
      -- 10) read 5.3 accepted, and the fleet spent 15 s climbing back.
      -- Up to about that share this cut goes no lower than 0.7 of the
      -- hold (a lower limit is cut again in the next window); a larger
      -- share puts the limit under half the hold whatever the API's
      -- bucket. Only here: after a probe the same bound kept a fleet whose
      -- limit fell from 50 to 10 at 17/s, its 429s taken for a scatter.
      if fc == 1 and held and share < 2 / 3 then acc = math.max(acc, 0.7 * r) end
      good = clamp(acc, floor, ceil)
      rate = clamp(math.min(r, 0.95 * acc), floor, ceil)
      event = 1
      decided = true
      if atCeil then fc = 1 else fc = 0 end
      -- A second cut needs a window under cut_share first, or a share
      -- that fell with the rate (to under 0.8 of this one): 429s that stay
      -- at the same share below the cut do not come from the rate (a
      -- scatter of refusals), and cutting again would sink the fleet to
      -- its floor for nothing. A share of cluster_share always cuts.
      arm = 0
      sc = share
      pf = 0
      if share >= cluster_share and wx >= cluster_min then
        -- The API refuses most calls: the shared limit is spent.
        if ra <= 0 then ra = 1000000 end
        cool_down(ra)
      end
    end
    if decided then
      -- The next slot was spaced at the rate before the decision, and an
      -- API without a burst (a bucket of one call) refuses a call that
      -- comes sooner than its interval after the last: space it at the
      -- new rate. Without it every failed probe cost two 429s there (the
      -- second a call made after the decision), and 11% of all calls
      -- against 7% (simulated, 10/s; the bench 12.8%).
      if tat0 and rate < r then
        local nt = tat0 - 1000000 / r + 1000000 / rate
        if nt > tat then tat = nt end
      end
      if event ~= 2 or fs > 0 then pw = 0 end
      hot = 0
      fs = 0
      tp = now + hold
      tb = math.max(tat, now) + react
    end
  end
  if not decided and probing and fs == 0 then
    -- The slow probe keeps one window: once it has run confirm at its
    -- top without a 429 and the API accepted clearly more than good, the
    -- limit has risen: grow fast from what was accepted.
    if now - tp >= approach + confirm and n >= 8 then
      local acc = wok * 1000000 / el
      if acc >= (1 + pstep() / 2) * good then
        good = clamp(acc, floor, ceil)
        fs = now
        pf = 0
      end
      w0, wok, wrl = now, 0, 0
    end
  elseif not decided and probing then
    -- Growing fast: short windows (250 ms), each clean one raising good,
    -- which clocks the growth.
    if el >= 250000 and n >= 6 then
      local acc = wok * 1000000 / el
      if acc > good then good = clamp(acc, floor, ceil) end
      w0, wok, wrl = now, 0, 0
    end
  elseif decided or closing then
    if not decided then
      if n > 0 and wx >= cut_share * n then hot = 1 else hot = 0 end
      if n > 0 and wx < cut_share * n then arm = 1 end
    end
    -- A window of the hold joins the scatter, even one that cut: a
    -- scatter above the hold's own cut share would otherwise cut every
    -- hold and never be learned (15%, measured). One that cut in error
    -- (the limit lay below the hold) is forgotten in a few clean holds.
    if held and n > 0 and wrl < cluster_share * n then zr, zn = fold(zr, zn, wrl, n) end
    if atCeil and n > 0 then cr, cn = fold(cr, cn, wrl, n) end
    w0 = now
    wok = 0
    wrl = 0
  end
end
if h_rem == 0 and (h_rate <= 0 or h_derived) and h_reset > 1000000 then
  -- The window's calls are spent: nobody calls before it resets. A stated
  -- rate is obeyed instead (a limiter without a burst says remaining 0
  -- after every call), and so is a reset within the second, which says
  -- no more than the rate does. A rate derived from a quota over the
  -- longest reset seen may be too high until a window's start was seen:
  -- this pause is what then holds it.
  cool_down(h_reset)
end

local trans = 0
if brk then
  if bs == 1 and now >= bu then
    bs = 2
    pt = 0
    trans = 2
  end
  if bs == 0 then
    local dn = d_ok + d_rl + d_fail
    if dn > 0 then
      if bt > 0 and now - bt > b_win then bn, bf, bt = 0, 0, 0 end
      if bt == 0 then bt = now end
      bn = bn + dn
      bf = bf + d_fail
      local tn, tf = bn, bf
      if bt0 > 0 and now - bt0 <= b_win then
        tn = tn + bn0
        tf = tf + bf0
      end
      if tn >= b_min and tf >= b_ratio * tn then
        bs = 1
        bi = b_open
        bo = now
        bu = now + bi
        trans = 1
        bn, bf, bt, bn0, bf0, bt0 = 0, 0, 0, 0, 0, 0
      elseif bn * 2 >= b_min then
        bn0, bf0, bt0 = bn, bf, bt
        bn, bf, bt = 0, 0, 0
      end
    end
  end
  if bs ~= 0 and d_pok > 0 then
    bs = 0
    bi = b_open
    pt = 0
    trans = 3
    bn, bf, bt, bn0, bf0, bt0 = 0, 0, 0, 0, 0, 0
  elseif bs == 2 and d_pfail > 0 then
    if now - bo >= b_grow then bi = math.min(b_max, bi * 2) end
    bs = 1
    bu = now + bi
    pt = 0
    trans = 4
  end
end

local r = current()
local booked, delay, reason, probe = 0, 0, 0, 0
if cool > now then reason = 1 end
if mode == 1 then
  if brk and bs == 1 then
    delay, reason = math.ceil(bu - now), 2
  elseif brk and bs == 2 and pt > 0 and now - pt < bi then
    -- One probe at a time; a probe whose holder died lapses after bi.
    delay, reason = math.ceil(math.min(1000000, pt + bi - now)), 2
  else
    local interval = 1000000 / r
    -- Below the ceiling the burst shrinks with the rate (the same share of
    -- a second's calls): a burst sized for the ceiling, at a fifth of it,
    -- fired two calls together whenever the schedule had slack (after
    -- every decrease of the rate), and an API just refilling its own burst
    -- refused the second.
    local b = burst
    if r < ceil then b = math.max(1, math.floor(burst * r / ceil + 0.5)) end
    local slot = tat - (b - 1) * interval
    if slot < now then slot = now end
    -- The burst is spaced at the rate in force, which may be below the
    -- one the cool-down spent it at: never book inside a cool-down.
    if slot < cool then slot = cool end
    delay = math.ceil(slot - now)
    if delay <= max_wait then
      booked = 1
      tat = tat + interval
      if brk and bs == 2 then
        probe = 1
        pt = now
      end
    end
  end
end

local f = function(x) return string.format('%.3f', x) end
redis.call('HSET', KEYS[1], 'tat', f(tat), 'cool', f(cool), 'ceil', f(ceil),
  'rate', string.format('%.6f', rate), 'good', string.format('%.6f', good),
  'tp', f(tp), 'tb', f(tb), 'w0', f(w0), 'wok', wok, 'wrl', wrl, 'hf', f(hf),
  'bs', bs, 'bu', f(bu), 'bi', f(bi), 'bo', f(bo), 'bn', bn, 'bf', bf, 'bt', f(bt),
  'bn0', bn0, 'bf0', bf0, 'bt0', f(bt0), 'pt', f(pt), 'arm', arm, 'sc', string.format('%.4f', sc), 'pf', pf, 'hot', hot, 'fs', f(fs), 'pw', pw,
  'zr', string.format('%.3f', zr), 'zn', string.format('%.3f', zn),
  'cr', string.format('%.3f', cr), 'cn', string.format('%.3f', cn), 'fc', fc)
local keep = math.ceil((math.max(tat, cool, bu) - now) / 1000) + 1000
if ttl > keep then keep = ttl end
redis.call('PEXPIRE', KEYS[1], keep)
local left = 0
if bs ~= 0 and bu > now then left = math.ceil(bu - now) end
-- watch: the fleet probes above its estimate of the limit, so a 429
-- ends the probe and every call booked meanwhile is another above the
-- limit: the caller sends it at once.
local watch = 0
if adaptive and now >= tp and now >= hf and good < ceil then watch = 1 end
-- The breaker's window as it stands: answers and failures (for a
-- caller judging its own failure, FailureVerdict).
local wn, wf = 0, 0
if brk and bs == 0 then
  wn, wf = bn, bf
  if bt0 > 0 and now - bt0 <= b_win then
    wn = wn + bn0
    wf = wf + bf0
  end
end
return {booked, delay, reason, math.floor(r * 1000 + 0.5), bs, probe, event, trans, left, watch, wn, wf}
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
// ARGV: interval_us, burst, d_us, ttl_ms. Returns the cool-down remaining in µs.
var coolDownScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tau = (tonumber(ARGV[2]) - 1) * interval
local d = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])

local v = redis.call('HMGET', KEYS[1], 'tat', 'cool')
local tat = tonumber(v[1]) or now
local cool = tonumber(v[2]) or 0
local ends = now + d
if cool < ends then cool = ends end
if tat < ends + tau then tat = ends + tau end

redis.call('HSET', KEYS[1], 'tat', string.format('%.3f', tat), 'cool', string.format('%.3f', cool))
local keep = math.ceil((math.max(tat, cool) - now) / 1000) + 1000
if ttl > keep then keep = ttl end
redis.call('PEXPIRE', KEYS[1], keep)
return math.ceil(cool - now)
`)

// inspectScript reads the state as of now on the server's clock, without
// changing it. Returns {cool_remaining_us, rate_milli, ceil_milli,
// good_milli, breaker_state, breaker_remaining_us, hold_remaining_us};
// rate is the rate in force now (the probe evaluated), as bookScript would
// compute it for an adaptive budget. ARGV: ramp, step, approach_us.
var inspectScript = redis.NewScript(rateAtLua + `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local ramp, step, approach = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local v = redis.call('HMGET', KEYS[1], 'cool', 'ceil', 'rate', 'good', 'tp', 'bs', 'bu', 'w0', 'wok', 'fs', 'pf')
local cool = tonumber(v[1]) or 0
local ceil = tonumber(v[2]) or 0
local rate = tonumber(v[3]) or ceil
local good = tonumber(v[4]) or ceil
local tp = tonumber(v[5]) or 0
local bs = tonumber(v[6]) or 0
local bu = tonumber(v[7]) or 0
local r = rate
if ceil > 0 then
  r = rateAt(now, tp, tonumber(v[10]) or 0, rate, good, tonumber(v[8]) or now, tonumber(v[9]) or 0, ceil, 0, ramp,
    probeStepAfter(step, tonumber(v[11]) or 0), approach)
end
if bs == 1 and bu <= now then bs = 2 end
local left, hold, c = 0, 0, 0
if bs ~= 0 and bu > now then left = math.ceil(bu - now) end
if tp > now then hold = math.ceil(tp - now) end
if cool > now then c = math.ceil(cool - now) end
return {c, math.floor(r * 1000 + 0.5), math.floor(ceil * 1000 + 0.5), math.floor(good * 1000 + 0.5), bs, left, hold}
`)

// clearScript ends a cool-down and, when asked, closes the breaker: an
// operator's way out of a pause the API no longer warrants. The schedule
// starts afresh from now. ARGV: close_breaker (0|1). Returns the cool-down
// that was left, in µs.
var clearScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local v = redis.call('HMGET', KEYS[1], 'cool', 'tat')
local cool = tonumber(v[1]) or 0
local left = 0
if cool > now then left = math.ceil(cool - now) end
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'cool', '0', 'tat', string.format('%.3f', now))
  if tonumber(ARGV[1]) == 1 then
    redis.call('HSET', KEYS[1], 'bs', '0', 'bu', '0', 'pt', '0', 'bn', '0', 'bf', '0', 'bn0', '0', 'bf0', '0')
  end
end
return left
`)
