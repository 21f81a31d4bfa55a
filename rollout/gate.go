package rollout

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/versori/import-worker/gate"
)

// GateMeasurer takes one measurement of a PromQL gate; *gate.Measurer
// implements it.
type GateMeasurer interface {
	Measure(ctx context.Context, s gate.Spec) gate.Measurement
}

// GateRun is a wave's gate in progress, kept in the rollout's plan: the
// measurements so far (gate.Run) and when the next is due.
type GateRun struct {
	gate.Run
	NextAt time.Time `json:"next_at"`
}

// gate takes the wave's next gate measurement when one is due and reports
// waiting (more to take), passed, or the verdict and reason that halt the
// rollout. Inconclusive halts as failing does: it never passes.
func (r *Releaser) gate(ctx context.Context, id string, pr Progress, now time.Time) (verdict, reason string, err error) {
	var spec gate.Spec
	if err := json.Unmarshal([]byte(pr.Gate), &spec); err != nil {
		return string(gate.Inconclusive), fmt.Sprintf("unreadable (%v)", err), nil
	}
	spec = spec.WithDefaults()
	run := GateRun{Run: gate.NewRun(spec)}
	if pr.GateRun != "" {
		if err := json.Unmarshal([]byte(pr.GateRun), &run); err != nil {
			run = GateRun{Run: gate.NewRun(spec)}
		}
	}
	if now.Before(run.NextAt) {
		return gateWaiting, "", nil
	}
	var m gate.Measurement
	if r.cfg.Gate == nil {
		m = gate.Measurement{Verdict: gate.Inconclusive, Reason: "no Prometheus URL configured (" + gate.EnvURL + ")", At: now}
	} else {
		mctx, cancel := context.WithTimeout(ctx, max(time.Second, r.cfg.Lease))
		m = r.cfg.Gate.Measure(mctx, spec)
		cancel()
	}
	verdict = string(run.Add(m))
	run.NextAt = now.Add(time.Duration(spec.Interval))
	b, err := json.Marshal(run)
	if err != nil {
		return "", "", fmt.Errorf("gate of rollout %s: %w", id, err)
	}
	if _, err := r.m.setState(ctx, id, pr.Wave, pr.State, pr.State, "gate_run", string(b)); err != nil {
		return "", "", err
	}
	r.log.Info("gate measured", "rollout", id, "wave", pr.Wave, "verdict", m.Verdict, "passes", run.Passes, "count", run.Count, "reason", m.Reason)
	switch gate.Verdict(verdict) {
	case gate.Pass:
		return gatePassed, "", nil
	case gate.Pending:
		return gateWaiting, "", nil
	}
	return verdict, fmt.Sprintf("%s after %d of %d passes: %s", verdict, run.Passes, run.Count, m.Reason), nil
}
