// Package taskstest runs the import handler in users' own tests, in the
// manner of River's rivertest: Run hands one import task to a handler
// synchronously, as an asynq server would on a chosen attempt, and says
// what the server would do next with the answer (done, run again later
// without using an attempt, retry, or archive). Ledger is an in-memory
// tasks.OutcomeLedger, so a handler can be tested without Redis.
//
//	led := taskstest.NewLedger()
//	h, _ := tasks.NewHandler(tasks.HandlerConfig{Client: api, Ledger: led, Metrics: m, Logger: log})
//	res, err := taskstest.Run(ctx, h, payload, taskstest.WithAttempt(2, 3))
//	// res.Kind == taskstest.Archived: the last attempt failed.
package taskstest

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"github.com/versori/import-worker/tasks"
	"github.com/versori/import-worker/tasks/internal/taskctx"
	"github.com/versori/import-worker/versori"
)

// Kind is what an asynq server running the worker's configuration
// (tasks.IsFailure) does with a handler's answer.
type Kind int

const (
	// Done: the handler returned nil; the task is complete.
	Done Kind = iota
	// RetryLater: the handler returned a *tasks.RetryLaterError; the task
	// runs again after Result.Delay without using an attempt.
	RetryLater
	// Retry: the handler failed; the task runs again after a backoff,
	// using one of its attempts.
	Retry
	// Archived: the handler's error wraps asynq.SkipRetry, or it failed on
	// the last attempt; the task is archived and never runs again.
	Archived
)

func (k Kind) String() string {
	switch k {
	case Done:
		return "done"
	case RetryLater:
		return "retry_later"
	case Retry:
		return "retry"
	case Archived:
		return "archived"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Result is the handler's answer to one run, classified.
type Result struct {
	// Kind is what the server does next with the task.
	Kind Kind
	// Err is what the handler returned (nil when Done). A panic in the
	// handler is turned into an error, as asynq does.
	Err error
	// Delay is the wait a RetryLater asked for, before the server's
	// jitter (tasks.Backoff adds it); zero for the other kinds.
	Delay time.Duration
	// Class is the outcome class a RetryLater gives as its reason
	// (rate_limited, unauthorized, server_error...); empty otherwise.
	Class versori.Class
}

// Option changes how Run presents the task to the handler.
type Option func(*config)

type config struct {
	retried, maxRetry int
	taskID            string
	hasTaskID         bool
}

// WithAttempt runs the task as its attempt number retried+1 of a task
// allowed maxRetry retries: retried attempts have failed so far (what
// asynq.GetRetryCount returns), and with retried == maxRetry this is the
// last. The default is the first attempt of tasks.DefaultMaxRetry.
func WithAttempt(retried, maxRetry int) Option {
	return func(c *config) { c.retried, c.maxRetry = retried, maxRetry }
}

// WithTaskID gives the task an ID, as asynq.GetTaskID would return it. Run
// defaults to tasks.TaskID of the payload's rollout and organisation, as
// the producer sets it; RunTask to none.
func WithTaskID(id string) Option {
	return func(c *config) { c.taskID, c.hasTaskID = id, true }
}

// Run builds the import task of p, as tasks.NewImportTask does, and runs
// it once, synchronously, on handler (usually a *tasks.Handler). The error
// is non-nil only when the task could not be run at all (an invalid
// payload or option); what the handler returned is in Result.Err.
func Run(ctx context.Context, handler asynq.Handler, p tasks.Payload, opts ...Option) (Result, error) {
	c := options(opts)
	if err := c.check(); err != nil {
		return Result{}, err
	}
	t, err := tasks.NewImportTask(p, tasks.TaskOptions{MaxRetry: c.maxRetry})
	if err != nil {
		return Result{}, fmt.Errorf("taskstest: %w", err)
	}
	if !c.hasTaskID {
		c.taskID, c.hasTaskID = tasks.TaskID(p.RolloutID, p.OrgID), true
	}
	return run(ctx, handler, t, c), nil
}

// RunTask is Run for a task built by hand, such as one with a payload
// another producer got wrong.
func RunTask(ctx context.Context, handler asynq.Handler, t *asynq.Task, opts ...Option) (Result, error) {
	c := options(opts)
	if err := c.check(); err != nil {
		return Result{}, err
	}
	if t == nil {
		return Result{}, errors.New("taskstest: nil task")
	}
	return run(ctx, handler, t, c), nil
}

func options(opts []Option) config {
	c := config{maxRetry: tasks.DefaultMaxRetry}
	for _, o := range opts {
		o(&c)
	}
	return c
}

func (c config) check() error {
	if c.retried < 0 || c.maxRetry < 0 || c.retried > c.maxRetry {
		return fmt.Errorf("taskstest: WithAttempt(%d, %d): want 0 <= retried <= maxRetry", c.retried, c.maxRetry)
	}
	return nil
}

func run(ctx context.Context, handler asynq.Handler, t *asynq.Task, c config) Result {
	ctx = taskctx.WithRetry(ctx, c.retried, c.maxRetry)
	if c.hasTaskID {
		ctx = taskctx.WithTaskID(ctx, c.taskID)
	}
	err := process(ctx, handler, t)
	return Classify(err, c.retried, c.maxRetry)
}

// process calls the handler, turning a panic into an error as asynq does.
func process(ctx context.Context, handler asynq.Handler, t *asynq.Task) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic in handler: %v", r)
		}
	}()
	return handler.ProcessTask(ctx, t)
}

// Classify says what an asynq server configured as the worker is
// (IsFailure: tasks.IsFailure) does with err, returned by a handler on a
// task that failed retried times of maxRetry allowed.
func Classify(err error, retried, maxRetry int) Result {
	if err == nil {
		return Result{Kind: Done}
	}
	if !tasks.IsFailure(err) {
		r := Result{Kind: RetryLater, Err: err}
		var later *tasks.RetryLaterError
		if errors.As(err, &later) {
			r.Delay, r.Class = later.Delay, later.Class
		}
		return r
	}
	if errors.Is(err, asynq.SkipRetry) || retried >= maxRetry {
		return Result{Kind: Archived, Err: err}
	}
	return Result{Kind: Retry, Err: err}
}
