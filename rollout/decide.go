package rollout

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// decide checks every rollout with a wave decision ahead: a finished wave
// whose failed share is above the plan's ratio halts the rollout; one
// within it bakes, then passes its PromQL gate (if any), then the next
// wave is released.
func (r *Releaser) decide(ctx context.Context) error {
	ids, err := r.m.rdb.SMembers(ctx, r.m.wavesKey(r.cfg.Queue)).Result()
	if err != nil {
		return fmt.Errorf("rollouts with waves: %w", err)
	}
	var errs []error
	for _, id := range ids {
		if err := r.decideOne(ctx, id); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (r *Releaser) decideOne(ctx context.Context, id string) error {
	pr, err := r.m.Progress(ctx, id)
	if errors.Is(err, errNoPlan) {
		return r.settle(ctx, id)
	}
	if err != nil {
		return err
	}
	_, c, err := r.m.led.Rollout(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return r.settle(ctx, id)
	}
	if err != nil {
		return err
	}
	r.mu.Lock()
	if seen, ok := r.waveSeen[id]; ok && pr.Wave > seen {
		r.cfg.Observer.WaveEvent("released")
	}
	r.waveSeen[id] = pr.Wave
	r.mu.Unlock()
	switch {
	case pr.State == StateCancelled, pr.State == StateHalted, pr.Wave >= pr.WaveCount():
		// Nothing to decide: promote or a re-run puts it back.
		return r.settle(ctx, id)
	case !waveFinished(pr, c.Total, c.Pending):
		return nil
	}
	now := r.m.opts.Now()
	finished := c.Succeeded + c.Failed + c.Cancelled
	failed, done := c.Failed-pr.FailedAtWave, finished-pr.FinishedAtWave
	if done > 0 && float64(failed)/float64(done) > pr.MaxFailureRatio {
		reason := fmt.Sprintf("wave %d of %d: %d of %d finished organisations failed (%.3f, above the maximum failure ratio %s)",
			pr.Wave, pr.WaveCount(), failed, done, float64(failed)/float64(done), strconv.FormatFloat(pr.MaxFailureRatio, 'f', -1, 64))
		return r.halt(ctx, id, pr, reason)
	}
	if pr.State == StateRunning {
		if pr.Bake > 0 || pr.Gate != "" {
			until := now.Add(pr.Bake)
			ok, err := r.m.setState(ctx, id, pr.Wave, StateRunning, StateBaking, "bake_until_ms", strconv.FormatInt(until.UnixMilli(), 10))
			if err == nil && ok {
				r.cfg.Observer.WaveEvent("baking")
				r.log.Info("wave finished; baking", "rollout", id, "wave", pr.Wave, "failed", failed, "finished", done, "bake", pr.Bake.String())
			}
			return err
		}
	} else if now.Before(pr.BakeUntil) {
		return nil
	}
	if pr.Gate != "" {
		verdict, reason, err := r.gate(ctx, id, pr, now)
		switch {
		case err != nil:
			return err
		case verdict == gateWaiting:
			return nil
		case verdict != gatePassed:
			return r.halt(ctx, id, pr, fmt.Sprintf("wave %d of %d: gate %s", pr.Wave, pr.WaveCount(), reason))
		}
		r.cfg.Observer.WaveEvent("gate_passed")
	}
	return r.advance(ctx, id, pr, c.Failed, finished, "gate held")
}

// waveFinished reports whether the current wave is wholly released and
// none of the organisations released so far is pending: those left
// pending are the unreleased ones.
func waveFinished(pr Progress, total, pending int64) bool {
	return pr.Limit >= 0 && pr.Released >= pr.Limit && pending <= total-pr.Released
}

// advance releases the wave after pr.Wave.
func (r *Releaser) advance(ctx context.Context, id string, pr Progress, failed, finished int64, why string) error {
	ok, err := r.m.advance(ctx, id, r.cfg.Queue, pr, failed, finished)
	if err != nil || !ok {
		return err
	}
	r.mu.Lock()
	r.waveSeen[id] = pr.Wave + 1
	r.mu.Unlock()
	r.cfg.Observer.WaveEvent("released")
	r.log.Info("wave released", "rollout", id, "wave", pr.Wave+1, "waves", pr.WaveCount(), "why", why)
	return nil
}

// advance releases the wave after pr.Wave, if it still is the last
// released, and activates the rollout on its queue. failed and finished
// are the rollout's counts now, from which the new wave's ratio is
// measured.
func (m *Manager) advance(ctx context.Context, id, queue string, pr Progress, failed, finished int64) (bool, error) {
	n, err := advanceScript.Run(ctx, m.rdb, []string{m.planKey(id)},
		pr.Wave, pr.limit(pr.Wave+1), failed, finished, m.opts.Now().UnixMilli()).Int()
	if err != nil {
		return false, fmt.Errorf("release wave %d of rollout %s: %w", pr.Wave+1, id, err)
	}
	if n != 1 {
		return false, nil
	}
	if err := m.rdb.SRem(ctx, m.haltedKey(queue), id).Err(); err != nil {
		return true, fmt.Errorf("rollout %s: %w", id, err)
	}
	return true, m.activate(ctx, id, queue, pr.Wave+1 < pr.WaveCount())
}

func (r *Releaser) halt(ctx context.Context, id string, pr Progress, reason string) error {
	ok, err := r.m.setState(ctx, id, pr.Wave, pr.State, StateHalted, "halt_reason", reason, "halted_at_ms", strconv.FormatInt(r.m.opts.Now().UnixMilli(), 10))
	if err != nil || !ok {
		return err
	}
	if err := r.m.rdb.SAdd(ctx, r.m.haltedKey(r.cfg.Queue), id).Err(); err != nil {
		return fmt.Errorf("rollout %s: %w", id, err)
	}
	r.cfg.Observer.WaveEvent("halted")
	r.log.Warn("rollout halted", "rollout", id, "wave", pr.Wave, "reason", reason)
	if err := r.settle(ctx, id); err != nil {
		return err
	}
	_, err = r.m.notify(ctx, id, true)
	return err
}

// settle removes a rollout from the set of those with a decision ahead.
func (r *Releaser) settle(ctx context.Context, id string) error {
	r.mu.Lock()
	delete(r.waveSeen, id)
	r.mu.Unlock()
	if err := r.m.rdb.SRem(ctx, r.m.wavesKey(r.cfg.Queue), id).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("rollout %s: %w", id, err)
	}
	return nil
}

// haltedKey is the set of halted rollouts of a queue (an alert's metric).
func (m *Manager) haltedKey(queue string) string {
	return m.prefix() + ":release:{" + queue + "}:halted"
}

// HaltedCount is the number of halted rollouts on queue.
func (m *Manager) HaltedCount(ctx context.Context, queue string) (int64, error) {
	return m.rdb.SCard(ctx, m.haltedKey(queue)).Result()
}

// Gate verdicts of Releaser.gate.
const (
	gateWaiting = "waiting"
	gatePassed  = "passed"
)
