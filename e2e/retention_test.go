package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/versori/import-worker/internal/e2etest"
	"github.com/versori/import-worker/internal/redistest"
	"github.com/versori/import-worker/rollout"
	"github.com/versori/import-worker/versori/versoritest"
)

// TestRetentionEndToEnd: a worker binary with ROLLOUT_RETENTION=2s, driven
// by the enqueue binary. A finished rollout shows its retention and expiry
// in status, then it and every key of it disappear and the list no longer
// shows it; an active rollout (on a queue no worker serves) stays; delete
// refuses it without --force and removes it with.
func TestRetentionEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts binaries")
	}
	f := newFleet(t, versoritest.NewServer(), redistest.Options{})
	f.start(1, map[string]string{"ROLLOUT_RETENTION": "2s", "IMPORT_RATE_LIMIT": "500"})
	enq := e2etest.Bin(t, "enqueue")
	env := map[string]string{"REDIS_URL": f.redis.URL()}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := func(args ...string) (string, string, int) {
		return e2etest.Run(ctx, enq, env, nil, args...)
	}

	var list strings.Builder
	for id := range orgIDs(20) {
		list.WriteString(id + "\n")
	}
	orgs := filepath.Join(t.TempDir(), "orgs.txt")
	if err := os.WriteFile(orgs, []byte(list.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := run("--connector", connectorID, "--version", "1.0.0", "--orgs", orgs, "--rollout", "short-lived"); code != 0 {
		t.Fatalf("enqueue: %d %s", code, stderr)
	}
	if _, stderr, code := run("--connector", connectorID, "--version", "1.0.0", "--orgs", orgs, "--rollout", "held", "--queue", "nobody-serves"); code != 0 {
		t.Fatalf("enqueue held: %d %s", code, stderr)
	}

	// Finished: status shows the worker's retention and the expiry.
	var st rollout.Status
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, stderr, code := run("status", "short-lived", "--json")
		if code != 0 {
			t.Fatalf("status: %d %s", code, stderr)
		}
		st = rollout.Status{}
		json.Unmarshal([]byte(out), &st)
		if st.Done && st.ExpiresAt != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not done with an expiry: %s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st.Succeeded != 20 || st.RetentionSeconds != 2 || time.Until(*st.ExpiresAt) > 3*time.Second {
		t.Fatalf("finished status: %+v (expires %v)", st, st.ExpiresAt)
	}
	rdb := f.redis.Client()
	keys := rdb.Keys(ctx, "versori-import:rollout:{short-lived}:*").Val()
	if len(keys) < 3 {
		t.Fatalf("keys of the finished rollout: %v", keys)
	}
	for _, k := range keys {
		if d := rdb.PTTL(ctx, k).Val(); d <= 0 || d > 2*time.Second {
			t.Errorf("%s: TTL %v, want up to 2s", k, d)
		}
	}
	out, _, _ := run("status", "short-lived")
	if !strings.Contains(out, "retention  expires ") || !strings.Contains(out, "finished rollouts are kept 2s") {
		t.Errorf("human status:\n%s", out)
	}
	out, _, _ = run("status", "held", "--json")
	var held rollout.Status
	json.Unmarshal([]byte(out), &held)
	if held.Done || held.ExpiresAt != nil || held.RetentionSeconds != 2 || strings.Contains(out, "expires_at") {
		t.Errorf("active status: %s", out)
	}

	// Gone after the retention, every key; the active one stays.
	if !eventually(10*time.Second, func() bool {
		for _, k := range keys {
			if rdb.Exists(ctx, k).Val() != 0 {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("keys of the finished rollout outlived the retention: %v", rdb.Keys(ctx, "versori-import:rollout:{short-lived}:*").Val())
	}
	if _, stderr, code := run("status", "short-lived"); code != 2 || !strings.Contains(stderr, "not found") {
		t.Errorf("status after expiry: %d %s", code, stderr)
	}
	out, stderr, code := run("rollouts", "--json")
	var rows []rollout.Summary
	if err := json.Unmarshal([]byte(out), &rows); code != 0 || err != nil || len(rows) != 1 || rows[0].RolloutID != "held" {
		t.Fatalf("rollouts after expiry: %d %s %s", code, out, stderr)
	}
	for _, k := range rdb.Keys(ctx, "versori-import:rollout:{held}:*").Val() {
		if d := rdb.PTTL(ctx, k).Val(); d != -1 {
			t.Errorf("active rollout's %s has TTL %v", k, d)
		}
	}
	// The index no longer holds the expired rollout (the listing pruned it).
	if ids := rdb.ZRange(ctx, "versori-import:rollouts", 0, -1).Val(); len(ids) != 1 || ids[0] != "held" {
		t.Errorf("index %v", ids)
	}

	// delete: refused while active, done with --force.
	_, stderr, code = run("delete", "held", "--queue", "nobody-serves")
	if code != 2 || !strings.Contains(stderr, "cancel it first") || !strings.Contains(stderr, "--force") {
		t.Fatalf("delete active: %d %s", code, stderr)
	}
	out, stderr, code = run("delete", "held", "--queue", "nobody-serves", "--force")
	// No worker serves its queue, so none was released: no task to remove.
	if code != 0 || !strings.Contains(out, "cancelled 20 pending organisations and removed 0 queued tasks, then deleted") {
		t.Fatalf("delete --force: %d %s %s", code, out, stderr)
	}
	if left := rdb.Keys(ctx, "versori-import:rollout:*").Val(); len(left) != 0 {
		t.Errorf("keys left after delete: %v", left)
	}
	if n := rdb.ZCard(ctx, "versori-import:rollouts").Val(); n != 0 {
		t.Errorf("index holds %d after delete", n)
	}
}

// TestRetentionBadValues: the worker refuses a bad ROLLOUT_RETENTION at
// start, exit status 2, with one line naming the variable.
func TestRetentionBadValues(t *testing.T) {
	if testing.Short() {
		t.Skip("starts binaries")
	}
	bin := e2etest.Bin(t, "worker")
	for _, v := range []string{"-1h", "30", "forever", "10ms"} {
		_, stderr, code := e2etest.Run(context.Background(), bin, map[string]string{
			"REDIS_URL": "redis://127.0.0.1:1/0", "VERSORI_API_KEY": "vk_test", "ROLLOUT_RETENTION": v,
		}, nil)
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		if code != 2 || len(lines) != 1 || !strings.HasPrefix(lines[0], "worker: configuration: ROLLOUT_RETENTION: ") {
			t.Errorf("ROLLOUT_RETENTION=%q: exit %d, stderr %q", v, code, stderr)
		}
	}
}
