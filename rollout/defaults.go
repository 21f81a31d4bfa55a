package rollout

import (
	"time"

	"github.com/versori/import-worker/tasks"
)

// Defaults. Each lives here, or in the package that owns the concept and is
// referred to from here, and nowhere else as a literal.
const (
	// DefaultQueue is the asynq queue of a rollout's tasks.
	DefaultQueue = tasks.DefaultQueue
	// DefaultEnqueueConcurrency is how many enqueue calls a producer keeps
	// in flight.
	DefaultEnqueueConcurrency = tasks.DefaultConcurrency
	// DefaultRateLimit is the fleet's import calls per second (its ceiling)
	// when IMPORT_RATE_LIMIT is not set: the worker's default, and the
	// rate `enqueue --dry-run` computes the ETA with.
	DefaultRateLimit = 10
	// DefaultListLimit is how many rollouts List returns when asked for 0.
	DefaultListLimit = 20
	// DefaultQueueOps is how many queue operations (one round trip each)
	// Retry and Cancel keep in flight.
	DefaultQueueOps = 16
	// DefaultBatchSize is how many organisations Retry and Cancel move in
	// the ledger per script call.
	DefaultBatchSize = 500
	// MaxListedInvalid bounds the invalid IDs a Spool keeps to list (all are
	// counted).
	MaxListedInvalid = 1000
	// DefaultCallbackTimeout bounds one callback POST, so a receiver that
	// hangs cannot hold a worker.
	DefaultCallbackTimeout = 10 * time.Second
	// DefaultCallbackMaxRetry is how many times a failed callback is
	// retried (with the worker's capped backoff: about a day in all).
	DefaultCallbackMaxRetry = 100
	// CallbackRetention is how long a delivered callback task is kept, so
	// its task ID refuses a second enqueue meanwhile.
	CallbackRetention = 7 * 24 * time.Hour
	// DefaultRetention is how long a finished rollout's ledger records and
	// other keys are kept (ROLLOUT_RETENTION) when nothing says otherwise.
	DefaultRetention = 30 * 24 * time.Hour
	// MinRetention is the shortest retention accepted: shorter values are
	// typing mistakes. Anything under a few minutes is for tests: a task
	// that asynq's lease recovery runs again (about a minute after a worker
	// died) after its rollout expired registers the rollout again.
	MinRetention = time.Second
)
