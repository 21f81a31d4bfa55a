package metrics

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

type fakeSource struct {
	active   []RolloutState
	started  int64
	finished int64
	err      error
}

func (f *fakeSource) RolloutFigures(context.Context) ([]RolloutState, int64, int64, error) {
	return f.active, f.started, f.finished, f.err
}

func TestRolloutCollector(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg, BuildInfo{Version: "v1", Commit: "abc"})
	src := &fakeSource{active: []RolloutState{{ID: "r1", Pending: 5, Retrying: 1, Succeeded: 3}}, started: 4, finished: 3}
	reg.MustRegister(NewRolloutCollector(src, m, time.Second, slog.New(slog.NewTextHandler(io.Discard, nil))))

	want := `
# HELP versori_import_rollout_orgs Organisations of each active rollout by state; a rollout's series disappear when it is done.
# TYPE versori_import_rollout_orgs gauge
versori_import_rollout_orgs{rollout="r1",state="cancelled"} 0
versori_import_rollout_orgs{rollout="r1",state="failed"} 0
versori_import_rollout_orgs{rollout="r1",state="pending"} 5
versori_import_rollout_orgs{rollout="r1",state="retrying"} 1
versori_import_rollout_orgs{rollout="r1",state="succeeded"} 3
# HELP versori_import_rollouts_started_total Rollouts recorded in the ledger.
# TYPE versori_import_rollouts_started_total counter
versori_import_rollouts_started_total 4
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), NameRolloutOrgs, NameRolloutsStarted); err != nil {
		t.Fatal(err)
	}

	// A done rollout's series go away, so the rollout label stays bounded.
	src.active = nil
	if n, err := testutil.GatherAndCount(reg, NameRolloutOrgs); err != nil || n != 0 {
		t.Fatalf("series of a done rollout: %d, %v", n, err)
	}

	// A failing source is counted, and the scrape still succeeds.
	src.err = errors.New("redis down")
	if _, err := reg.Gather(); err != nil {
		t.Fatalf("scrape failed with the source down: %v", err)
	}
	if got := testutil.ToFloat64(m.CollectorErrors.WithLabelValues("rollouts")); got != 1 {
		t.Fatalf("collector errors = %v, want 1", got)
	}
}

func TestBuildInfoAndRuntime(t *testing.T) {
	reg := prometheus.NewRegistry()
	New(reg, BuildInfo{Version: "v1.2.3", Commit: "abc"})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
		if mf.GetName() == NameBuildInfo {
			var version string
			for _, l := range mf.GetMetric()[0].GetLabel() {
				if l.GetName() == "version" {
					version = l.GetValue()
				}
			}
			if version != "v1.2.3" {
				t.Errorf("build info version = %q", version)
			}
		}
	}
	for _, n := range []string{NameBuildInfo, "go_goroutines", "process_resident_memory_bytes", NameRateDeferred, NameSkipped, NameRetries} {
		if !names[n] {
			t.Errorf("%s missing from a fresh registry", n)
		}
	}
}
