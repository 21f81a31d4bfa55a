package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/versori/import-worker/internal/redisconn"
	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/rollout"
	"github.com/versori/import-worker/tasks"
)

// Exit statuses, as design.md fixes them.
const (
	exitOK      = 0
	exitRuntime = 1
	exitUsage   = 2
)

// pingTimeout bounds the first contact with Redis, so an unreachable server
// is reported within seconds instead of hanging the command.
const pingTimeout = 3 * time.Second

// app is one invocation of the command: its input and output, environment
// and the flags every subcommand shares. Tests build one around buffers.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	// isTerminal reports whether w is a terminal; progress bars are drawn
	// only there.
	isTerminal func(w io.Writer) bool
	now        func() time.Time

	redisURL string
	jsonOut  bool
	queue    string
	// queueSet is true when --queue was given on the command line (not
	// taken from $WORKER_QUEUE or the default).
	queueSet bool
}

// exitError carries the exit status of an error.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageError marks bad usage or bad input: exit status 2.
func usageError(format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

// run executes the command line and returns the exit status. Errors are
// printed as one line, "enqueue: ...", never with a usage dump or a trace.
func run(ctx context.Context, a *app, args []string) int {
	root := newRootCmd(a)
	root.SetArgs(args)
	root.SetIn(a.stdin)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	// Errors cobra raises itself (unknown command or flag, wrong number of
	// arguments) never pass through runE: they are usage errors.
	code, hint := exitUsage, " (see 'enqueue --help')"
	var ee *exitError
	if errors.As(err, &ee) {
		code, hint = ee.code, ""
	}
	fmt.Fprintf(a.stderr, "enqueue: %s%s\n", oneLine(err.Error()), hint)
	return code
}

// runE adapts a command's function: an error it returns is a runtime
// failure (exit status 1) unless it says otherwise.
func runE(f func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		err := f(cmd, args)
		if err == nil {
			return nil
		}
		var ee *exitError
		if errors.As(err, &ee) {
			return err
		}
		// Bad input, whichever rollout call found it.
		var ie *rollout.InputError
		if errors.As(err, &ie) {
			return &exitError{code: exitUsage, err: ie.Err}
		}
		if errors.Is(err, context.Canceled) && cmd.Context().Err() != nil {
			err = errors.New("interrupted")
		}
		return &exitError{code: exitRuntime, err: err}
	}
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// connect returns a client for --redis-url or REDIS_URL after checking, with
// a short timeout, that the server answers.
func (a *app) connect(ctx context.Context) (redis.UniversalClient, error) {
	url := a.redisURL
	if url == "" {
		url = a.getenv("REDIS_URL")
	}
	if url == "" {
		return nil, usageError("no Redis to talk to: set --redis-url or REDIS_URL (e.g. redis://localhost:6379/0)")
	}
	rdb, err := redisconn.New(url, redisconn.Options{PoolSize: 64, DialTimeout: 2 * time.Second})
	if err != nil {
		return nil, usageError("redis URL %s: %v", redisconn.Redact(url), err)
	}
	pctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		rdb.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if explained := redisconn.Explain(url, err); explained != err {
			err = explained
		} else if pctx.Err() != nil {
			err = fmt.Errorf("no answer within %s", pingTimeout)
		}
		return nil, fmt.Errorf("redis at %s unreachable: %v", redisconn.Redact(url), err)
	}
	return rdb, nil
}

// manager returns the rollout manager on rdb for --queue.
func (a *app) manager(rdb redis.UniversalClient) *rollout.Manager {
	return rollout.New(rdb, rollout.Options{Queue: a.queue, RateKey: a.getenv("IMPORT_RATE_KEY")})
}

// openRollout connects to Redis and reads a rollout's definition and
// counters, for the commands that act on one rollout. The caller closes rdb.
func (a *app) openRollout(ctx context.Context, id string) (rdb redis.UniversalClient, led *ledger.Ledger, r ledger.Rollout, c ledger.Counts, err error) {
	rdb, err = a.connect(ctx)
	if err != nil {
		return nil, nil, r, c, err
	}
	led = ledger.New(rdb, ledger.Options{})
	r, c, err = readRollout(ctx, a.manager(rdb), id)
	if err != nil {
		rdb.Close()
		return nil, nil, r, c, err
	}
	return rdb, led, r, c, nil
}

// rolloutQueue returns the queue a rollout's tasks are on: the one recorded
// with the rollout, or --queue for a rollout recorded before queues were
// kept. A --queue given explicitly that differs from the recorded one is
// bad usage: acting on it would miss every task of the rollout.
func (a *app) rolloutQueue(r ledger.Rollout) (string, error) {
	switch {
	case r.Queue == "":
		return a.queue, nil
	case a.queueSet && a.queue != r.Queue:
		return "", usageError("--queue %s: rollout %s was enqueued on queue %s; drop --queue or pass --queue %s", a.queue, r.ID, r.Queue, r.Queue)
	}
	return r.Queue, nil
}

// readRollout returns a rollout's definition and counters; an invalid or
// unknown ID is bad input.
func readRollout(ctx context.Context, m *rollout.Manager, id string) (ledger.Rollout, ledger.Counts, error) {
	r, c, err := m.Get(ctx, id)
	if errors.Is(err, rollout.ErrNotFound) {
		return r, c, usageError("rollout %q not found (list rollouts with: enqueue rollouts)", id)
	}
	return r, c, err
}

// oneRollout is the Args check of the commands taking a rollout ID.
func oneRollout(cmd *cobra.Command, args []string) error {
	switch len(args) {
	case 1:
		if err := tasks.ValidateRolloutID(args[0]); err != nil {
			return &exitError{code: exitUsage, err: err}
		}
		return nil
	case 0:
		return usageError("missing rollout ID: enqueue %s ROLLOUT", cmd.Name())
	}
	return usageError("%s takes one rollout ID, got %d arguments", cmd.Name(), len(args))
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
