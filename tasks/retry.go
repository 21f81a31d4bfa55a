package tasks

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/hibiken/asynq"

	"github.com/versori/import-worker/versori"
)

// RetryLaterError asks for the task to run again after Delay without using up
// one of its attempts: asynq's IsFailure (see IsFailure) reports it as no
// failure. The handler returns it when the fleet's rate budget is spent, the
// API answered 429, or the key was refused and the queue is paused.
type RetryLaterError struct {
	// Class is the outcome class that caused the delay: rate_limited or
	// unauthorized.
	Class versori.Class
	// Delay is how long to wait before the next run, jitter included.
	Delay time.Duration
	// Err is the underlying cause, if any.
	Err error
}

func (e *RetryLaterError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: retry in %s: %v", e.Class, e.Delay.Round(time.Millisecond), e.Err)
	}
	return fmt.Sprintf("%s: retry in %s", e.Class, e.Delay.Round(time.Millisecond))
}

func (e *RetryLaterError) Unwrap() error { return e.Err }

// heldError is a failure for which the handler already held the task
// (waiting for the fleet's verdict on it): the backoff counts the hold as
// part of the wait.
type heldError struct {
	err  error
	held time.Duration
}

func (e *heldError) Error() string { return e.err.Error() }
func (e *heldError) Unwrap() error { return e.err }

// IsFailure is the asynq.Config.IsFailure of the worker: a RetryLaterError is
// no failure, so waiting for the rate budget or for an operator never uses up
// an attempt.
func IsFailure(err error) bool {
	var later *RetryLaterError
	return !errors.As(err, &later)
}

// Backoff is capped exponential backoff with full jitter for failed attempts:
// the n-th retry waits a uniformly random time in [0, min(Cap, Base*2^n)].
// Full jitter spreads the retries of thousands of tasks that failed together
// (an outage) instead of bringing them back in one wave.
type Backoff struct {
	// Base is the ceiling of the first retry's delay. Default 250 ms: a
	// broad outage is held by the fleet's breaker, not by the backoff, so
	// the backoff only spaces one organisation's retries, and the last
	// retries of a rollout are its tail (figure 7, row 5: 5% of calls
	// answered 503 cost 1.10-1.14 x N/R with 1 s).
	Base time.Duration
	// Cap bounds every delay. Default 1 minute: asynq's default grows to
	// days, which would strand a rollout after a short outage.
	Cap time.Duration
	// Jitter is the extra random delay, at most, added to a RetryLaterError's
	// delay so tasks told to wait the same time do not return together.
	// Default 250 ms.
	Jitter time.Duration
	// Rand returns a float in [0, 1). Default math/rand/v2's Float64.
	Rand func() float64
}

func (b Backoff) withDefaults() Backoff {
	if b.Base <= 0 {
		b.Base = DefaultBackoffBase
	}
	if b.Cap <= 0 {
		b.Cap = time.Minute
	}
	if b.Jitter < 0 {
		b.Jitter = 0
	} else if b.Jitter == 0 {
		b.Jitter = 250 * time.Millisecond
	}
	if b.Rand == nil {
		b.Rand = rand.Float64
	}
	return b
}

// DefaultBackoffBase is Backoff.Base's default (RETRY_BACKOFF_BASE).
const DefaultBackoffBase = 250 * time.Millisecond

// Delay is the wait before retry n (0 for the first retry) after err.
func (b Backoff) Delay(n int, err error) time.Duration {
	b = b.withDefaults()
	var later *RetryLaterError
	if errors.As(err, &later) {
		return later.Delay + time.Duration(b.Rand()*float64(b.Jitter))
	}
	ceiling := b.Cap
	if n < 32 {
		if d := b.Base << n; d > 0 && d < b.Cap {
			ceiling = d
		}
	}
	d := time.Duration(b.Rand() * float64(ceiling))
	var held *heldError
	if errors.As(err, &held) {
		d = max(0, d-held.held)
	}
	return d
}

// RetryDelayFunc adapts b to asynq.Config.RetryDelayFunc.
func (b Backoff) RetryDelayFunc() asynq.RetryDelayFunc {
	return func(n int, err error, _ *asynq.Task) time.Duration { return b.Delay(n, err) }
}
