package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// A rollout created through a Manager is released from its backlog (see
// ledger.Enlist) by the fleet's Releaser rather than enqueued whole: wave
// by wave, and interleaved with other rollouts by weight. Its Plan and its
// progress live in one hash in the rollout's cluster slot.

// Release states of a rollout (Status.State). Done is derived from the
// counters, the others are stored.
const (
	StateRunning   = "running"
	StateBaking    = "baking"
	StateHalted    = "halted"
	StateDone      = "done"
	StateCancelled = "cancelled"
)

// Plan is how a rollout is released.
type Plan struct {
	// Bounds are the cumulative sizes of every wave but the last, which is
	// the rest of the list (organisations added by a re-run included).
	// Empty: one wave.
	Bounds []int
	// Waves is the list as given (display only), e.g. "10,10%,100%".
	Waves string
	// Bake is the wait after a wave has finished before the next.
	Bake time.Duration
	// MaxFailureRatio is the gate: a finished wave whose failed share of
	// finished organisations is above it halts the rollout.
	MaxFailureRatio float64
	// Weight is the rollout's share of the fleet's rate while other
	// rollouts have work.
	Weight float64
	// Gate, when set, is a PromQL gate measured after the bake, as JSON
	// (see package gate); empty means none.
	Gate string
}

// WaveCount is the number of waves.
func (p Plan) WaveCount() int { return len(p.Bounds) + 1 }

// limit is how many organisations may be released while wave (1-based)
// is the last released; -1 means all.
func (p Plan) limit(wave int) int64 {
	if wave <= len(p.Bounds) {
		return int64(p.Bounds[wave-1])
	}
	return -1
}

// Progress is where a rollout's release stands.
type Progress struct {
	Plan
	// State is running, baking, halted or cancelled (done is derived).
	State string
	// Wave is the last released wave, 1-based.
	Wave int
	// Released counts organisations handed to the queue.
	Released int64
	// Limit is how many may be released in the current wave; -1 all.
	Limit int64
	// FailedAtWave and FinishedAtWave are the rollout's failed and
	// finished counts when the current wave was released, so the wave's
	// own ratio is what it added since.
	FailedAtWave, FinishedAtWave int64
	// WaveAt is when the current wave was released; BakeUntil when its
	// bake ends (zero before it finished).
	WaveAt, BakeUntil time.Time
	// HaltReason says why a halted rollout halted.
	HaltReason string
	// GateRun is the PromQL gate's progress, as JSON (package gate).
	GateRun string
}

func (m *Manager) planKey(id string) string {
	return m.prefix() + ":rollout:{" + id + "}:release"
}

// activeKey is the fleet's set of rollouts with organisations to release,
// scored by their stride pass; touchKey counts each one's activations, so
// the releaser retires one only if nothing was enlisted meanwhile. Both
// share the queue's hash tag (one slot).
func (m *Manager) activeKey(queue string) string {
	return m.prefix() + ":release:{" + queue + "}:active"
}

func (m *Manager) touchKey(queue string) string {
	return m.prefix() + ":release:{" + queue + "}:touch"
}

// wavesKey is the set of rollouts with a wave decision ahead.
func (m *Manager) wavesKey(queue string) string {
	return m.prefix() + ":release:{" + queue + "}:waves"
}

func (m *Manager) leaseKey(queue string) string {
	return m.prefix() + ":release:{" + queue + "}:lease"
}

// savePlan stores p as rollout id's plan unless it has one: a re-run keeps
// the plan it was created with. held organisations count as released.
var savePlanScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'bounds', ARGV[1], 'waves', ARGV[2], 'bake_ms', ARGV[3], 'ratio', ARGV[4],
  'weight', ARGV[5], 'gate', ARGV[6], 'state', 'running', 'wave', 1, 'limit', ARGV[7], 'released', ARGV[9],
  'f0', 0, 'n0', 0, 'wave_at_ms', ARGV[8])
return 1
`)

func (m *Manager) savePlan(ctx context.Context, id string, p Plan, held int64) (bool, error) {
	bounds := make([]string, len(p.Bounds))
	for i, b := range p.Bounds {
		bounds[i] = strconv.Itoa(b)
	}
	n, err := savePlanScript.Run(ctx, m.rdb, []string{m.planKey(id)},
		strings.Join(bounds, ","), p.Waves, p.Bake.Milliseconds(), p.MaxFailureRatio, p.Weight, p.Gate,
		p.limit(1), m.opts.Now().UnixMilli(), held).Int()
	if err != nil {
		return false, fmt.Errorf("record release plan of rollout %s: %w", id, err)
	}
	return n == 1, nil
}

// errNoPlan: the rollout was enqueued whole (by tasks.Producer, or before
// plans existed).
var errNoPlan = errors.New("rollout has no release plan")

// Progress returns rollout id's release plan and progress; it wraps
// errNoPlan for a rollout enqueued whole.
func (m *Manager) Progress(ctx context.Context, id string) (Progress, error) {
	h, err := m.rdb.HGetAll(ctx, m.planKey(id)).Result()
	if err != nil {
		return Progress{}, fmt.Errorf("read release plan of rollout %s: %w", id, err)
	}
	if len(h) == 0 {
		return Progress{}, fmt.Errorf("rollout %s: %w", id, errNoPlan)
	}
	return parseProgress(h)
}

func parseProgress(h map[string]string) (Progress, error) {
	var pr Progress
	var errs []error
	num := func(k string) int64 {
		if h[k] == "" {
			return 0
		}
		n, err := strconv.ParseInt(h[k], 10, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("field %s: %w", k, err))
		}
		return n
	}
	flt := func(k string, def float64) float64 {
		if h[k] == "" {
			return def
		}
		v, err := strconv.ParseFloat(h[k], 64)
		if err != nil || math.IsNaN(v) {
			errs = append(errs, fmt.Errorf("field %s: %q", k, h[k]))
		}
		return v
	}
	if s := h["bounds"]; s != "" {
		for _, b := range strings.Split(s, ",") {
			n, err := strconv.Atoi(b)
			if err != nil {
				errs = append(errs, fmt.Errorf("field bounds: %w", err))
			}
			pr.Bounds = append(pr.Bounds, n)
		}
	}
	pr.Waves = h["waves"]
	pr.Bake = time.Duration(num("bake_ms")) * time.Millisecond
	pr.MaxFailureRatio = flt("ratio", DefaultMaxFailureRatio)
	pr.Weight = flt("weight", DefaultWeight)
	pr.Gate = h["gate"]
	pr.State = h["state"]
	pr.Wave = int(num("wave"))
	pr.Limit = num("limit")
	pr.Released = num("released")
	pr.FailedAtWave, pr.FinishedAtWave = num("f0"), num("n0")
	pr.WaveAt = msTime(num("wave_at_ms"))
	pr.BakeUntil = msTime(num("bake_until_ms"))
	pr.HaltReason = h["halt_reason"]
	pr.GateRun = h["gate_run"]
	if pr.Wave < 1 {
		pr.Wave = 1
	}
	return pr, errors.Join(errs...)
}

func msTime(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// peekScript returns up to ARGV[1] organisations the rollout may release
// now (its state running, within its wave's limit), from the head of its
// backlog, after the count already released: {released, ids...}; {-1} for
// a rollout without a plan.
// KEYS: plan, backlog.
var peekScript = redis.NewScript(`
local p = redis.call('HMGET', KEYS[1], 'state', 'limit', 'released')
if not p[1] then return {-1} end
local released = tonumber(p[3]) or 0
if p[1] ~= 'running' then return {released} end
local n = tonumber(ARGV[1])
local limit = tonumber(p[2]) or -1
if limit >= 0 then n = math.min(n, limit - released) end
if n <= 0 then return {released} end
local ids = redis.call('LRANGE', KEYS[2], 0, n - 1)
table.insert(ids, 1, released)
return ids
`)

// commitScript records that ARGV[2] organisations from the head of the
// backlog were enqueued, if nobody did since the peek that saw ARGV[1]
// released: a second releaser (a lease that changed hands) re-enqueues the
// same tasks, which asynq refuses by task ID, and its commit is a no-op.
// KEYS: plan, backlog.
var commitScript = redis.NewScript(`
local released = tonumber(redis.call('HGET', KEYS[1], 'released')) or 0
if released ~= tonumber(ARGV[1]) then return 0 end
redis.call('LTRIM', KEYS[2], tonumber(ARGV[2]), -1)
redis.call('HINCRBY', KEYS[1], 'released', tonumber(ARGV[2]))
return 1
`)

// activateScript puts a rollout in the active set at the current virtual
// time (the lowest pass) unless it is there, and counts the activation.
// KEYS: active, touch. ARGV: rollout ID.
var activateScript = redis.NewScript(`
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
local low = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local pass = 0
if low[2] then pass = tonumber(low[2]) end
redis.call('ZADD', KEYS[1], pass, ARGV[1])
return 1
`)

// retireScript removes a rollout from the active set if it was not
// activated since the releaser read ARGV[2] activations.
// KEYS: active, touch. ARGV: rollout ID, activations seen.
var retireScript = redis.NewScript(`
local t = redis.call('HGET', KEYS[2], ARGV[1]) or '0'
if t ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
`)

// activate tells the releaser that rollout id has organisations to release
// on queue, and, for a rollout of several waves, that a wave decision lies
// ahead.
func (m *Manager) activate(ctx context.Context, id, queue string, waves bool) error {
	if err := activateScript.Run(ctx, m.rdb, []string{m.activeKey(queue), m.touchKey(queue)}, id).Err(); err != nil {
		return fmt.Errorf("activate rollout %s: %w", id, err)
	}
	if waves {
		if err := m.rdb.SAdd(ctx, m.wavesKey(queue), id).Err(); err != nil {
			return fmt.Errorf("activate rollout %s: %w", id, err)
		}
	}
	return nil
}

// advanceScript releases the wave after ARGV[1] if it is still the last
// released one: two deciders (or a decider and an operator's promote)
// release a wave once.
// KEYS: plan. ARGV: from wave, new limit, failed, finished, now_ms.
var advanceScript = redis.NewScript(`
local p = redis.call('HMGET', KEYS[1], 'wave', 'state')
if not p[1] then return -1 end
if tonumber(p[1]) ~= tonumber(ARGV[1]) or p[2] == 'cancelled' then return 0 end
redis.call('HSET', KEYS[1], 'wave', tonumber(ARGV[1]) + 1, 'limit', ARGV[2], 'f0', ARGV[3], 'n0', ARGV[4],
  'wave_at_ms', ARGV[5], 'state', 'running')
redis.call('HDEL', KEYS[1], 'bake_until_ms', 'halt_reason', 'gate_run')
return 1
`)

// setStateScript moves a rollout's release from one state to another for
// the same wave, with extra fields; it refuses once the wave or the state
// changed. KEYS: plan. ARGV: wave, from state, to state, field, value, ...
var setStateScript = redis.NewScript(`
local p = redis.call('HMGET', KEYS[1], 'wave', 'state')
if not p[1] then return -1 end
if tonumber(p[1]) ~= tonumber(ARGV[1]) or p[2] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[3])
for i = 4, #ARGV, 2 do
  if ARGV[i + 1] == '' then redis.call('HDEL', KEYS[1], ARGV[i]) else redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
return 1
`)

func (m *Manager) setState(ctx context.Context, id string, wave int, from, to string, fields ...string) (bool, error) {
	args := []any{wave, from, to}
	for _, f := range fields {
		args = append(args, f)
	}
	n, err := setStateScript.Run(ctx, m.rdb, []string{m.planKey(id)}, args...).Int()
	if err != nil {
		return false, fmt.Errorf("rollout %s: %s -> %s: %w", id, from, to, err)
	}
	return n == 1, nil
}

// decorateRelease fills st's release fields from the rollout's plan; a
// rollout enqueued whole has one wave, all released.
func (m *Manager) decorateRelease(ctx context.Context, st *Status) error {
	st.State, st.Wave, st.Waves, st.Released, st.Weight = StateRunning, 1, 1, st.Total, DefaultWeight
	pr, err := m.Progress(ctx, st.RolloutID)
	switch {
	case errors.Is(err, errNoPlan):
	case err != nil:
		return err
	default:
		st.State, st.Wave, st.Waves, st.Released, st.Weight = pr.State, pr.Wave, pr.WaveCount(), pr.Released, pr.Weight
		st.HaltReason = pr.HaltReason
		if pr.WaveCount() > 1 {
			st.WaveDetail = waveStatus(pr, *st)
		}
	}
	if st.Done && st.State != StateCancelled {
		st.State = StateDone
	}
	return nil
}

func waveStatus(pr Progress, c Status) *WaveStatus {
	finished := c.Finished()
	w := &WaveStatus{
		Bound: max(pr.Limit, 0), Failed: c.Failed - pr.FailedAtWave, Finished: finished - pr.FinishedAtWave,
		MaxFailureRatio: pr.MaxFailureRatio, BakeSeconds: pr.Bake.Seconds(), ReleasedAt: pr.WaveAt,
	}
	if w.Finished > 0 {
		w.Ratio = float64(w.Failed) / float64(w.Finished)
	}
	if !pr.BakeUntil.IsZero() {
		t := pr.BakeUntil
		w.BakeUntil = &t
	}
	if pr.GateRun != "" {
		var g GateRun
		if json.Unmarshal([]byte(pr.GateRun), &g) == nil {
			w.Gate = &g
		}
	}
	switch {
	case pr.State == StateHalted:
		w.Next = "halted: nothing more is released until `enqueue promote` (or cancel)"
	case pr.State == StateCancelled:
		w.Next = "cancelled"
	case pr.Wave >= pr.WaveCount():
		w.Next = "last wave: nothing more to release"
	case pr.State == StateBaking:
		w.Next = fmt.Sprintf("wave %d is released when the bake ends (%s)", pr.Wave+1, pr.BakeUntil.Format(time.RFC3339))
		if pr.Gate != "" {
			w.Next += " and the gate query passes"
		}
	default:
		w.Next = fmt.Sprintf("wave %d (up to %s organisations) is released when wave %d has finished", pr.Wave+1, nextBound(pr), pr.Wave)
		if pr.Bake > 0 {
			w.Next += fmt.Sprintf(", baked %s", pr.Bake)
		}
		w.Next += fmt.Sprintf(" and its failure ratio is at most %s", strconv.FormatFloat(pr.MaxFailureRatio, 'f', -1, 64))
		if pr.Gate != "" {
			w.Next += ", and the gate query passes"
		}
	}
	return w
}

func nextBound(pr Progress) string {
	if l := pr.limit(pr.Wave + 1); l >= 0 {
		return strconv.FormatInt(l, 10)
	}
	return "all"
}

// ErrCannotPromote: the rollout has no further wave to release (it has no
// waves, released its last one, is finished or cancelled).
var ErrCannotPromote = errors.New("cannot promote")

// Promote releases rollout id's next wave now, skipping the current wave's
// bake and gate (and lifting a halt), and returns the new status. A
// rollout without waves, or with none left, is an *InputError wrapping
// ErrCannotPromote.
func (m *Manager) Promote(ctx context.Context, id string) (Status, error) {
	ro, c, err := m.Get(ctx, id)
	if err != nil {
		return Status{}, err
	}
	pr, err := m.Progress(ctx, id)
	cannot := func(why string) error {
		return inputErr(fmt.Errorf("%w rollout %s: %s", ErrCannotPromote, id, why))
	}
	switch {
	case errors.Is(err, errNoPlan) || (err == nil && pr.WaveCount() == 1):
		return Status{}, cannot("it has no waves (every organisation was released at once)")
	case err != nil:
		return Status{}, err
	case pr.State == StateCancelled:
		return Status{}, cannot("it was cancelled")
	case pr.Wave >= pr.WaveCount():
		return Status{}, cannot(fmt.Sprintf("its last wave (%d of %d) is already released", pr.Wave, pr.WaveCount()))
	case c.Pending == 0:
		return Status{}, cannot("it has finished")
	}
	if _, err := m.advance(ctx, id, m.QueueOf(ro), pr, c.Failed, c.Succeeded+c.Failed+c.Cancelled); err != nil {
		return Status{}, err
	}
	if err := m.nextCallbackRound(ctx, id); err != nil {
		return Status{}, err
	}
	return m.Status(ctx, id)
}

// stopRelease ends a rollout's release for good (cancel): nothing more is
// handed to the queue, and its backlog is dropped.
var stopReleaseScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'state', 'cancelled')
redis.call('DEL', KEYS[2])
return 1
`)

func (m *Manager) stopRelease(ctx context.Context, id, queue string) error {
	if err := stopReleaseScript.Run(ctx, m.rdb, []string{m.planKey(id), m.led.BacklogKey(id)}).Err(); err != nil {
		return fmt.Errorf("stop release of rollout %s: %w", id, err)
	}
	pipe := m.rdb.Pipeline()
	pipe.ZRem(ctx, m.activeKey(queue), id)
	pipe.SRem(ctx, m.wavesKey(queue), id)
	pipe.SRem(ctx, m.haltedKey(queue), id)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("stop release of rollout %s: %w", id, err)
	}
	return nil
}
