package rollout

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/ratebudget"
	"github.com/versori/import-worker/tasks"
)

// Errors of the Manager; test with errors.Is.
var (
	// ErrNotFound: no rollout has the ID.
	ErrNotFound = ledger.ErrRolloutNotFound
	// ErrMismatch: the rollout ID is taken by another connector or version.
	ErrMismatch = ledger.ErrRolloutMismatch
	// ErrQueueMismatch: the rollout was enqueued on another queue.
	ErrQueueMismatch = ledger.ErrQueueMismatch
	// ErrNoOrganisations: the list held no valid organisation.
	ErrNoOrganisations = errors.New("no valid organisations")
	// ErrInvalidOrganisations: the list held invalid IDs and SkipInvalid
	// was not set; nothing was enqueued.
	ErrInvalidOrganisations = errors.New("invalid organisation IDs")
)

// InputError is bad input from the caller (an invalid ID, version, class or
// state): the CLI exits 2, the API answers 4xx.
type InputError struct{ Err error }

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

func inputErr(err error) error {
	if err == nil {
		return nil
	}
	return &InputError{Err: err}
}

// Options configure a Manager. The zero value is usable.
type Options struct {
	// Queue is the queue new rollouts are enqueued on, and the one used
	// for a rollout recorded without its queue. Default DefaultQueue.
	Queue string
	// Concurrency is how many enqueue calls Enqueue keeps in flight.
	// Default DefaultEnqueueConcurrency.
	Concurrency int
	// Ledger configures the ledger; it must match the workers'.
	Ledger ledger.Options
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// RateKey is the Redis key of the fleet's rate budget, when the
	// workers set IMPORT_RATE_KEY. Default ratebudget.KeyForQueue(queue).
	RateKey string
	// Retention is how long a finished rollout's keys are kept: the
	// workers' ROLLOUT_RETENTION. NoRetention keeps them for ever; 0
	// means the one the workers published in Redis (PublishRetention),
	// or DefaultRetention when none did. See retention.go.
	Retention time.Duration
}

// Manager runs rollouts on one Redis. It is safe for concurrent use.
type Manager struct {
	rdb    redis.UniversalClient
	led    *ledger.Ledger
	insp   *asynq.Inspector
	client *asynq.Client
	opts   Options
}

// New returns a Manager on rdb; the caller keeps ownership of rdb.
func New(rdb redis.UniversalClient, opts Options) *Manager {
	if opts.Queue == "" {
		opts.Queue = DefaultQueue
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = DefaultEnqueueConcurrency
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Manager{
		rdb:    rdb,
		led:    ledger.New(rdb, opts.Ledger),
		insp:   asynq.NewInspectorFromRedisClient(rdb),
		client: asynq.NewClientFromRedisClient(rdb),
		opts:   opts,
	}
}

// Ledger returns the ledger the Manager reads and writes.
func (m *Manager) Ledger() *ledger.Ledger { return m.led }

// Queue returns the Manager's queue.
func (m *Manager) Queue() string { return m.opts.Queue }

// Ping checks that Redis answers.
func (m *Manager) Ping(ctx context.Context) error { return m.rdb.Ping(ctx).Err() }

// Get returns a rollout's definition and counters. An invalid ID is an
// *InputError; an unknown one wraps ErrNotFound.
func (m *Manager) Get(ctx context.Context, id string) (ledger.Rollout, ledger.Counts, error) {
	if err := tasks.ValidateRolloutID(id); err != nil {
		return ledger.Rollout{}, ledger.Counts{}, inputErr(err)
	}
	return m.led.Rollout(ctx, id)
}

// QueueOf returns the queue a rollout's tasks are on: the one recorded
// with it, or the Manager's for a rollout recorded before queues were kept.
func (m *Manager) QueueOf(r ledger.Rollout) string {
	if r.Queue != "" {
		return r.Queue
	}
	return m.opts.Queue
}

// QueuePaused reports whether queue is paused for the fleet. A queue asynq
// does not know yet cannot be paused for anyone.
func (m *Manager) QueuePaused(queue string) bool {
	qi, err := m.insp.GetQueueInfo(queue)
	return err == nil && qi.Paused
}

// SetPaused pauses or resumes queue for the whole fleet and reports
// whether that changed anything.
func (m *Manager) SetPaused(queue string, pause bool) (changed bool, err error) {
	if err := tasks.ValidateQueue(queue); err != nil {
		return false, inputErr(err)
	}
	if m.QueuePaused(queue) == pause {
		return false, nil
	}
	if pause {
		err = m.insp.PauseQueue(queue)
	} else {
		err = m.insp.UnpauseQueue(queue)
	}
	// A queue asynq has not seen yet reads as not paused; asynq's answer
	// then says whether it already was.
	if err != nil && (strings.Contains(err.Error(), "already paused") || strings.Contains(err.Error(), "not paused")) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("queue %s: %w", queue, err)
	}
	return true, nil
}

// RateKey is the Redis key of the rate budget of the fleet serving queue:
// Options.RateKey when set (the workers' IMPORT_RATE_KEY), else the key
// per queue.
func (m *Manager) RateKey(queue string) string {
	if m.opts.RateKey != "" {
		return m.opts.RateKey
	}
	return ratebudget.KeyForQueue(queue)
}

// FleetState returns the fleet rate and breaker state of the fleet serving
// queue (closed, rate 0 before any worker booked a call).
func (m *Manager) FleetState(ctx context.Context, queue string) (rate float64, breaker string) {
	breaker = string(ratebudget.BreakerClosed)
	if fs, err := ratebudget.Inspect(ctx, m.rdb, m.RateKey(queue)); err == nil {
		rate, breaker = fs.Rate, string(fs.Breaker)
	}
	return rate, breaker
}

// RDB returns the Redis client the Manager uses.
func (m *Manager) RDB() redis.UniversalClient { return m.rdb }
