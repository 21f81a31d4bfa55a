package rollout_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/versori/import-worker/gate"
	"github.com/versori/import-worker/gate/gatetest"
	"github.com/versori/import-worker/internal/redistest"
	"github.com/versori/import-worker/rollout"
)

// clock is a settable clock for the gate's intervals.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// A wave's PromQL gate: measured Count times Interval apart after the bake;
// passes release the next wave, and no data halts the rollout (it never
// passes), as does a failing sample.
func TestWaveGate(t *testing.T) {
	prom := gatetest.NewServer()
	t.Cleanup(prom.Close)
	measurer, err := gate.New(gate.Config{URL: prom.URL})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		script func()
		halted string // part of the halt reason; "" when the gate passes
	}{
		{"pass", func() { prom.SetValue(0.01) }, ""},
		{"no data", prom.SetNoData, "inconclusive"},
		{"failing sample", func() { prom.SetValue(0.5) }, "fail"},
		{"prometheus down", func() { prom.SetError(503, "overloaded") }, "inconclusive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := redistest.Start(t, redistest.Options{})
			clk := &clock{t: time.Now()}
			m := rollout.New(rs.Client(), rollout.Options{Now: clk.now})
			ctx := context.Background()
			spec := rollout.Spec{ID: "g", ConnectorID: testConnector, Version: "1", Waves: "5", Bake: time.Second,
				Gate: &gate.Spec{Query: `sum(rate(versori_import_orgs_finished_total{state="failed"}[5m]))`, Condition: "< 0.05", Count: 2, Interval: gate.Duration(10 * time.Second)}}
			if _, _, err := m.EnqueueList(ctx, spec, slices.Values(orgs(0, 20))); err != nil {
				t.Fatal(err)
			}
			tc.script()
			r := m.NewReleaser(rollout.ReleaserConfig{Gate: measurer, DecideEvery: 1})
			step(t, r, 2)
			settle(t, m, "g", func(string) bool { return false })
			step(t, r, 2) // finished: baking
			if st := status(t, m, "g"); st.State != rollout.StateBaking || st.Released != 5 {
				t.Fatalf("after wave 1: %s, %d released", st.State, st.Released)
			}
			for range 3 {
				clk.add(11 * time.Second)
				step(t, r, 2)
			}
			st := status(t, m, "g")
			if tc.halted == "" {
				if st.Wave != 2 || st.State != rollout.StateRunning || st.Released != 20 {
					t.Fatalf("gate passed but: %s wave %d, %d released, %q", st.State, st.Wave, st.Released, st.HaltReason)
				}
				return
			}
			if st.State != rollout.StateHalted || st.Released != 5 || !strings.Contains(st.HaltReason, tc.halted) {
				t.Fatalf("want halted (%s): %s, %d released, reason %q", tc.halted, st.State, st.Released, st.HaltReason)
			}
			if st.WaveDetail == nil || st.WaveDetail.Gate == nil || st.WaveDetail.Gate.Done == 0 {
				t.Fatalf("no gate detail in %+v", st.WaveDetail)
			}
		})
	}
	if !strings.Contains(prom.LastQuery(), "versori_import_orgs_finished_total") {
		t.Fatalf("query sent: %q", prom.LastQuery())
	}
}
