package rollout

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"

	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/tasks"
	"github.com/versori/import-worker/versori"
)

// Defaults of ReleaserConfig.
const (
	// DefaultLease is how long the releaser's lease outlives its holder: a
	// killed worker delays the fleet's release and wave decisions by at
	// most this long.
	DefaultLease = 3 * time.Second
	// DefaultReleaseTick is how often the lease holder tops the queue up.
	DefaultReleaseTick = 50 * time.Millisecond
	// DefaultReleaseWindow is how much work, in seconds of the fleet's
	// rate, the queue holds ahead of the handlers. Short, so a rollout
	// started behind a long one is interleaved within about this long;
	// long enough that the handlers never starve between ticks.
	DefaultReleaseWindow = 250 * time.Millisecond
	// DefaultMinDepth is the least the queue holds ahead, whatever the rate.
	DefaultMinDepth = 10
	// DefaultUnlimitedDepth is what the queue holds ahead when the fleet
	// has no rate limit.
	DefaultUnlimitedDepth = 2000
	// DefaultQuantum is how many organisations a rollout of weight 1
	// releases in one turn at low rates; at high rates a turn grows with
	// the depth, so one tick needs few turns.
	DefaultQuantum = 4
	// DefaultDecideEvery is how often wave decisions are checked.
	DefaultDecideEvery = 250 * time.Millisecond
)

// ReleaserConfig configures a Releaser. The zero value of each field takes
// the default its comment names.
type ReleaserConfig struct {
	// Queue is the queue released into. Default the Manager's.
	Queue string
	// Owner names this process in the lease. Default host-pid-ULID.
	Owner string
	// Lease, Tick, Window, MinDepth, UnlimitedDepth, Quantum and
	// DecideEvery: see the Default constants.
	Lease, Tick, Window, DecideEvery  time.Duration
	MinDepth, UnlimitedDepth, Quantum int
	// Rate returns the fleet's allowed calls per second now (the rate
	// budget's view) and whether it has a limit at all. Default: no limit.
	Rate func() (rate float64, limited bool)
	// Gate measures a wave's PromQL gate; nil makes every gate query
	// inconclusive, which halts the rollout.
	Gate GateMeasurer
	// Observer hears release events (metrics); nil hears nothing.
	Observer ReleaseObserver
	// Logger receives one line per wave event. Default: none.
	Logger *slog.Logger
}

// ReleaseObserver hears what the releaser does, for metrics.
type ReleaseObserver interface {
	// Released counts organisations handed to the queue.
	Released(n int)
	// WaveEvent is one of: released (a wave after the first), baking,
	// halted, gate_passed.
	WaveEvent(event string)
	// Leader is called when this process takes or loses the lease.
	Leader(held bool)
	// Rescued counts copies enqueued of tasks a dead worker left active.
	Rescued(n int)
}

// Releaser hands rollouts' organisations from their backlogs to the queue,
// for the whole fleet: every worker runs one, and the one holding a lease
// in Redis acts. It keeps the queue a short window of work ahead of the
// handlers, so a rollout started behind a long one waits a window, not the
// long one; picks what to release by stride scheduling over the active
// rollouts (the one with the lowest pass releases next, its pass growing
// by 1/weight an organisation), so rollouts with work share the fleet by
// weight and one alone gets all of it; and advances waves: a wave is
// released when the previous one has finished, baked and passed its gate,
// or the rollout halts.
//
// Every step is safe when two processes act at once (a lease that changed
// hands): releases are committed with a compare-and-set after enqueueing
// by task ID, which asynq refuses twice, and waves advance by
// compare-and-set on the wave number.
type Releaser struct {
	m    *Manager
	cfg  ReleaserConfig
	log  *slog.Logger
	held bool
	// renewed is when the lease was last renewed by this process.
	renewed    time.Time
	lastDecide time.Time
	lastRescue time.Time
	lastFailed time.Time

	// defs caches the definition and weight of active rollouts.
	mu   sync.Mutex
	defs map[string]activeRollout
	// waveSeen is the last wave seen of each rollout with waves, so a
	// promote by an operator is counted as a release too.
	waveSeen map[string]int
}

// NewReleaser returns a releaser of m's rollouts.
func (m *Manager) NewReleaser(cfg ReleaserConfig) *Releaser {
	cfg.Queue = cmp.Or(cfg.Queue, m.opts.Queue)
	if cfg.Owner == "" {
		host, _ := os.Hostname()
		cfg.Owner = host + "-" + strconv.Itoa(os.Getpid()) + "-" + ulid.Make().String()
	}
	cfg.Lease = cmp.Or(cfg.Lease, DefaultLease)
	cfg.Tick = cmp.Or(cfg.Tick, DefaultReleaseTick)
	cfg.Window = cmp.Or(cfg.Window, DefaultReleaseWindow)
	cfg.DecideEvery = cmp.Or(cfg.DecideEvery, DefaultDecideEvery)
	cfg.MinDepth = cmp.Or(cfg.MinDepth, DefaultMinDepth)
	cfg.UnlimitedDepth = cmp.Or(cfg.UnlimitedDepth, DefaultUnlimitedDepth)
	cfg.Quantum = cmp.Or(cfg.Quantum, DefaultQuantum)
	if cfg.Rate == nil {
		cfg.Rate = func() (float64, bool) { return 0, false }
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Releaser{m: m, cfg: cfg, log: log.With("component", "releaser", "queue", cfg.Queue),
		defs: map[string]activeRollout{}, waveSeen: map[string]int{}}
}

type nopObserver struct{}

func (nopObserver) Released(int)     {}
func (nopObserver) WaveEvent(string) {}
func (nopObserver) Leader(bool)      {}
func (nopObserver) Rescued(int)      {}

// Run releases until ctx is cancelled, then gives the lease up so another
// worker takes over at once.
func (r *Releaser) Run(ctx context.Context) {
	t := time.NewTicker(r.cfg.Tick)
	defer t.Stop()
	defer r.resign()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := r.Step(ctx); err != nil && ctx.Err() == nil {
			// One line per failure spell, not per tick.
			if time.Since(r.lastFailed) > 10*time.Second {
				r.log.Warn("release step failed; retrying", "err", err)
			}
			r.lastFailed = time.Now()
		}
	}
}

// Step is one tick: take or renew the lease, and if held, top the queue up,
// every DefaultRescueEvery rescue orphaned tasks, and every DecideEvery
// decide waves. Tests call it directly.
func (r *Releaser) Step(ctx context.Context) error {
	held, err := r.lease(ctx)
	if err != nil || !held {
		return err
	}
	if err := r.release(ctx); err != nil {
		return err
	}
	if now := time.Now(); now.Sub(r.lastRescue) >= DefaultRescueEvery {
		r.lastRescue = now
		n, err := r.rescue(ctx)
		if n > 0 {
			r.cfg.Observer.Rescued(n)
		}
		if err != nil {
			return err
		}
	}
	if now := time.Now(); now.Sub(r.lastDecide) >= r.cfg.DecideEvery {
		r.lastDecide = now
		return r.decide(ctx)
	}
	return nil
}

// leaseScript takes the lease if free or renews it if held by ARGV[1].
var leaseScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not v then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0
`)

var resignScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

func (r *Releaser) lease(ctx context.Context) (bool, error) {
	now := time.Now()
	// Renewing a third of the lease at a time keeps it held through two
	// missed renewals, for a command every Lease/3.
	if r.held && now.Sub(r.renewed) < r.cfg.Lease/3 {
		return true, nil
	}
	n, err := leaseScript.Run(ctx, r.m.rdb, []string{r.m.leaseKey(r.cfg.Queue)}, r.cfg.Owner, r.cfg.Lease.Milliseconds()).Int()
	if err != nil {
		r.setHeld(false)
		return false, fmt.Errorf("release lease: %w", err)
	}
	r.setHeld(n == 1)
	if r.held {
		r.renewed = now
	}
	return r.held, nil
}

func (r *Releaser) setHeld(held bool) {
	if held != r.held {
		r.log.Info("release lease", "held", held, "owner", r.cfg.Owner)
		r.cfg.Observer.Leader(held)
	}
	r.held = held
}

func (r *Releaser) resign() {
	if !r.held {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = resignScript.Run(ctx, r.m.rdb, []string{r.m.leaseKey(r.cfg.Queue)}, r.cfg.Owner).Err()
	r.setHeld(false)
}

// depth is how many tasks the queue should hold ahead of the handlers.
func (r *Releaser) depth() int {
	rate, limited := r.cfg.Rate()
	if !limited {
		return r.cfg.UnlimitedDepth
	}
	return max(r.cfg.MinDepth, int(math.Ceil(rate*r.cfg.Window.Seconds())))
}

// pendingKey is asynq's list of a queue's pending tasks; its length is the
// work ahead of the handlers, for one LLEN a tick (asynq's Inspector reads
// far more). TestPendingKeyIsAsynqs checks the name against asynq's.
func pendingKey(queue string) string { return "asynq:{" + queue + "}:pending" }

// maxTurns bounds the turns of one tick, so a tick stays short whatever the
// number of rollouts.
const maxTurns = 64

func (r *Releaser) release(ctx context.Context) error {
	target := r.depth()
	queued, err := r.m.rdb.LLen(ctx, pendingKey(r.cfg.Queue)).Result()
	if err != nil {
		return fmt.Errorf("queue depth: %w", err)
	}
	budget := target - int(queued)
	quantum := max(r.cfg.Quantum, target/16)
	active, touch := r.m.activeKey(r.cfg.Queue), r.m.touchKey(r.cfg.Queue)
	for turn := 0; budget > 0 && turn < maxTurns; turn++ {
		low, err := r.m.rdb.ZRangeWithScores(ctx, active, 0, 0).Result()
		if err != nil {
			return fmt.Errorf("active rollouts: %w", err)
		}
		if len(low) == 0 {
			return nil
		}
		id, _ := low[0].Member.(string)
		seen, err := r.m.rdb.HGet(ctx, touch, id).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("active rollouts: %w", err)
		}
		def, weight, err := r.definition(ctx, id)
		if errors.Is(err, ErrNotFound) {
			// Deleted while active.
			if err := r.m.rdb.ZRem(ctx, active, id).Err(); err != nil {
				return fmt.Errorf("retire rollout %s: %w", id, err)
			}
			continue
		}
		if err != nil {
			return err
		}
		n := min(budget, max(1, int(math.Round(weight*float64(quantum)))))
		released, ids, err := r.peek(ctx, id, n)
		if err != nil {
			return err
		}
		if len(ids) == 0 {
			if err := retireScript.Run(ctx, r.m.rdb, []string{active, touch}, id, cmp.Or(seen, "0")).Err(); err != nil {
				return fmt.Errorf("retire rollout %s: %w", id, err)
			}
			r.forget(id)
			continue
		}
		if err := r.enqueue(ctx, def, weight, ids); err != nil {
			return err
		}
		if err := commitScript.Run(ctx, r.m.rdb, []string{r.m.planKey(id), r.m.led.BacklogKey(id)}, released, len(ids)).Err(); err != nil {
			return fmt.Errorf("commit release of rollout %s: %w", id, err)
		}
		if err := r.m.rdb.ZIncrBy(ctx, active, float64(len(ids))/weight, id).Err(); err != nil {
			return fmt.Errorf("advance pass of rollout %s: %w", id, err)
		}
		r.cfg.Observer.Released(len(ids))
		budget -= len(ids)
	}
	return nil
}

type activeRollout struct {
	def    ledger.Rollout
	weight float64
}

// definition returns rollout id's definition and weight, cached while it
// is active.
func (r *Releaser) definition(ctx context.Context, id string) (ledger.Rollout, float64, error) {
	r.mu.Lock()
	a, ok := r.defs[id]
	r.mu.Unlock()
	if ok {
		return a.def, a.weight, nil
	}
	def, _, err := r.m.led.Rollout(ctx, id)
	if err != nil {
		return def, 0, err
	}
	w, err := r.m.rdb.HGet(ctx, r.m.planKey(id), "weight").Float64()
	if err != nil && !errors.Is(err, redis.Nil) {
		return def, 0, fmt.Errorf("weight of rollout %s: %w", id, err)
	}
	a = activeRollout{def: def, weight: cmp.Or(w, DefaultWeight)}
	r.mu.Lock()
	r.defs[id] = a
	r.mu.Unlock()
	return a.def, a.weight, nil
}

func (r *Releaser) forget(id string) {
	r.mu.Lock()
	delete(r.defs, id)
	r.mu.Unlock()
}

func (r *Releaser) peek(ctx context.Context, id string, n int) (released int64, ids []versori.OrgID, err error) {
	res, err := peekScript.Run(ctx, r.m.rdb, []string{r.m.planKey(id), r.m.led.BacklogKey(id)}, n).Slice()
	if err != nil {
		return 0, nil, fmt.Errorf("peek backlog of rollout %s: %w", id, err)
	}
	if len(res) == 0 {
		return 0, nil, fmt.Errorf("peek backlog of rollout %s: empty answer", id)
	}
	released, _ = res[0].(int64)
	for _, v := range res[1:] {
		if s, ok := v.(string); ok {
			// The backlog holds what Enlist was given: parsed IDs.
			ids = append(ids, versori.OrgID(s))
		}
	}
	return max(released, 0), ids, nil
}

func (r *Releaser) enqueue(ctx context.Context, def ledger.Rollout, weight float64, ids []versori.OrgID) error {
	opts := tasks.TaskOptions{Queue: r.cfg.Queue}
	return forEach(ctx, ids, func(org versori.OrgID) error {
		t, err := tasks.NewImportTask(tasks.Payload{RolloutID: def.ID, OrgID: org, ConnectorID: def.ConnectorID, Version: def.Version, Weight: weight}, opts)
		if err != nil {
			return err
		}
		_, err = r.m.client.EnqueueContext(ctx, t)
		if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
			return fmt.Errorf("release organisation %s of rollout %s: %w", org, def.ID, err)
		}
		return nil
	})
}
