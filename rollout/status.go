package rollout

import (
	"context"
	"time"

	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/versori"
)

// Breakdown splits a rollout's organisations into disjoint states. It is
// the one definition of pending and retrying:
//
//   - Pending: not settled yet, whether waiting for a first attempt or
//     retrying; a rollout is done when Pending is 0.
//   - Retrying: the part of Pending that has had a failed attempt and has a
//     retry to come.
//   - Waiting: the rest of Pending, not attempted yet (Pending - Retrying).
//
// The status (CLI and API) shows Pending and Retrying; the metrics export
// Waiting as state "pending" and Retrying as state "retrying", so a stacked
// graph of the metric's states adds up to Total.
type Breakdown struct {
	Total, Pending, Waiting, Retrying, Succeeded, Failed, Cancelled int64
}

// BreakdownOf returns c's breakdown.
func BreakdownOf(c ledger.Counts) Breakdown {
	return Breakdown{
		Total: c.Total, Pending: c.Pending, Waiting: c.Pending - c.Retrying, Retrying: c.Retrying,
		Succeeded: c.Succeeded, Failed: c.Failed, Cancelled: c.Cancelled,
	}
}

// Done reports whether nothing is pending (retrying organisations are
// pending).
func (b Breakdown) Done() bool { return b.Pending == 0 }

// Status is a rollout's status: what `enqueue status --json` prints, what
// GET /v1/rollouts/{id} answers and what a completion callback carries. The
// first six fields are the contract of design.md.
type Status struct {
	RolloutID string `json:"rollout_id"`
	Total     int64  `json:"total"`
	Pending   int64  `json:"pending"`
	Succeeded int64  `json:"succeeded"`
	Failed    int64  `json:"failed"`
	// Done is true when nothing is pending or retrying.
	Done      bool  `json:"done"`
	Cancelled int64 `json:"cancelled"`
	// Retrying is the part of Pending that has had a failed attempt.
	Retrying        int64            `json:"retrying"`
	ByClass         map[string]int64 `json:"by_class"`
	RetryingByClass map[string]int64 `json:"retrying_by_class"`
	// ByVersion counts succeeded organisations by the version the API
	// imported; more than one key means the rollout straddled a new
	// publication.
	ByVersion   map[string]int64 `json:"by_version"`
	ConnectorID string           `json:"connector_id"`
	Version     string           `json:"version"`
	CreatedAt   time.Time        `json:"created_at"`
	// QueuePaused is true while the queue is paused for the fleet (after a
	// 401, or by an operator): nothing progresses until it is resumed.
	QueuePaused bool `json:"queue_paused"`
	// RatePerSecond is organisations finished per second: the average since
	// the rollout was created, or, with --watch, the recent rate.
	RatePerSecond float64 `json:"rate_per_second"`
	// ETASeconds is the time left at that rate; absent when unknown.
	ETASeconds *float64 `json:"eta_seconds,omitempty"`
	// FleetRate is the import calls per second the fleet serving the
	// rollout's queue is allowed now (0 until a worker has booked a call);
	// Breaker is its circuit breaker: closed, open or half_open.
	FleetRate float64 `json:"fleet_rate"`
	Breaker   string  `json:"breaker"`

	// State is running, baking, halted, done or cancelled.
	State string `json:"state"`
	// Wave is the last released wave (1-based) of Waves; Released the
	// organisations handed to the queue so far (the rest are pending in
	// the backlog, and counted in Pending).
	Wave     int   `json:"wave"`
	Waves    int   `json:"waves"`
	Released int64 `json:"released"`
	// HaltReason says why a halted rollout halted.
	HaltReason string `json:"halt_reason,omitempty"`
	// WaveDetail is the current wave and what comes next; absent for a
	// rollout of one wave.
	WaveDetail *WaveStatus `json:"wave_detail,omitempty"`
	// Weight is the rollout's share of the fleet's rate while other
	// rollouts have work.
	Weight float64 `json:"weight"`

	// Retention (retention.go). RetentionSeconds is how long the rollout
	// is kept once finished (the workers' ROLLOUT_RETENTION; 0: for
	// ever); ExpiresAt is when its keys expire, absent while it is active.
	RetentionSeconds int64      `json:"retention_seconds"`
	ExpiresAt        *time.Time `json:"expires_at,omitempty"`
}

// WaveStatus is a rollout's current wave and what comes next.
type WaveStatus struct {
	// Size is the organisations of the current wave (cumulative bound);
	// 0 for the last wave, which is the rest of the list.
	Bound int64 `json:"bound"`
	// Failed and Finished are the current wave's own counts; Ratio is
	// Failed / Finished, gated by MaxFailureRatio.
	Failed          int64   `json:"failed"`
	Finished        int64   `json:"finished"`
	Ratio           float64 `json:"failure_ratio"`
	MaxFailureRatio float64 `json:"max_failure_ratio"`
	BakeSeconds     float64 `json:"bake_seconds"`
	// ReleasedAt is when the current wave was released; BakeUntil when
	// its bake ends (once it has finished).
	ReleasedAt time.Time  `json:"released_at"`
	BakeUntil  *time.Time `json:"bake_until,omitempty"`
	// Gate is the PromQL gate's progress, when the rollout has one.
	Gate *GateRun `json:"gate,omitempty"`
	// Next says what releases the next wave, or that none is left.
	Next string `json:"next"`
}

// Finished is the number of organisations settled: succeeded, failed or
// cancelled.
func (s Status) Finished() int64 { return s.Succeeded + s.Failed + s.Cancelled }

// NewStatus returns the status of counters c of rollout r, without the
// fields read from the queue and the fleet (QueuePaused, FleetRate, Breaker)
// or the rate.
func NewStatus(r ledger.Rollout, c ledger.Counts) Status {
	b := BreakdownOf(c)
	return Status{
		RolloutID: r.ID, Total: b.Total, Pending: b.Pending, Succeeded: b.Succeeded, Failed: b.Failed,
		Done: b.Done(), Cancelled: b.Cancelled, Retrying: b.Retrying,
		ByClass: nonNil(c.ByClass), RetryingByClass: nonNil(c.RetryingByClass), ByVersion: nonNil(c.ByVersion),
		ConnectorID: r.ConnectorID.String(), Version: r.Version, CreatedAt: r.CreatedAt.UTC(),
	}
}

func nonNil(m map[string]int64) map[string]int64 {
	if m == nil {
		return map[string]int64{}
	}
	return m
}

// SetRate sets the rate and the ETA from a rate in organisations a second.
func (s *Status) SetRate(rate float64) {
	s.RatePerSecond = rate
	s.ETASeconds = nil
	switch {
	case s.Done:
		zero := 0.0
		s.ETASeconds = &zero
	case rate > 0:
		eta := float64(s.Pending) / rate
		s.ETASeconds = &eta
	}
}

// Status returns a rollout's full status: its counters, the average rate
// since it was created, its queue's pause flag and its fleet's rate and
// breaker.
func (m *Manager) Status(ctx context.Context, id string) (Status, error) {
	r, c, err := m.Get(ctx, id)
	if err != nil {
		return Status{}, err
	}
	st := NewStatus(r, c)
	if elapsed := m.opts.Now().Sub(r.CreatedAt).Seconds(); elapsed > 0 {
		st.SetRate(float64(st.Finished()) / elapsed)
	}
	return st, m.Decorate(ctx, &st, m.QueueOf(r))
}

// Decorate fills the fields of st read from the queue, the fleet and the
// rollout's release plan (state, waves).
func (m *Manager) Decorate(ctx context.Context, st *Status, queue string) error {
	st.QueuePaused = m.QueuePaused(queue)
	st.FleetRate, st.Breaker = m.FleetState(ctx, queue)
	m.decorateRetention(ctx, st)
	return m.decorateRelease(ctx, st)
}

// ClassSplit separates the succeeded classes of a ByClass map from the
// failed ones; the ledger counts both in one map.
func ClassSplit(m map[string]int64) (succeeded, failed map[string]int64) {
	succeeded, failed = map[string]int64{}, map[string]int64{}
	for k, v := range m {
		if versori.Class(k).Succeeded() {
			succeeded[k] = v
		} else {
			failed[k] = v
		}
	}
	return succeeded, failed
}

// Summary is one rollout in List.
type Summary struct {
	RolloutID   string    `json:"rollout_id"`
	ConnectorID string    `json:"connector_id"`
	Version     string    `json:"version"`
	CreatedAt   time.Time `json:"created_at"`
	Total       int64     `json:"total"`
	Pending     int64     `json:"pending"`
	Succeeded   int64     `json:"succeeded"`
	Failed      int64     `json:"failed"`
	Cancelled   int64     `json:"cancelled"`
	Done        bool      `json:"done"`
}

// List returns up to limit rollouts, most recent first; limit 0 means all.
func (m *Manager) List(ctx context.Context, limit int) ([]Summary, error) {
	rs, err := m.led.Rollouts(ctx, limit)
	if err != nil {
		return nil, err
	}
	out := make([]Summary, len(rs))
	for i, r := range rs {
		b := BreakdownOf(r.Counts)
		out[i] = Summary{
			RolloutID: r.ID, ConnectorID: r.ConnectorID.String(), Version: r.Version, CreatedAt: r.CreatedAt.UTC(),
			Total: b.Total, Pending: b.Pending, Succeeded: b.Succeeded, Failed: b.Failed, Cancelled: b.Cancelled, Done: b.Done(),
		}
	}
	return out, nil
}
