package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/versori/import-worker/internal/redistest"
	"github.com/versori/import-worker/rollout"
)

// delete refuses an active rollout without --force (exit 2, saying what to
// do), deletes it with --force, and a finished one at once; status shows
// the retention and, once finished, the expiry.
func TestDeleteAndRetentionStatus(t *testing.T) {
	rs := redistest.Start(t, redistest.Options{})
	env := map[string]string{"REDIS_URL": rs.URL()}
	orgs := writeFile(t, "orgs.txt", orgA+"\n"+orgB+"\n")
	for _, id := range []string{"active", "finished"} {
		if r := cli(t, env, "", enqueueArgs(orgs, "--rollout", id)...); r.code != 0 {
			t.Fatalf("enqueue %s: %d %s", id, r.code, r.stderr)
		}
	}
	r := cli(t, env, "", "status", "active")
	if r.code != 0 || !strings.Contains(r.stdout, "retention  kept 720h0m0s once finished") {
		t.Fatalf("status of an active rollout: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = cli(t, env, "", "delete", "active")
	if r.code != 2 || !strings.Contains(r.stderr, "rollout active is active (2 organisations pending): cancel it first (enqueue cancel active) or delete it with --force") {
		t.Fatalf("delete active: %d %q", r.code, r.stderr)
	}
	if r := cli(t, env, "", "status", "active"); r.code != 0 {
		t.Fatalf("refused delete deleted the rollout: %s", r.stderr)
	}
	r = cli(t, env, "", "delete", "active", "--force", "--json")
	var res rollout.RemoveResult
	if err := json.Unmarshal([]byte(r.stdout), &res); r.code != 0 || err != nil || !res.Deleted || res.Cancelled != 2 || res.TasksDeleted != 0 { // no worker released them: none queued
		t.Fatalf("delete --force: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if r := cli(t, env, "", "status", "active"); r.code != 2 || !strings.Contains(r.stderr, "not found") {
		t.Fatalf("status after delete: %d %s", r.code, r.stderr)
	}

	if r := cli(t, env, "", "cancel", "finished"); r.code != 0 {
		t.Fatalf("cancel: %s", r.stderr)
	}
	var st rollout.Status
	r = cli(t, env, "", "status", "finished", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || !st.Done || st.RetentionSeconds != 30*24*3600 || st.ExpiresAt == nil {
		t.Fatalf("status --json of a finished rollout: %s %v", r.stdout, err)
	}
	if !strings.Contains(r.stdout, `"expires_at":`) || !strings.Contains(r.stdout, `"retention_seconds":2592000`) {
		t.Errorf("status --json: %s", r.stdout)
	}
	r = cli(t, env, "", "status", "finished")
	if !strings.Contains(r.stdout, "retention  expires ") || !strings.Contains(r.stdout, "finished rollouts are kept 720h0m0s") {
		t.Errorf("status of a finished rollout:\n%s", r.stdout)
	}
	if r := cli(t, env, "", "delete", "finished"); r.code != 0 || r.stdout != "rollout finished deleted\n" {
		t.Fatalf("delete finished: %d %q %q", r.code, r.stdout, r.stderr)
	}
	if r := cli(t, env, "", "delete", "finished"); r.code != 2 || !strings.Contains(r.stderr, "not found") {
		t.Fatalf("delete again: %d %q", r.code, r.stderr)
	}
	if r := cli(t, env, "", "rollouts", "--json"); r.code != 0 || strings.TrimSpace(r.stdout) != "[]" && strings.TrimSpace(r.stdout) != "null" {
		t.Errorf("rollouts after deletes: %q", r.stdout)
	}
}
