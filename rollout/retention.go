package rollout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// Retention: a finished rollout (nothing pending: succeeded + failed +
// cancelled = total) is kept for the retention (ROLLOUT_RETENTION, default
// DefaultRetention), after which every key of it expires from Redis: its
// definition, records, counters and callback keys (Keys lists them).
//
//   - The worker applies it in its finish hook, after every outcome
//     (OrganisationFinished -> NotifyIfDone -> settle), for one script call
//     that reads the counters and sets the same PEXPIRE on every key when
//     nothing is pending; cancel ends in NotifyIfDone too. A late outcome
//     of a finished rollout (an import in flight at its cancel) starts the
//     retention again.
//   - A re-drive (Retry, or Create of an existing rollout, as a re-run
//     enqueue does) first removes the expiry (revive: PERSIST, atomic with
//     the check that the definition still exists) and stops with
//     ErrNotFound when the rollout has expired already, so it never writes
//     records of a rollout that is gone; when it is done it applies the
//     retention again (settle: PERSIST while anything is pending, the
//     expiry when nothing is), which also undoes an expiry a concurrent
//     late outcome set between the two. The one window left: a late
//     outcome's hook re-sets the expiry after revive, and the retention
//     elapses before the re-drive's first requeue; that needs a retention
//     shorter than that gap (milliseconds), so MinRetention is 1 s and
//     production values are days.
//   - The workers publish their retention in Redis at start
//     (PublishRetention), so the CLI and the API, which do not know
//     ROLLOUT_RETENTION, apply and show the same one; the status reads the
//     expiry itself from Redis (PTTL of the definition).
//   - The index of rollouts drops rollouts whose definition is gone: List
//     skips and removes them, and the workers prune it periodically
//     (RunJanitor).

// NoRetention, as Options.Retention, keeps finished rollouts for ever
// (ROLLOUT_RETENTION=off or 0).
const NoRetention time.Duration = -1

// RetentionEnv is the variable the worker reads its retention from.
const RetentionEnv = "ROLLOUT_RETENTION"

// ErrActive: the rollout has pending organisations, so Remove refuses it
// without Force. The error is an *ActiveError.
var ErrActive = errors.New("rollout is active")

// ActiveError is Remove's refusal of an active rollout.
type ActiveError struct {
	RolloutID string
	Pending   int64
}

func (e *ActiveError) Error() string {
	return fmt.Sprintf("rollout %s is active (%d organisation(s) pending): cancel it first (enqueue cancel %s), or delete with force to cancel and delete at once", e.RolloutID, e.Pending, e.RolloutID)
}

// Is makes errors.Is(err, ErrActive) hold.
func (e *ActiveError) Is(target error) bool { return target == ErrActive }

// ParseRetention parses a ROLLOUT_RETENTION value: a Go duration of at
// least MinRetention ("720h", "168h30m"), or "off" or a zero duration
// ("0", "0s") for NoRetention; "" is DefaultRetention. A bare number is
// refused: "30" may mean seconds or days.
func ParseRetention(v string) (time.Duration, error) {
	v = strings.TrimSpace(v)
	switch strings.ToLower(v) {
	case "":
		return DefaultRetention, nil
	case "off", "0":
		return NoRetention, nil
	}
	if _, err := strconv.ParseFloat(v, 64); err == nil {
		return 0, fmt.Errorf("%q has no unit: want a duration such as 720h (30 days), or off", v)
	}
	d, err := time.ParseDuration(v)
	switch {
	case err != nil:
		return 0, fmt.Errorf("%q is not a duration: want e.g. 720h (30 days), or off to keep finished rollouts for ever", v)
	case d == 0:
		return NoRetention, nil
	case d < 0:
		return 0, fmt.Errorf("%q is negative: want a duration such as 720h, or off", v)
	case d < MinRetention:
		return 0, fmt.Errorf("%q is shorter than the %s allowed (or off)", v, MinRetention)
	}
	return d, nil
}

// RetentionFromEnv reads ROLLOUT_RETENTION through getenv; the error names
// the variable.
func RetentionFromEnv(getenv func(string) string) (time.Duration, error) {
	d, err := ParseRetention(getenv(RetentionEnv))
	if err != nil {
		return 0, fmt.Errorf("%s: %v", RetentionEnv, err)
	}
	return d, nil
}

// FormatRetention is d as ROLLOUT_RETENTION would spell it: "off" for
// NoRetention.
func FormatRetention(d time.Duration) string {
	if d <= 0 {
		return "off"
	}
	return d.String()
}

// Keys returns every Redis key of rollout id, the ledger's definition
// first: the one list that retention and delete act on. A key that a
// feature adds about a rollout (under its hash tag, ledger.KeyPrefix) is
// added to otherKeys.
func (m *Manager) Keys(id string) []string {
	return append(m.led.Keys(id), m.otherKeys(id)...)
}

// otherKeys are the rollout's keys besides the ledger's own.
func (m *Manager) otherKeys(id string) []string {
	return []string{m.callbackKey(id), m.deliveredKey(id), m.roundKey(id), m.planKey(id)}
}

// retentionKey holds the workers' retention in milliseconds, 0 for off.
func (m *Manager) retentionKey() string { return m.prefix() + ":retention_ms" }

// Retention returns the retention this Manager applies: Options.Retention,
// or the one the workers published, or DefaultRetention. NoRetention means
// kept for ever.
func (m *Manager) Retention(ctx context.Context) (time.Duration, error) {
	if m.opts.Retention != 0 {
		return m.opts.Retention, nil
	}
	v, err := m.rdb.Get(ctx, m.retentionKey()).Result()
	if errors.Is(err, redis.Nil) {
		return DefaultRetention, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read the fleet's retention: %w", err)
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms < 0 {
		return 0, fmt.Errorf("the fleet's retention %s = %q is not a number of milliseconds", m.retentionKey(), v)
	}
	if ms == 0 {
		return NoRetention, nil
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// PublishRetention records the Manager's retention in Redis for the CLI and
// the API (the worker calls it at start), and returns the value it
// replaced, if different ("" when none or the same). The workers of one
// ledger should share one setting: the last one started wins.
func (m *Manager) PublishRetention(ctx context.Context) (replaced string, err error) {
	d := m.opts.Retention
	if d == 0 {
		d = DefaultRetention
	}
	ms := int64(0)
	if d > 0 {
		ms = d.Milliseconds()
	}
	old, err := m.rdb.SetArgs(ctx, m.retentionKey(), ms, redis.SetArgs{Get: true}).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return "", fmt.Errorf("publish the retention: %w", err)
	}
	if old == "" || old == strconv.FormatInt(ms, 10) {
		return "", nil
	}
	if n, perr := strconv.ParseInt(old, 10, 64); perr == nil {
		return FormatRetention(time.Duration(n) * time.Millisecond), nil
	}
	return old, nil
}

// settle applies the retention to rollout id after something that may have
// finished it: the expiry when nothing is pending, none while anything is.
// known is false when the retention is off (nothing was read); done is
// false for a rollout that is gone.
func (m *Manager) settle(ctx context.Context, id string) (done, known bool, err error) {
	ttl, err := m.Retention(ctx)
	if err != nil || ttl <= 0 {
		return false, false, err
	}
	res, err := m.led.Retain(ctx, id, ttl, false, m.otherKeys(id)...)
	if errors.Is(err, ErrNotFound) {
		return false, true, nil
	}
	if err != nil {
		return false, true, err
	}
	return res.Done(), true, nil
}

// revive removes the expiry of rollout id before a re-drive; it wraps
// ErrNotFound, and writes nothing, when the rollout has expired (or never
// existed).
func (m *Manager) revive(ctx context.Context, id string) error {
	return m.led.Persist(ctx, id, m.otherKeys(id)...)
}

// decorateRetention fills the status fields of the retention: the
// retention in force, and when the rollout expires (PTTL of its
// definition; absent while it is active).
func (m *Manager) decorateRetention(ctx context.Context, st *Status) {
	st.RetentionSeconds = 0
	st.ExpiresAt = nil
	if ttl, err := m.Retention(ctx); err == nil && ttl > 0 {
		st.RetentionSeconds = int64(ttl / time.Second)
	}
	if d, ok, err := m.led.Expiry(ctx, st.RolloutID); err == nil && ok {
		t := m.opts.Now().Add(d).UTC().Truncate(time.Second)
		st.ExpiresAt = &t
	}
}

// Prune removes from the index of rollouts those whose keys have expired,
// and gives the retention to finished rollouts that have none yet (they
// finished before there was one, or while it was off). It reads only the
// rollouts created more than the retention ago: no other can have expired.
// It does nothing when the retention is off.
func (m *Manager) Prune(ctx context.Context) (removed int, err error) {
	ttl, err := m.Retention(ctx)
	if err != nil || ttl <= 0 {
		return 0, err
	}
	return m.led.PruneIndex(ctx, m.opts.Now().Add(-ttl), func(ids []string) error {
		for _, id := range ids {
			if _, err := m.led.Retain(ctx, id, ttl, true, m.otherKeys(id)...); err != nil && !errors.Is(err, ErrNotFound) {
				return err
			}
		}
		return nil
	})
}

// JanitorInterval is how often RunJanitor prunes for a retention: half of
// it, from 1 s to 10 minutes.
func JanitorInterval(retention time.Duration) time.Duration {
	return min(max(retention/2, time.Second), 10*time.Minute)
}

// RunJanitor publishes the Manager's retention, then prunes the index
// every JanitorInterval until ctx ends. The worker runs it; every replica
// may, as both steps are idempotent.
func (m *Manager) RunJanitor(ctx context.Context, log *slog.Logger) {
	for {
		replaced, err := m.PublishRetention(ctx)
		if err == nil {
			if replaced != "" {
				log.Warn("replaced the fleet's retention published by another worker: workers sharing a Redis should share ROLLOUT_RETENTION",
					"was", replaced, "now", FormatRetention(m.opts.Retention))
			}
			break
		}
		log.Warn("could not publish the retention; trying again", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Second):
		}
	}
	ttl, err := m.Retention(ctx)
	if err != nil || ttl <= 0 {
		return // off: nothing expires, nothing to prune
	}
	t := time.NewTicker(JanitorInterval(ttl))
	defer t.Stop()
	for {
		if n, err := m.Prune(ctx); err != nil && ctx.Err() == nil {
			log.Warn("pruning expired rollouts failed; trying again later", "err", err)
		} else if n > 0 {
			log.Info("pruned expired rollouts from the index", "rollouts", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// RemoveOptions configure Remove.
type RemoveOptions struct {
	// Force removes an active rollout too, cancelling it first.
	Force bool
	// Wait bounds the wait for the rollout's imports in flight to end
	// before its keys are removed. Default DefaultRemoveWait.
	Wait time.Duration
}

// DefaultRemoveWait is how long Remove waits for imports in flight: a
// task's deadline.
const DefaultRemoveWait = 2 * time.Minute

// RemoveResult is what Remove did: the answer of DELETE /v1/rollouts/{id}
// and `enqueue delete --json`.
type RemoveResult struct {
	RolloutID string `json:"rollout_id"`
	Deleted   bool   `json:"deleted"`
	// Cancelled and TasksDeleted count what the cancel of an active
	// rollout (Force) did.
	Cancelled    int `json:"cancelled"`
	TasksDeleted int `json:"tasks_deleted"`
}

// Remove deletes rollout id at once: every key (Keys) and its index entry.
// An active rollout (anything pending) is refused with an *ActiveError
// unless opts.Force; then it is cancelled first (its queued tasks removed
// and its pending records marked cancelled), Remove waits for its imports
// in flight to end and removes the tasks they handed back to the queue, so
// no worker registers the rollout again after it is gone. An unknown
// rollout wraps ErrNotFound.
func (m *Manager) Remove(ctx context.Context, id string, opts RemoveOptions) (RemoveResult, error) {
	res := RemoveResult{RolloutID: id}
	r, c, err := m.Get(ctx, id)
	if err != nil {
		return res, err
	}
	if c.Pending > 0 && !opts.Force {
		return res, &ActiveError{RolloutID: id, Pending: c.Pending}
	}
	queue := m.QueueOf(r)
	if c.Pending > 0 {
		cr, err := m.CancelOn(ctx, id, queue)
		res.Cancelled, res.TasksDeleted = cr.Cancelled, cr.TasksDeleted
		if err != nil {
			return res, err
		}
	}
	if opts.Wait <= 0 {
		opts.Wait = DefaultRemoveWait
	}
	if err := m.drain(ctx, id, queue, opts.Wait); err != nil {
		return res, err
	}
	existed, err := m.led.DeleteWith(ctx, id, m.otherKeys(id)...)
	res.Deleted = existed
	return res, err
}

// drain waits until no task of rollout id is running on queue, then
// removes the rollout's tasks that went back to the retry or scheduled
// sets (an import handed back as rate limited while the cancel ran).
func (m *Manager) drain(ctx context.Context, id, queue string, wait time.Duration) error {
	mine := func(tid string) bool {
		return strings.HasPrefix(tid, id+":") || tid == CallbackTaskID(id) || strings.HasPrefix(tid, CallbackTaskID(id)+":")
	}
	deadline := time.Now().Add(wait)
	for {
		running := 0
		for page := 1; ; page++ {
			ts, err := m.insp.ListActiveTasks(queue, asynq.Page(page), asynq.PageSize(1000))
			if errors.Is(err, asynq.ErrQueueNotFound) {
				break
			}
			if err != nil {
				return fmt.Errorf("list running tasks: %w", err)
			}
			for _, t := range ts {
				if mine(t.ID) {
					running++
				}
			}
			if len(ts) < 1000 {
				break
			}
		}
		if running == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d import(s) of rollout %s still running after %s; nothing deleted, try again", running, id, wait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	// The callback task has nothing left to send.
	round, err := m.callbackRound(ctx, id)
	if err != nil {
		return err
	}
	for r := range round + 1 {
		if err := m.insp.DeleteTask(queue, CallbackTaskIDOf(id, r)); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) && !errors.Is(err, asynq.ErrQueueNotFound) {
			return fmt.Errorf("remove the callback task: %w", err)
		}
	}
	for _, list := range []func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error){m.insp.ListRetryTasks, m.insp.ListScheduledTasks} {
		var doomed []string
		for page := 1; ; page++ {
			ts, err := list(queue, asynq.Page(page), asynq.PageSize(1000))
			if errors.Is(err, asynq.ErrQueueNotFound) {
				break
			}
			if err != nil {
				return fmt.Errorf("list queued tasks: %w", err)
			}
			for _, t := range ts {
				if mine(t.ID) {
					doomed = append(doomed, t.ID)
				}
			}
			if len(ts) < 1000 {
				break
			}
		}
		for _, tid := range doomed {
			if err := m.insp.DeleteTask(queue, tid); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) {
				return fmt.Errorf("remove task %s: %w", tid, err)
			}
		}
	}
	return nil
}
