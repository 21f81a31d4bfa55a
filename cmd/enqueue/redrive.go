package main

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/tasks"
)

// batchSize is how many organisations retry and cancel move in the ledger
// per script call, and then handle in the queue, at a time.
const batchSize = 500

// queueOps is how many queue operations (one round trip each) retry and
// cancel keep in flight.
const queueOps = 16

type retryCmd struct {
	*app
	classes []string
}

// retryResult is the --json output of retry.
type retryResult struct {
	RolloutID string `json:"rollout_id"`
	// Requeued is the number of failed organisations moved back to pending.
	Requeued int `json:"requeued"`
	// Enqueued is the number of fresh tasks enqueued for them.
	Enqueued int `json:"enqueued"`
	// Running is the number whose task was running at the time: the
	// running task picks the organisation up.
	Running int      `json:"running"`
	Classes []string `json:"classes"`
}

func newRetryCmd(a *app) *cobra.Command {
	r := &retryCmd{app: a}
	cmd := &cobra.Command{
		Use:   "retry ROLLOUT [--class CLASS,...]",
		Short: "Re-drive a rollout's failed organisations",
		Long: `retry moves a rollout's failed organisations (all, or those whose last
outcome class is one of --class) back to pending and gives each a fresh task
with its full budget of attempts. Succeeded, pending and cancelled
organisations are not touched. Run it after fixing what made them fail, e.g.
an outage (server_error, exhausted) or a missing permission (forbidden).`,
		Example: `  enqueue retry acme-1.4.0
  enqueue retry acme-1.4.0 --class server_error,exhausted,timeout,network`,
		Args: oneRollout,
		RunE: runE(r.run),
	}
	cmd.Flags().StringSliceVar(&r.classes, "class", nil, "only organisations whose last outcome class is one of these (comma-separated)")
	return cmd
}

func (r *retryCmd) run(cmd *cobra.Command, args []string) error {
	classes, err := parseClasses(r.classes)
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	rdb, led, ro, _, err := r.openRollout(ctx, args[0])
	if err != nil {
		return err
	}
	defer rdb.Close()
	queue, err := r.rolloutQueue(ro)
	if err != nil {
		return err
	}
	res, err := redrive(ctx, rdb, led, ro, classes, queue)
	if err != nil {
		return fmt.Errorf("%v (re-drove %s so far; running retry again is safe)", err, counted(res.Requeued, "failed organisation"))
	}
	if r.jsonOut {
		return r.printJSON(res)
	}
	if res.Requeued == 0 {
		fmt.Fprintf(r.stdout, "rollout %s: no failed organisations to retry\n", ro.ID)
		return nil
	}
	fmt.Fprintf(r.stdout, "rollout %s: %s back to pending (%s enqueued, %s already running)\nwatch it with: enqueue status %s --watch\n",
		ro.ID, counted(res.Requeued, "failed organisation"), counted(res.Enqueued, "task"), thousands(res.Running), ro.ID)
	return nil
}

// redrive moves the failed organisations of classes back to pending and
// gives each a fresh task. A fresh task, rather than asynq's RunTask on the
// archived one, gets the full budget of attempts back (an exhausted task
// would fail for good at its first error) and works when asynq has already
// dropped the archived task (it keeps at most 10,000, for 90 days).
func redrive(ctx context.Context, rdb redis.UniversalClient, led *ledger.Ledger, ro ledger.Rollout, classes []string, queue string) (retryResult, error) {
	res := retryResult{RolloutID: ro.ID, Classes: classes}
	if res.Classes == nil {
		res.Classes = []string{}
	}
	insp := asynq.NewInspectorFromRedisClient(rdb)
	client := asynq.NewClientFromRedisClient(rdb)
	opts := tasks.TaskOptions{Queue: queue}
	var mu sync.Mutex

	handle := func(batch []string) error {
		claimed, err := led.ClaimFailed(ctx, ro.ID, batch)
		res.Requeued += len(claimed)
		if err != nil {
			return err
		}
		// Only what this run claimed gets a task: the others were claimed
		// by a concurrent retry (which enqueues them) or are no longer
		// failed, so the counts printed are what this run did.
		return forEach(ctx, claimed, func(org string) error {
			id := tasks.TaskID(ro.ID, org)
			err := insp.DeleteTask(queue, id)
			if err != nil && !errors.Is(err, asynq.ErrTaskNotFound) && !errors.Is(err, asynq.ErrQueueNotFound) {
				if running(insp, queue, id) {
					mu.Lock()
					res.Running++
					mu.Unlock()
					return nil
				}
				return fmt.Errorf("remove old task of organisation %s: %w", org, err)
			}
			t, err := tasks.NewImportTask(tasks.Payload{RolloutID: ro.ID, OrgID: org, ConnectorID: ro.ConnectorID, Version: ro.Version}, opts)
			if err != nil {
				return err
			}
			_, err = client.EnqueueContext(ctx, t)
			switch {
			case errors.Is(err, asynq.ErrTaskIDConflict):
				// Enqueued by a concurrent retry: it will run.
			case err != nil:
				return fmt.Errorf("enqueue organisation %s: %w", org, err)
			default:
				mu.Lock()
				res.Enqueued++
				mu.Unlock()
			}
			return nil
		})
	}
	err := inBatches(ctx, func(fn func(ledger.Record) error) error {
		return led.Failed(ctx, ro.ID, classes, fn)
	}, handle)
	return res, err
}

type cancelCmd struct{ *app }

// cancelResult is the --json output of cancel.
type cancelResult struct {
	RolloutID string `json:"rollout_id"`
	// Cancelled is the number of pending organisations marked cancelled.
	Cancelled int `json:"cancelled"`
	// TasksDeleted is the number of queued tasks removed.
	TasksDeleted int `json:"tasks_deleted"`
	// Running is the number whose import was in flight: it finishes, and
	// a success is still recorded.
	Running int `json:"running"`
}

func newCancelCmd(a *app) *cobra.Command {
	c := &cancelCmd{app: a}
	return &cobra.Command{
		Use:   "cancel ROLLOUT",
		Short: "Cancel a rollout: remove its queued tasks and mark pending organisations cancelled",
		Long: `cancel marks every pending organisation of a rollout (retrying ones included)
cancelled and removes their queued, scheduled and retrying tasks. Imports
already in flight finish; one that succeeds is recorded as succeeded, since
the organisation does hold the version. Succeeded and failed organisations
are not touched. Re-enqueueing the same rollout does not revive cancelled
organisations; start a new rollout for them.`,
		Example: `  enqueue cancel acme-1.4.0
  enqueue cancel acme-1.4.0 --json`,
		Args: oneRollout,
		RunE: runE(c.run),
	}
}

func (c *cancelCmd) run(cmd *cobra.Command, args []string) error {
	ctx := cmd.Context()
	rdb, led, ro, _, err := c.openRollout(ctx, args[0])
	if err != nil {
		return err
	}
	defer rdb.Close()
	queue, err := c.rolloutQueue(ro)
	if err != nil {
		return err
	}
	res, err := cancelRollout(ctx, rdb, led, ro.ID, queue)
	if err != nil {
		return fmt.Errorf("%v (cancelled %s so far; running cancel again is safe)", err, counted(res.Cancelled, "organisation"))
	}
	if c.jsonOut {
		return c.printJSON(res)
	}
	fmt.Fprintf(c.stdout, "rollout %s: %s cancelled, %s removed, %s in flight left to finish\n",
		ro.ID, counted(res.Cancelled, "pending organisation"), counted(res.TasksDeleted, "queued task"), counted(res.Running, "import"))
	return nil
}

// cancelRollout marks the pending organisations cancelled first, so a task
// that starts meanwhile finds its record cancelled and skips the call, then
// removes their tasks.
func cancelRollout(ctx context.Context, rdb redis.UniversalClient, led *ledger.Ledger, id, queue string) (cancelResult, error) {
	res := cancelResult{RolloutID: id}
	insp := asynq.NewInspectorFromRedisClient(rdb)
	var mu sync.Mutex
	handle := func(batch []string) error {
		n, err := led.Cancel(ctx, id, batch)
		res.Cancelled += n
		if err != nil {
			return err
		}
		return forEach(ctx, batch, func(org string) error {
			tid := tasks.TaskID(id, org)
			err := insp.DeleteTask(queue, tid)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				res.TasksDeleted++
			case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
			case running(insp, queue, tid):
				res.Running++
			default:
				return fmt.Errorf("remove task of organisation %s: %w", org, err)
			}
			return nil
		})
	}
	err := inBatches(ctx, func(fn func(ledger.Record) error) error {
		return led.ScanFilter(ctx, id, ledger.Filter{States: []ledger.State{ledger.Pending}}, fn)
	}, handle)
	return res, err
}

// running reports whether a task is being processed right now; asynq
// refuses to delete such a task.
func running(insp *asynq.Inspector, queue, id string) bool {
	info, err := insp.GetTaskInfo(queue, id)
	return err == nil && info.State == asynq.TaskStateActive
}

// inBatches collects the organisation IDs a scan yields into batches of
// batchSize and hands each to handle. Handling a batch may change the
// records being scanned, which HSCAN tolerates.
func inBatches(ctx context.Context, scan func(func(ledger.Record) error) error, handle func([]string) error) error {
	batch := make([]string, 0, batchSize)
	err := scan(func(rec ledger.Record) error {
		batch = append(batch, rec.OrgID)
		if len(batch) < batchSize {
			return nil
		}
		err := handle(batch)
		batch = batch[:0]
		return err
	})
	if err == nil && len(batch) > 0 {
		err = handle(batch)
	}
	if err == nil {
		err = ctx.Err()
	}
	return err
}

// forEach calls fn for every item, queueOps at a time, and returns the first
// error.
func forEach(ctx context.Context, items []string, fn func(string) error) error {
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		next     = make(chan string)
	)
	for range min(queueOps, len(items)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range next {
				if err := fn(it); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for _, it := range items {
		mu.Lock()
		stop := firstErr != nil
		mu.Unlock()
		if stop || ctx.Err() != nil {
			break
		}
		next <- it
	}
	close(next)
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return firstErr
}
