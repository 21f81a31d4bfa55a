package rollout_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/versori/import-worker/internal/redistest"
	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/rollout"
	"github.com/versori/import-worker/versori"
)

func orgs(from, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = org(from + i)
	}
	return out
}

// settle finishes every released organisation of rollout id that is still
// pending: the first failEvery-th of them failed, the rest succeeded, as
// workers would; it returns how many it settled.
func settle(t *testing.T, m *rollout.Manager, id string, fail func(org string) bool) int {
	t.Helper()
	ctx := context.Background()
	insp := asynq.NewInspectorFromRedisClient(m.RDB())
	n := 0
	tasks, err := insp.ListPendingTasks(rollout.DefaultQueue, asynq.PageSize(100000))
	if err != nil {
		t.Fatal(err)
	}
	for _, ti := range tasks {
		if !strings.HasPrefix(ti.ID, id+":") {
			continue
		}
		o := strings.TrimPrefix(ti.ID, id+":")
		out := ledger.Outcome{State: ledger.Succeeded, Class: "imported", HTTPStatus: 200, CountAttempt: true}
		if fail(o) {
			out = ledger.Outcome{State: ledger.Failed, Class: "invalid", HTTPStatus: 422, CountAttempt: true}
		}
		if _, err := m.Ledger().Finish(ctx, id, versori.OrgID(o), out); err != nil {
			t.Fatal(err)
		}
		if err := insp.DeleteTask(rollout.DefaultQueue, ti.ID); err != nil {
			t.Fatal(err)
		}
		n++
	}
	return n
}

func step(t *testing.T, r *rollout.Releaser, times int) {
	t.Helper()
	for range times {
		if err := r.Step(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

func status(t *testing.T, m *rollout.Manager, id string) rollout.Status {
	t.Helper()
	st, err := m.Status(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// Waves 10,10%,100% of 2,000 where every organisation from the 11th on
// fails: the first wave passes, the second fails its gate, and nothing of
// the third is ever released.
func TestWavesHaltOnFailureRatio(t *testing.T) {
	rs := redistest.Start(t, redistest.Options{})
	m := rollout.New(rs.Client(), rollout.Options{})
	ctx := context.Background()
	list := orgs(0, 2000)
	first := map[string]bool{}
	for _, o := range list[:10] {
		first[o] = true
	}
	if _, _, err := m.EnqueueList(ctx, rollout.Spec{ID: "w1", ConnectorID: testConnector, Version: "1", Waves: "10,10%,100%", CallbackURL: "https://hooks.example.com/x"}, slices.Values(list)); err != nil {
		t.Fatal(err)
	}
	r := m.NewReleaser(rollout.ReleaserConfig{Rate: func() (float64, bool) { return 0, false }, DecideEvery: 1})
	called := 0
	for range 20 {
		step(t, r, 1)
		called += settle(t, m, "w1", func(o string) bool { return !first[o] })
	}
	st := status(t, m, "w1")
	if st.State != rollout.StateHalted || st.Wave != 2 || st.Waves != 3 {
		t.Fatalf("state %s, wave %d of %d, want halted in wave 2 of 3", st.State, st.Wave, st.Waves)
	}
	if called != 200 || st.Released != 200 {
		t.Fatalf("%d organisations called, %d released; want 200 (waves 1 and 2)", called, st.Released)
	}
	if !strings.Contains(st.HaltReason, "190 of 190") || st.Done || st.Pending != 1800 {
		t.Fatalf("halt reason %q, done %v, pending %d", st.HaltReason, st.Done, st.Pending)
	}
	if n, _ := m.HaltedCount(ctx, rollout.DefaultQueue); n != 1 {
		t.Fatalf("halted count %d", n)
	}
	// A halt is final until promoted: the callback goes out.
	callbackTask(t, rs, "w1")
	unreleased := 0
	if _, err := m.Report(ctx, "w1", rollout.Filter{}, nil, func(row rollout.Row) error {
		if row.State == rollout.StateUnreleased {
			unreleased++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if unreleased != 1800 {
		t.Fatalf("%d report rows unreleased, want 1800", unreleased)
	}

	// Promote releases the rest, once, whatever the releaser does.
	if _, err := m.Promote(ctx, "w1"); err != nil {
		t.Fatal(err)
	}
	for range 30 {
		step(t, r, 1)
		called += settle(t, m, "w1", func(string) bool { return false })
	}
	st = status(t, m, "w1")
	if !st.Done || st.State != rollout.StateDone || st.Released != 2000 || called != 2000 || st.Succeeded != 1810 {
		t.Fatalf("after promote: %+v, %d called", st, called)
	}
	if _, err := m.Promote(ctx, "w1"); err == nil || !strings.Contains(err.Error(), "last wave") {
		t.Fatalf("promote of a finished rollout: %v", err)
	}
}

// Promote refuses a rollout without waves and an unknown one.
func TestPromoteRefuses(t *testing.T) {
	rs := redistest.Start(t, redistest.Options{})
	m := rollout.New(rs.Client(), rollout.Options{})
	ctx := context.Background()
	if _, _, err := m.EnqueueList(ctx, rollout.Spec{ID: "one", ConnectorID: testConnector, Version: "1"}, slices.Values(orgs(0, 3))); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Promote(ctx, "one"); err == nil || !strings.Contains(err.Error(), "no waves") {
		t.Fatalf("promote without waves: %v", err)
	}
	if _, err := m.Promote(ctx, "nope"); err == nil {
		t.Fatal("promote of an unknown rollout")
	}
	if _, _, err := m.EnqueueList(ctx, rollout.Spec{ID: "c", ConnectorID: testConnector, Version: "1", Waves: "1"}, slices.Values(orgs(0, 3))); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Cancel(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Promote(ctx, "c"); err == nil || !strings.Contains(err.Error(), "cancelled") {
		t.Fatalf("promote of a cancelled rollout: %v", err)
	}
	if st := status(t, m, "c"); st.State != rollout.StateCancelled || !st.Done {
		t.Fatalf("cancelled: %+v", st)
	}
}

// Two releasers: only the lease holder releases, and the queue holds the
// window the rate asks for.
func TestReleaserLeaseAndDepth(t *testing.T) {
	rs := redistest.Start(t, redistest.Options{})
	m := rollout.New(rs.Client(), rollout.Options{})
	ctx := context.Background()
	if _, _, err := m.EnqueueList(ctx, rollout.Spec{ID: "big", ConnectorID: testConnector, Version: "1"}, slices.Values(orgs(0, 500))); err != nil {
		t.Fatal(err)
	}
	rate := func() (float64, bool) { return 50, true }
	a := m.NewReleaser(rollout.ReleaserConfig{Owner: "a", Rate: rate})
	b := m.NewReleaser(rollout.ReleaserConfig{Owner: "b", Rate: rate})
	step(t, a, 3)
	step(t, b, 3)
	if st := status(t, m, "big"); st.Released != 13 {
		t.Fatalf("released %d, want 13 (0.25 s at 50/s)", st.Released)
	}
	// b never held the lease: a's steps did it all.
	if got, _ := rs.Client().Get(ctx, "versori-import:release:{imports}:lease").Result(); got != "a" {
		t.Fatalf("lease held by %q", got)
	}
}

// Two backlogged rollouts of weights 3 and 1 share what is released 3:1;
// one alone gets everything.
func TestReleaserWeightedShare(t *testing.T) {
	rs := redistest.Start(t, redistest.Options{})
	m := rollout.New(rs.Client(), rollout.Options{})
	ctx := context.Background()
	for _, r := range []struct {
		id     string
		weight float64
	}{{"heavy", 3}, {"light", 1}} {
		if _, _, err := m.EnqueueList(ctx, rollout.Spec{ID: r.id, ConnectorID: testConnector, Version: "1", Weight: r.weight}, slices.Values(orgs(0, 5000))); err != nil {
			t.Fatal(err)
		}
	}
	rel := m.NewReleaser(rollout.ReleaserConfig{Rate: func() (float64, bool) { return 100, true }})
	for range 40 {
		step(t, rel, 1)
		// The handlers take everything queued.
		rs.Client().Del(ctx, "asynq:{imports}:pending")
	}
	h, l := status(t, m, "heavy").Released, status(t, m, "light").Released
	share := float64(h) / float64(h+l)
	if share < 0.70 || share > 0.80 {
		t.Fatalf("heavy released %d, light %d: share %.3f, want 0.75 +- 0.05", h, l, share)
	}
}

// Cancel while imports run: asynq refuses to delete an active task, which
// counts as running, not as an error, even once the task has finished by
// the time anyone asks.
func TestCancelWhileImportsRun(t *testing.T) {
	rs := redistest.Start(t, redistest.Options{})
	m := rollout.New(rs.Client(), rollout.Options{})
	ctx := context.Background()
	if _, _, err := m.EnqueueList(ctx, rollout.Spec{ID: "busy", ConnectorID: testConnector, Version: "1"}, slices.Values(orgs(0, 3))); err != nil {
		t.Fatal(err)
	}
	step(t, m.NewReleaser(rollout.ReleaserConfig{}), 1)
	started, release := make(chan struct{}, 3), make(chan struct{})
	srv := asynq.NewServerFromRedisClient(rs.Client(), asynq.Config{Concurrency: 3, Queues: map[string]int{rollout.DefaultQueue: 1}, TaskCheckInterval: 20 * time.Millisecond, LogLevel: asynq.FatalLevel})
	if err := srv.Start(asynq.HandlerFunc(func(context.Context, *asynq.Task) error {
		started <- struct{}{}
		<-release
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	for range 3 {
		select {
		case <-started:
		case <-time.After(10 * time.Second):
			t.Fatal("the tasks never started")
		}
	}
	res, err := m.Cancel(ctx, "busy")
	close(release)
	if err != nil || res.Cancelled != 3 || res.Running != 3 {
		t.Fatalf("cancel while running: %+v, %v", res, err)
	}
}
