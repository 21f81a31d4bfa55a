package rollout

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/hibiken/asynq"

	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/tasks"
	"github.com/versori/import-worker/versori"
)

// RetryResult is what Retry did.
type RetryResult struct {
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

// Retry moves the failed organisations of rollout id whose last outcome
// class is one of classes (all when empty) back to pending and gives each a
// fresh task, on the rollout's queue. Calling it again, or twice at once,
// is safe: each organisation is re-driven once.
func (m *Manager) Retry(ctx context.Context, id string, classes []string) (RetryResult, error) {
	for i, c := range classes {
		var err error
		if classes[i], err = ParseClass(c); err != nil {
			return RetryResult{RolloutID: id}, err
		}
	}
	r, _, err := m.Get(ctx, id)
	if err != nil {
		return RetryResult{RolloutID: id}, err
	}
	return m.RetryOn(ctx, r, classes, m.QueueOf(r))
}

// RetryOn is Retry for a rollout already read, on queue.
//
// A fresh task, rather than asynq's RunTask on the archived one, gets the
// full budget of attempts back (an exhausted task would fail for good at
// its first error) and works when asynq has already dropped the archived
// task (it keeps at most 10,000, for 90 days).
func (m *Manager) RetryOn(ctx context.Context, ro ledger.Rollout, classes []string, queue string) (RetryResult, error) {
	res := RetryResult{RolloutID: ro.ID, Classes: classes}
	if res.Classes == nil {
		res.Classes = []string{}
	}
	// Retention: no expiry while re-driven, or stop if expired already.
	if err := m.revive(ctx, ro.ID); err != nil {
		return res, err
	}
	defer m.settle(context.WithoutCancel(ctx), ro.ID)
	// Before the first organisation is requeued, so its finish sees the
	// new round.
	if err := m.nextCallbackRound(ctx, ro.ID); err != nil {
		return res, err
	}
	opts := tasks.TaskOptions{Queue: queue}
	var mu sync.Mutex
	handle := func(batch []versori.OrgID) error {
		claimed, err := m.led.ClaimFailed(ctx, ro.ID, batch)
		res.Requeued += len(claimed)
		if err != nil {
			return err
		}
		// Only what this run claimed gets a task: the others were claimed
		// by a concurrent retry (which enqueues them) or are no longer
		// failed, so the counts are what this run did.
		return forEach(ctx, claimed, func(org versori.OrgID) error {
			id := tasks.TaskID(ro.ID, org)
			err := m.insp.DeleteTask(queue, id)
			if err != nil && !errors.Is(err, asynq.ErrTaskNotFound) && !errors.Is(err, asynq.ErrQueueNotFound) {
				if m.running(queue, id, err) {
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
			_, err = m.client.EnqueueContext(ctx, t)
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
		return m.led.Failed(ctx, ro.ID, classes, fn)
	}, handle)
	return res, err
}

// CancelResult is what Cancel did.
type CancelResult struct {
	RolloutID string `json:"rollout_id"`
	// Cancelled is the number of pending organisations marked cancelled.
	Cancelled int `json:"cancelled"`
	// TasksDeleted is the number of queued tasks removed.
	TasksDeleted int `json:"tasks_deleted"`
	// Running is the number whose import was in flight: it finishes, and
	// a success is still recorded.
	Running int `json:"running"`
}

// Cancel marks every pending organisation of rollout id (retrying ones
// included) cancelled, then removes their tasks, so a task that starts
// meanwhile finds its record cancelled and skips the call. Imports in
// flight finish. A rollout with a callback that is done afterwards gets it.
func (m *Manager) Cancel(ctx context.Context, id string) (CancelResult, error) {
	r, _, err := m.Get(ctx, id)
	if err != nil {
		return CancelResult{RolloutID: id}, err
	}
	return m.CancelOn(ctx, r.ID, m.QueueOf(r))
}

// CancelOn is Cancel on queue.
func (m *Manager) CancelOn(ctx context.Context, id, queue string) (CancelResult, error) {
	res := CancelResult{RolloutID: id}
	// First, so the releaser hands nothing more to the queue.
	if err := m.stopRelease(ctx, id, queue); err != nil {
		return res, err
	}
	// Organisations never released have no task to remove: skipping them
	// saves a round trip each (a million for a large backlog).
	released := int64(-1)
	if pr, err := m.Progress(ctx, id); err == nil {
		released = pr.Released
	}
	var mu sync.Mutex
	unreleased := map[versori.OrgID]bool{}
	handle := func(batch []versori.OrgID) error {
		n, err := m.led.Cancel(ctx, id, batch)
		res.Cancelled += n
		if err != nil {
			return err
		}
		queued := batch[:0:0]
		for _, org := range batch {
			if !unreleased[org] {
				queued = append(queued, org)
			}
			delete(unreleased, org)
		}
		return forEach(ctx, queued, func(org versori.OrgID) error {
			tid := tasks.TaskID(id, org)
			err := m.insp.DeleteTask(queue, tid)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				res.TasksDeleted++
			case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
			case m.running(queue, tid, err):
				res.Running++
			default:
				return fmt.Errorf("remove task of organisation %s: %w", org, err)
			}
			return nil
		})
	}
	err := inBatches(ctx, func(fn func(ledger.Record) error) error {
		return m.led.ScanFilter(ctx, id, ledger.Filter{States: []ledger.State{ledger.Pending}}, func(rec ledger.Record) error {
			if released >= 0 && rec.Position > released && rec.Attempts == 0 {
				unreleased[rec.OrgID] = true
			}
			return fn(rec)
		})
	}, handle)
	if err != nil {
		return res, err
	}
	_, err = m.NotifyIfDone(ctx, id)
	return res, err
}

// Delete cancels a rollout (removing its queued tasks, which would
// otherwise register it again) and removes it and its records from the
// ledger: Remove with Force. It reports whether the rollout existed.
func (m *Manager) Delete(ctx context.Context, id string) (bool, error) {
	res, err := m.Remove(ctx, id, RemoveOptions{Force: true})
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return res.Deleted, err
}

// running reports whether DeleteTask's err refused task id because it is
// being processed right now. asynq says so in the error (its type is not
// exported); asking the task's state afterwards instead can find it
// finished a moment later, and turn a harmless refusal into an error.
func (m *Manager) running(queue, id string, err error) bool {
	if strings.Contains(err.Error(), "active state") {
		return true
	}
	info, ierr := m.insp.GetTaskInfo(queue, id)
	return ierr == nil && info.State == asynq.TaskStateActive
}

// inBatches collects the organisation IDs a scan yields into batches of
// DefaultBatchSize and hands each to handle. Handling a batch may change
// the records being scanned, which HSCAN tolerates.
func inBatches(ctx context.Context, scan func(func(ledger.Record) error) error, handle func([]versori.OrgID) error) error {
	batch := make([]versori.OrgID, 0, DefaultBatchSize)
	err := scan(func(rec ledger.Record) error {
		batch = append(batch, rec.OrgID)
		if len(batch) < DefaultBatchSize {
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

// forEach calls fn for every item, DefaultQueueOps at a time, and returns
// the first error.
func forEach(ctx context.Context, items []versori.OrgID, fn func(versori.OrgID) error) error {
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		next     = make(chan versori.OrgID)
	)
	for range min(DefaultQueueOps, len(items)) {
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
