// Package ratebudget is a rate budget shared by every process on one Redis:
// one limit, in calls per second, for the whole fleet of workers.
//
// # Design
//
// A caller does not poll for permission; it books a slot. One Lua script call
// (EVALSHA; EVAL only when Redis has not cached the script yet) reads the budget's theoretical arrival time (TAT, as in GCRA), books the
// next free slot, and returns how long until that slot. The caller sleeps
// until then and makes its call. Every slot is booked exactly once, so the
// schedule the fleet follows is the GCRA schedule itself: at most Burst
// calls at once, then one every 1/Limit seconds, however many processes and
// goroutines share the budget. Times are taken from Redis (TIME inside the
// script), so the clocks of the worker hosts do not matter. The state is one
// small hash that expires when idle; losing it (a Redis restart without
// persistence, a failover) costs at most one burst. It needs Redis 6.2 or
// newer (scripts replicated by effect), and works on Redis Cluster: each
// script touches one key.
//
// Polling was measured and rejected (shared/design.md, "The rate budget:
// what was measured on this machine": three processes of 20 goroutines,
// 200 calls/s fleet-wide). Asking a limiter (redis_rate.Allow) and sleeping
// its RetryAfter reached only 0.88 of the rate with burst 1, and spent about
// 57 Redis commands per call, because every waiting goroutine asks again and
// all but one are refused. Booking reached 1.00 of the rate with the worst
// one-second window at 1.005-1.015 of it, for about one command per call.
//
// # Two guards
//
// A booked slot that the caller reaches late (a GC pause, a stalled or
// SIGSTOPped process, an overloaded host) is dropped and booked again, rather
// than used: otherwise the callers that were held all fire together when the
// process resumes. In the measurements, a 300 ms pause of all three processes
// took the worst second to 1.28 of the rate without this guard and 1.01 with
// it. See Config.LateTolerance.
//
// A booking is bounded by Config.MaxWait and by the caller's context
// deadline. When the next free slot is further away, nothing is booked and Wait returns a *DelayError carrying
// the delay, so the caller can hand its task back to the queue (as
// rate_limited, to run after the delay) instead of holding a handler while a
// long queue drains.
//
// # Cool-down
//
// After the API answers 429 with Retry-After, CoolDown moves the booking
// clock forward for the whole fleet: no slot is booked inside the cool-down,
// and the burst is spent so the API is not met with a burst when it opens
// again. Slots booked before the cool-down began are still used by other
// processes (they learn of it at their next booking, which keeps the cost at
// one command per call); this process's own callers drop theirs.
package ratebudget

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultKey           = "versori-import:ratebudget"
	DefaultMaxWait       = 5 * time.Second
	DefaultLateTolerance = 20 * time.Millisecond
	DefaultMaxCoolDown   = 10 * time.Minute
)

// Limits on Config.Limit. Below MinLimit slots are further apart than any
// task should wait. The script keeps time in microseconds since the epoch,
// which a Lua double holds to 0.25 µs in this era, so each booking may be
// off by up to 0.125 µs: at most 0.125% of the interval at MaxLimit, and
// nothing that matters at the rates an HTTP API allows.
const (
	MinLimit = 0.001
	MaxLimit = 10_000
)

// Reasons a slot is not immediately available, carried by Reservation and
// DelayError. They are fit for a metric label.
const (
	// ReasonBudget: the fleet is using the budget; the delay is the queue.
	ReasonBudget = "budget"
	// ReasonCooldown: a shared cool-down after a 429 is in force.
	ReasonCooldown = "cooldown"
)

// Config configures a Budget. Every process of a fleet should use the same
// Limit and Burst: each booking is spaced by the interval of the process
// that makes it, so mixed settings give a mixed (but still booked, never
// overlapping) schedule.
type Config struct {
	// Limit is the number of calls per second for the whole fleet. Zero or
	// less means unlimited: Wait and Reserve return at once and no Redis
	// command is ever sent (the client may then be nil). Otherwise it must
	// lie in [MinLimit, MaxLimit].
	Limit float64

	// Burst is how many calls the fleet may make at once above the steady
	// rate, after a quiet spell. Zero means max(1, Limit/20): small, because
	// the calls the API sees in any one second are up to Limit + Burst - 1.
	Burst int

	// MaxWait is the longest a booked slot may lie ahead. When the next free
	// slot is further away, nothing is booked and Wait returns a *DelayError.
	// Zero means DefaultMaxWait (5 s): a handler waiting for its slot takes
	// no other work, so a queue deeper than a few seconds of budget is better
	// left in Redis than spread across sleeping handlers.
	MaxWait time.Duration

	// LateTolerance is how late a caller may reach its slot and still use
	// it; later than that the slot is dropped (it lapses, unused) and a new
	// one is booked. Zero means DefaultLateTolerance (20 ms), whatever the
	// rate, because the harm is measured in time: callers firing up to L
	// late put at most the calls of 1 s + L of the schedule into one second,
	// Limit*L extra, so 20 ms spends at most 2% of the 5% over the limit that
	// design.md allows in any second. It is well above Go's GC pauses and
	// timer slack on a healthy host, so slots are not wasted in normal
	// running; on a host overloaded enough to wake sleepers 20 ms late, some
	// are (a few in a thousand at a load of 3 per core here), which is the
	// price of keeping the window.
	LateTolerance time.Duration

	// MaxCoolDown caps one cool-down, so a Retry-After of a day from a
	// misbehaving proxy cannot stop the fleet for a day. Zero means
	// DefaultMaxCoolDown (10 min).
	MaxCoolDown time.Duration

	// Key is the Redis key holding the budget's state (one hash). Zero
	// means DefaultKey. Budgets with different keys are independent; on
	// Redis Cluster each lives in the slot of its key.
	Key string

	// Observer is told what Wait does, for metrics. Nil fields are skipped.
	Observer Observer
}

// Observer receives what a Budget's Wait does, so that the caller can count
// it without this package depending on a metrics library. Nil fields are
// skipped. The functions run synchronously on the waiting goroutine and must
// be quick.
type Observer struct {
	// Granted is called when Wait returns with a slot; waited is the time
	// spent in Wait, booking and sleeping.
	Granted func(waited time.Duration)
	// Deferred is called when Wait returns a *DelayError (nothing booked).
	Deferred func(err *DelayError)
	// Missed is called when a booked slot was reached more than
	// LateTolerance late and is booked again; late is by how much.
	Missed func(late time.Duration)
}

// DelayError is returned by Wait when the next free slot is further away
// than MaxWait or the context deadline. Nothing was booked: the caller
// should come back after RetryIn, without counting it as a failure.
type DelayError struct {
	// RetryIn is how far away the next free slot was.
	RetryIn time.Duration
	// Reason is ReasonBudget or ReasonCooldown.
	Reason string
}

func (e *DelayError) Error() string {
	return fmt.Sprintf("ratebudget: next free slot is %v away (%s)", e.RetryIn, e.Reason)
}

// IsDelay reports whether err is or wraps a *DelayError, and returns it.
func IsDelay(err error) (*DelayError, bool) {
	var de *DelayError
	if errors.As(err, &de) {
		return de, true
	}
	return nil, false
}

// Reservation is the result of one booking attempt.
type Reservation struct {
	// Booked reports whether a slot was booked. It is false only when the
	// next free slot is further away than MaxWait or the context deadline.
	Booked bool
	// Delay is how far away the slot is: the booked one, or the next free
	// one that was not booked.
	Delay time.Duration
	// At is Delay after the reply arrived, on this process's monotonic
	// clock. Measuring from the reply, not the request, means a caller
	// never fires before its slot on the server's clock.
	At time.Time
	// Reason is ReasonCooldown while a shared cool-down is in force, else
	// ReasonBudget.
	Reason string
}

// Budget is a fleet-wide rate budget. It is safe for concurrent use; one
// Budget per process is enough.
type Budget struct {
	rdb        redis.UniversalClient
	key        string
	limit      float64
	burst      int
	intervalUS float64
	maxWait    time.Duration
	lateTol    time.Duration
	maxCool    time.Duration
	obs        Observer

	// cool records the last cool-down this process started: the other
	// callers of this process that hold slots inside it drop them. (Other
	// processes learn of it at their next booking; telling them sooner
	// would cost a Redis command per call.)
	coolMu sync.Mutex
	cool   localCoolDown

	// Replaceable in tests, to stall a caller past its slot.
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error
}

// localCoolDown is a cool-down as this process saw it start.
type localCoolDown struct {
	gen   uint64    // counts CoolDown calls; a booking made under an older one may predate it
	until time.Time // end of the cool-down on this process's clock
}

func (b *Budget) coolDown() localCoolDown {
	b.coolMu.Lock()
	defer b.coolMu.Unlock()
	return b.cool
}

// New returns a Budget on rdb. It checks cfg and applies defaults; it sends
// nothing to Redis. rdb may be nil when cfg.Limit <= 0.
func New(rdb redis.UniversalClient, cfg Config) (*Budget, error) {
	b := &Budget{
		rdb:   rdb,
		key:   cfg.Key,
		limit: cfg.Limit,
		obs:   cfg.Observer,
		now:   time.Now,
		sleep: sleepCtx,
	}
	if math.IsNaN(cfg.Limit) || math.IsInf(cfg.Limit, 0) {
		return nil, fmt.Errorf("ratebudget: limit must be a finite number, got %v", cfg.Limit)
	}
	if cfg.Limit <= 0 {
		b.limit = 0
		return b, nil
	}
	if cfg.Limit < MinLimit || cfg.Limit > MaxLimit {
		return nil, fmt.Errorf("ratebudget: limit %v calls/s outside [%v, %v] (0 means unlimited)", cfg.Limit, MinLimit, MaxLimit)
	}
	if rdb == nil {
		return nil, errors.New("ratebudget: a Redis client is required when a limit is set")
	}
	switch {
	case cfg.Burst < 0:
		return nil, fmt.Errorf("ratebudget: burst must not be negative, got %d", cfg.Burst)
	case cfg.Burst == 0:
		b.burst = max(1, int(cfg.Limit/20))
	default:
		b.burst = cfg.Burst
	}
	var err error
	if b.maxWait, err = durationOr("max wait", cfg.MaxWait, DefaultMaxWait); err != nil {
		return nil, err
	}
	if b.lateTol, err = durationOr("late tolerance", cfg.LateTolerance, DefaultLateTolerance); err != nil {
		return nil, err
	}
	if b.maxCool, err = durationOr("max cool-down", cfg.MaxCoolDown, DefaultMaxCoolDown); err != nil {
		return nil, err
	}
	if b.key == "" {
		b.key = DefaultKey
	}
	b.intervalUS = 1e6 / cfg.Limit
	return b, nil
}

func durationOr(name string, d, def time.Duration) (time.Duration, error) {
	switch {
	case d < 0:
		return 0, fmt.Errorf("ratebudget: %s must not be negative, got %v", name, d)
	case d == 0:
		return def, nil
	default:
		return d, nil
	}
}

// Limit returns the fleet-wide limit in calls per second; 0 means unlimited.
func (b *Budget) Limit() float64 { return b.limit }

// Burst returns the burst in effect (after defaults); 0 when unlimited.
func (b *Budget) Burst() int { return b.burst }

func (b *Budget) unlimited() bool { return b.limit == 0 }

// Wait books a slot and sleeps until it, then returns the time it spent.
//
// It books again when it reaches its slot more than LateTolerance late, or
// when this process started a cool-down after the booking and the slot lies
// inside it. When the next free slot is further away than MaxWait, or than
// ctx's deadline, it books nothing and returns a *DelayError at once. When
// ctx ends during the sleep the booked slot lapses unused, and Wait returns
// ctx's error.
func (b *Budget) Wait(ctx context.Context) (time.Duration, error) {
	if b.unlimited() {
		if b.obs.Granted != nil {
			b.obs.Granted(0)
		}
		return 0, nil
	}
	start := b.now()
	for {
		cool := b.coolDown()
		r, err := b.Reserve(ctx)
		if err != nil {
			return b.now().Sub(start), err
		}
		if !r.Booked {
			de := &DelayError{RetryIn: r.Delay, Reason: r.Reason}
			if b.obs.Deferred != nil {
				b.obs.Deferred(de)
			}
			return b.now().Sub(start), de
		}
		if err := b.sleep(ctx, r.At.Sub(b.now())); err != nil {
			return b.now().Sub(start), fmt.Errorf("ratebudget: waiting for slot: %w", err)
		}
		if c := b.coolDown(); c.gen != cool.gen && r.At.Before(c.until) {
			continue
		}
		now := b.now()
		late := now.Sub(r.At)
		if late <= b.lateTol {
			waited := now.Sub(start)
			if b.obs.Granted != nil {
				b.obs.Granted(waited)
			}
			return waited, nil
		}
		if b.obs.Missed != nil {
			b.obs.Missed(late)
		}
	}
}

// Reserve makes one booking attempt: one script call to Redis. If the next
// free slot is within MaxWait, and before ctx's deadline, it is booked and
// the caller owns it: it should make its call at r.At, and never before.
// Most callers want Wait.
func (b *Budget) Reserve(ctx context.Context) (Reservation, error) {
	if b.unlimited() {
		return Reservation{Booked: true, At: b.now(), Reason: ReasonBudget}, nil
	}
	// A slot the caller's context will not live to see would only lapse.
	maxWait := b.maxWait
	if dl, ok := ctx.Deadline(); ok {
		maxWait = max(0, min(maxWait, dl.Sub(b.now())))
	}
	res, err := reserveScript.Run(ctx, b.rdb, []string{b.key},
		b.intervalUS, b.burst, maxWait.Microseconds()).Int64Slice()
	received := b.now()
	if err != nil {
		return Reservation{}, fmt.Errorf("ratebudget: book slot in %s: %w", b.key, err)
	}
	if len(res) != 3 {
		return Reservation{}, fmt.Errorf("ratebudget: book slot in %s: unexpected reply %v", b.key, res)
	}
	r := Reservation{
		Booked: res[0] == 1,
		Delay:  time.Duration(res[1]) * time.Microsecond,
		Reason: ReasonBudget,
	}
	if res[2] == 1 {
		r.Reason = ReasonCooldown
	}
	r.At = received.Add(r.Delay)
	return r, nil
}

// CoolDown makes the whole fleet pause for d, typically the Retry-After of
// a 429: no slot is booked before now+d (on the Redis clock), and the burst
// is spent. Callers in this process that already hold a slot inside the
// cool-down drop it when they reach it and book again; callers in other
// processes use the slots they already hold (at most MaxWait of them). A
// shorter cool-down never shortens a longer one in force. d is capped at
// MaxCoolDown; d <= 0, or an unlimited budget, does nothing.
func (b *Budget) CoolDown(ctx context.Context, d time.Duration) error {
	if b.unlimited() || d <= 0 {
		return nil
	}
	d = min(d, b.maxCool)
	us, err := coolDownScript.Run(ctx, b.rdb, []string{b.key},
		b.intervalUS, b.burst, d.Microseconds()).Int64()
	if err != nil {
		return fmt.Errorf("ratebudget: cool down %s for %v: %w", b.key, d, err)
	}
	until := b.now().Add(time.Duration(us) * time.Microsecond)
	b.coolMu.Lock()
	b.cool.gen++
	if until.After(b.cool.until) {
		b.cool.until = until
	}
	b.coolMu.Unlock()
	return nil
}

// CoolDownRemaining returns how long the fleet's shared cool-down has left
// on the Redis clock; 0 when none is in force (and always, when unlimited).
func (b *Budget) CoolDownRemaining(ctx context.Context) (time.Duration, error) {
	if b.unlimited() {
		return 0, nil
	}
	us, err := coolDownRemainingScript.Run(ctx, b.rdb, []string{b.key}).Int64()
	if err != nil {
		return 0, fmt.Errorf("ratebudget: read cool-down of %s: %w", b.key, err)
	}
	return time.Duration(us) * time.Microsecond, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
