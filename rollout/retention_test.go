package rollout_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/rollout"
	"github.com/versori/import-worker/versori"
)

func miniManager(t *testing.T, retention time.Duration) (*miniredis.Miniredis, redis.UniversalClient, *rollout.Manager) {
	t.Helper()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	return mr, rdb, rollout.New(rdb, rollout.Options{Retention: retention})
}

func enqueueOrgs(t *testing.T, m *rollout.Manager, id string, n int, callback string) []string {
	t.Helper()
	orgs := make([]string, n)
	for i := range orgs {
		orgs[i] = org(i)
	}
	if _, _, err := m.EnqueueList(context.Background(), rollout.Spec{ID: id, ConnectorID: testConnector, Version: "1.0.0", CallbackURL: callback}, slices.Values(orgs)); err != nil {
		t.Fatal(err)
	}
	return orgs
}

// finish records outcomes and calls the worker's finish hook after each,
// as the import handler does.
func finish(t *testing.T, m *rollout.Manager, id string, orgs []string, state ledger.State) {
	t.Helper()
	ctx := context.Background()
	for _, o := range orgs {
		if _, err := m.Ledger().Finish(ctx, id, versori.OrgID(o), ledger.Outcome{State: state, Class: "imported", HTTPStatus: 200}); err != nil {
			t.Fatal(err)
		}
		if err := m.OrganisationFinished(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
}

func ttls(t *testing.T, rdb redis.UniversalClient, keys []string) []time.Duration {
	t.Helper()
	out := make([]time.Duration, len(keys))
	for i, k := range keys {
		out[i] = rdb.PTTL(context.Background(), k).Val()
	}
	return out
}

// The finish hook gives every key of a rollout (callback keys included)
// the retention once the last organisation is done, not before; the status
// shows the retention and the expiry; once elapsed, the rollout is gone
// and the list does not show it.
func TestRetentionAfterLastOutcome(t *testing.T) {
	mr, rdb, m := miniManager(t, time.Hour)
	ctx := context.Background()
	orgs := enqueueOrgs(t, m, "r", 3, "https://hooks.example/x")
	rdb.Set(ctx, m.Keys("r")[5], "delivered", 0) // callback_delivered
	rdb.Set(ctx, m.Keys("r")[6], "0", 0)         // callback_round
	keys := m.Keys("r")
	if len(keys) != 8 || !strings.HasSuffix(keys[0], "{r}:def") || !strings.HasSuffix(keys[5], "{r}:callback_delivered") {
		t.Fatalf("Keys = %v", keys)
	}
	for _, k := range keys {
		if !mr.Exists(k) {
			t.Fatalf("%s does not exist", k)
		}
	}
	finish(t, m, "r", orgs[:2], ledger.Succeeded)
	for i, d := range ttls(t, rdb, keys) {
		if d != -1 {
			t.Errorf("active: %s TTL %v", keys[i], d)
		}
	}
	st, err := m.Status(ctx, "r")
	if err != nil || st.RetentionSeconds != 3600 || st.ExpiresAt != nil {
		t.Fatalf("active status: retention %d, expires %v, %v", st.RetentionSeconds, st.ExpiresAt, err)
	}
	finish(t, m, "r", orgs[2:], ledger.Failed)
	for i, d := range ttls(t, rdb, keys) {
		if d != time.Hour {
			t.Errorf("done: %s TTL %v, want 1h", keys[i], d)
		}
	}
	st, err = m.Status(ctx, "r")
	if err != nil || !st.Done || st.ExpiresAt == nil || time.Until(*st.ExpiresAt) < 59*time.Minute {
		t.Fatalf("done status: %+v, %v", st, err)
	}
	mr.FastForward(time.Hour + time.Second)
	for _, k := range keys {
		if mr.Exists(k) {
			t.Errorf("%s outlived the retention", k)
		}
	}
	if _, err := m.Status(ctx, "r"); !errors.Is(err, rollout.ErrNotFound) {
		t.Errorf("status after expiry: %v", err)
	}
	if rs, err := m.List(ctx, 10); err != nil || len(rs) != 0 {
		t.Errorf("List after expiry = %v, %v", rs, err)
	}
	// The hook on a rollout that is gone is not an error (the handler
	// would retry it).
	if err := m.OrganisationFinished(ctx, "r"); err != nil {
		t.Errorf("hook after expiry: %v", err)
	}
}

// Cancel finishes a rollout: its keys get the retention.
func TestRetentionOnCancel(t *testing.T) {
	_, rdb, m := miniManager(t, time.Hour)
	enqueueOrgs(t, m, "r", 3, "")
	if _, err := m.Cancel(context.Background(), "r"); err != nil {
		t.Fatal(err)
	}
	if d := ttls(t, rdb, m.Keys("r")[:3]); d[0] != time.Hour || d[1] != time.Hour || d[2] != time.Hour {
		t.Errorf("after cancel: TTLs %v", d)
	}
}

// A retry of a finished rollout removes the expiry for the run and sets it
// again when the run is done; a retry of an expired rollout is not found
// and writes nothing.
func TestRetentionRetry(t *testing.T) {
	mr, rdb, m := miniManager(t, time.Hour)
	ctx := context.Background()
	orgs := enqueueOrgs(t, m, "r", 3, "")
	finish(t, m, "r", orgs[:1], ledger.Failed)
	finish(t, m, "r", orgs[1:], ledger.Succeeded)
	mr.FastForward(30 * time.Minute)
	res, err := m.Retry(ctx, "r", nil)
	if err != nil || res.Requeued != 1 {
		t.Fatalf("Retry = %+v, %v", res, err)
	}
	for i, d := range ttls(t, rdb, m.Keys("r")[:3]) {
		if d != -1 {
			t.Errorf("re-driven: key %d TTL %v", i, d)
		}
	}
	mr.FastForward(2 * time.Hour) // an active rollout never expires
	finish(t, m, "r", orgs[:1], ledger.Succeeded)
	if d := rdb.PTTL(ctx, m.Keys("r")[0]).Val(); d != time.Hour {
		t.Errorf("done again: TTL %v", d)
	}
	// A retry that finds nothing to re-drive leaves the expiry on.
	if _, err := m.Retry(ctx, "r", nil); err != nil {
		t.Fatal(err)
	}
	if d := rdb.PTTL(ctx, m.Keys("r")[0]).Val(); d != time.Hour {
		t.Errorf("after an empty retry: TTL %v", d)
	}
	mr.FastForward(time.Hour + time.Second)
	if _, err := m.Retry(ctx, "r", nil); !errors.Is(err, rollout.ErrNotFound) {
		t.Errorf("Retry of an expired rollout: %v", err)
	}
	for _, k := range mr.Keys() { // the tasks of this test's queue, which no worker serves, stay
		// The releaser's sets of the queue are the fleet's, not the
		// rollout's: the releaser drops a rollout that is gone.
		if strings.HasPrefix(k, "versori-import:") && k != "versori-import:rollouts" && !strings.HasPrefix(k, "versori-import:release:{") {
			t.Errorf("key left: %s", k)
		}
	}
}

// A re-run enqueue that adds organisations to a finished rollout removes
// the expiry; one that adds nothing keeps the rollout expiring.
func TestRetentionReRun(t *testing.T) {
	_, rdb, m := miniManager(t, time.Hour)
	ctx := context.Background()
	orgs := enqueueOrgs(t, m, "r", 2, "")
	finish(t, m, "r", orgs, ledger.Succeeded)
	def := m.Keys("r")[0]
	enqueueOrgs(t, m, "r", 2, "")
	if d := rdb.PTTL(ctx, def).Val(); d != time.Hour {
		t.Errorf("re-run adding nothing: TTL %v", d)
	}
	enqueueOrgs(t, m, "r", 3, "")
	if d := rdb.PTTL(ctx, def).Val(); d != -1 {
		t.Errorf("re-run adding one: TTL %v", d)
	}
}

// The workers publish their retention; a Manager without one applies and
// shows it; off keeps rollouts for ever.
func TestRetentionPublished(t *testing.T) {
	mr, rdb, worker := miniManager(t, 2*time.Second)
	ctx := context.Background()
	cli := rollout.New(rdb, rollout.Options{})
	if d, err := cli.Retention(ctx); err != nil || d != rollout.DefaultRetention {
		t.Fatalf("before any worker: %v, %v", d, err)
	}
	if old, err := worker.PublishRetention(ctx); err != nil || old != "" {
		t.Fatal(old, err)
	}
	if d, err := cli.Retention(ctx); err != nil || d != 2*time.Second {
		t.Fatalf("published: %v, %v", d, err)
	}
	enqueueOrgs(t, cli, "r", 1, "")
	if _, err := cli.Cancel(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	st, err := cli.Status(ctx, "r")
	if err != nil || st.RetentionSeconds != 2 || st.ExpiresAt == nil {
		t.Fatalf("status: %+v, %v", st, err)
	}
	off := rollout.New(rdb, rollout.Options{Retention: rollout.NoRetention})
	if old, err := off.PublishRetention(ctx); err != nil || old != "2s" {
		t.Fatalf("replacing: %q, %v", old, err)
	}
	enqueueOrgs(t, cli, "kept", 1, "")
	cli.Cancel(ctx, "kept")
	mr.FastForward(time.Hour)
	st, err = cli.Status(ctx, "kept")
	if err != nil || st.RetentionSeconds != 0 || st.ExpiresAt != nil {
		t.Fatalf("off: %+v, %v", st, err)
	}
}

// Prune removes expired rollouts from the index and gives the retention to
// finished rollouts that have none (finished before it existed).
func TestPrune(t *testing.T) {
	mr, rdb, m := miniManager(t, time.Hour)
	ctx := context.Background()
	legacy := rollout.New(rdb, rollout.Options{Retention: rollout.NoRetention})
	enqueueOrgs(t, legacy, "legacy", 1, "")
	legacy.Cancel(ctx, "legacy")
	enqueueOrgs(t, m, "expiring", 1, "")
	m.Cancel(ctx, "expiring")
	enqueueOrgs(t, m, "active", 1, "")
	idx := "versori-import:rollouts"
	// Pretend they were created two hours ago.
	for _, id := range []string{"legacy", "expiring", "active"} {
		rdb.ZAdd(ctx, idx, redis.Z{Score: float64(time.Now().Add(-2 * time.Hour).UnixMilli()), Member: id})
	}
	mr.FastForward(time.Hour + time.Second)
	n, err := m.Prune(ctx)
	if err != nil || n != 1 {
		t.Fatalf("Prune = %d, %v; want 1", n, err)
	}
	if ids := rdb.ZRange(ctx, idx, 0, -1).Val(); len(ids) != 2 || slices.Contains(ids, "expiring") {
		t.Errorf("index %v", ids)
	}
	if d := rdb.PTTL(ctx, m.Keys("legacy")[0]).Val(); d != time.Hour {
		t.Errorf("legacy rollout TTL %v, want 1h", d)
	}
	if d := rdb.PTTL(ctx, m.Keys("active")[0]).Val(); d != -1 {
		t.Errorf("active rollout TTL %v", d)
	}
}

// Remove refuses an active rollout without Force; with it, cancels and
// removes every key; a finished one goes at once.
func TestRemove(t *testing.T) {
	mr, rdb, m := miniManager(t, time.Hour)
	ctx := context.Background()
	enqueueOrgs(t, m, "active", 2, "https://hooks.example/x")
	_, err := m.Remove(ctx, "active", rollout.RemoveOptions{})
	var ae *rollout.ActiveError
	if !errors.Is(err, rollout.ErrActive) || !errors.As(err, &ae) || ae.Pending != 2 {
		t.Fatalf("Remove of an active rollout: %v", err)
	}
	if !mr.Exists(m.Keys("active")[0]) {
		t.Fatal("refused Remove deleted something")
	}
	res, err := m.Remove(ctx, "active", rollout.RemoveOptions{Force: true})
	// No releaser ran: nothing was queued, so no task to remove.
	if err != nil || !res.Deleted || res.Cancelled != 2 || res.TasksDeleted != 0 {
		t.Fatalf("forced Remove = %+v, %v", res, err)
	}
	for _, k := range m.Keys("active") {
		if mr.Exists(k) {
			t.Errorf("%s left", k)
		}
	}
	if qi, err := asynq.NewInspectorFromRedisClient(rdb).GetQueueInfo(rollout.DefaultQueue); err == nil && qi.Size > 0 {
		t.Errorf("%d tasks left in the queue", qi.Size)
	}
	orgs := enqueueOrgs(t, m, "done", 1, "")
	finish(t, m, "done", orgs, ledger.Succeeded)
	if res, err := m.Remove(ctx, "done", rollout.RemoveOptions{}); err != nil || !res.Deleted {
		t.Fatalf("Remove of a finished rollout = %+v, %v", res, err)
	}
	if _, err := m.Remove(ctx, "done", rollout.RemoveOptions{}); !errors.Is(err, rollout.ErrNotFound) {
		t.Errorf("second Remove: %v", err)
	}
	if rs, _ := m.List(ctx, 0); len(rs) != 0 {
		t.Errorf("List after Remove: %v", rs)
	}
}

func TestParseRetention(t *testing.T) {
	for v, want := range map[string]time.Duration{"": rollout.DefaultRetention, "off": rollout.NoRetention, "0": rollout.NoRetention, "0s": rollout.NoRetention, "1s": time.Second, " 720h ": 720 * time.Hour} {
		if d, err := rollout.ParseRetention(v); err != nil || d != want {
			t.Errorf("ParseRetention(%q) = %v, %v; want %v", v, d, err, want)
		}
	}
	for _, v := range []string{"-5m", "30", "2d", "999ms", "never"} {
		if _, err := rollout.ParseRetention(v); err == nil {
			t.Errorf("ParseRetention(%q) accepted", v)
		}
	}
}
