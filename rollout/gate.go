package rollout

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/versori/import-worker/gate"
)

// GateMeasurer takes one measurement of a PromQL gate; *gate.Measurer
// implements it.
type GateMeasurer interface {
	Measure(ctx context.Context, s gate.Spec) gate.Measurement
}

// GateRun is a wave's gate in progress, kept in the rollout's plan: the
// passes so far, when the next measurement is due and the last one.
type GateRun struct {
	Passes int               `json:"passes"`
	Count  int               `json:"count"`
	NextAt time.Time         `json:"next_at"`
	Last   *gate.Measurement `json:"last,omitempty"`
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
	var run GateRun
	if pr.GateRun != "" {
		if err := json.Unmarshal([]byte(pr.GateRun), &run); err != nil {
			run = GateRun{}
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
	run.Count, run.Last, run.NextAt = spec.Count, &m, now.Add(time.Duration(spec.Interval))
	if m.Verdict == gate.Pass {
		run.Passes++
	}
	b, _ := json.Marshal(run)
	if _, err := r.m.setState(ctx, id, pr.Wave, pr.State, pr.State, "gate_run", string(b)); err != nil {
		return "", "", err
	}
	r.log.Info("gate measured", "rollout", id, "wave", pr.Wave, "verdict", m.Verdict, "passes", run.Passes, "count", run.Count, "reason", m.Reason)
	switch {
	case m.Verdict != gate.Pass:
		return string(m.Verdict), fmt.Sprintf("%s after %d of %d passes: %s", m.Verdict, run.Passes, run.Count, m.Reason), nil
	case run.Passes >= run.Count:
		return gatePassed, "", nil
	}
	return gateWaiting, strconv.Itoa(run.Passes), nil
}
