package e2e

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/versori/import-worker/internal/redistest"
	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/tasks"
	"github.com/versori/import-worker/versori/versoritest"
)

// TestReliabilityPoisonTasks is fault 7: another producer puts tasks
// straight into the queue that no import can come of: a payload that is not
// JSON, one missing a field, one with a hostile organisation ID (and a few
// more). Each is archived at its first run with a reason, without a retry
// and without an API call, and a rollout running beside them completes.
func TestReliabilityPoisonTasks(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	t.Parallel()
	const n = 300
	api := versoritest.NewServer(versoritest.WithLatency(versoritest.Latency{Distribution: versoritest.Constant, Mean: 20 * time.Millisecond}))
	f := newFleet(t, api, redistest.Options{})
	f.start(2, map[string]string{"IMPORT_RATE_LIMIT": "100", "WORKER_CONCURRENCY": "10"})

	org := "01J0000000000000000000P0S0"
	poison := []struct {
		name, typ, payload string
		reason             string // in the archived task's last error
	}{
		{"not JSON", tasks.TypeImport, "this is not JSON {", "decode payload"},
		{"missing field", tasks.TypeImport, `{"rollout_id":"poison","org_id":"` + org + `","version":"1.0.0"}`, `missing field "connector_id"`},
		{"hostile org ID", tasks.TypeImport, `{"rollout_id":"poison","org_id":"../../etc/passwd","connector_id":"` + connectorID + `","version":"1.0.0"}`, "organisation"},
		{"hostile rollout ID", tasks.TypeImport, `{"rollout_id":"*\r\nFLUSHALL\r\n","org_id":"` + org + `","connector_id":"` + connectorID + `","version":"1.0.0"}`, "rollout ID"},
		{"hostile version", tasks.TypeImport, `{"rollout_id":"poison","org_id":"` + org + `","connector_id":"` + connectorID + `","version":"../../admin?x=1"}`, "version"},
		{"oversized", tasks.TypeImport, `{"rollout_id":"poison","pad":"` + strings.Repeat("x", 8<<10) + `"}`, "bytes"},
		{"trailing data", tasks.TypeImport, `{"rollout_id":"poison","org_id":"` + org + `","connector_id":"` + connectorID + `","version":"1.0.0"} {}`, "trailing"},
		{"JSON array", tasks.TypeImport, `[1,2,3]`, "decode payload"},
		{"empty", tasks.TypeImport, ``, "decode payload"},
		{"unknown type", "versori:delete-everything", `{}`, "unknown task type"},
	}

	client := asynq.NewClientFromRedisClient(f.redis.Client())
	f.enqueue("beside-poison", n)
	for _, p := range poison {
		// MaxRetry 5: a task archived at once was refused on purpose, not
		// retried to exhaustion.
		_, err := client.Enqueue(asynq.NewTask(p.typ, []byte(p.payload)), asynq.Queue(tasks.DefaultQueue), asynq.MaxRetry(5), asynq.TaskID("poison-"+strings.ReplaceAll(p.name, " ", "-")))
		if err != nil {
			t.Fatalf("enqueue %s: %v", p.name, err)
		}
	}

	c := f.waitDone("beside-poison", 2*time.Minute)
	if c.Succeeded != n || c.Failed != 0 {
		t.Errorf("the rollout beside the poison: %+v, want all %d succeeded", c, n)
	}
	var got []*asynq.TaskInfo
	if !eventually(30*time.Second, func() bool {
		got = archived(t, f.redis.Client())
		return len(got) >= len(poison)
	}) {
		t.Fatalf("%d tasks archived, want %d", len(got), len(poison))
	}
	byID := map[string]*asynq.TaskInfo{}
	for _, ti := range got {
		byID[ti.ID] = ti
	}
	for _, p := range poison {
		ti := byID["poison-"+strings.ReplaceAll(p.name, " ", "-")]
		switch {
		case ti == nil:
			t.Errorf("%s: not archived", p.name)
		case !strings.Contains(ti.LastErr, p.reason):
			t.Errorf("%s: archived with %q, want a reason mentioning %q", p.name, ti.LastErr, p.reason)
		case ti.Retried != 0:
			t.Errorf("%s: retried %d times before it was archived, want 0", p.name, ti.Retried)
		}
	}
	if len(got) != len(poison) {
		t.Errorf("%d tasks archived, want exactly the %d poison tasks", len(got), len(poison))
	}
	if api.TotalCalls() != n {
		t.Errorf("the API saw %d calls for %d organisations: a poison task reached it", api.TotalCalls(), n)
	}
	if _, _, err := f.led.Rollout(context.Background(), "poison"); !errors.Is(err, ledger.ErrRolloutNotFound) {
		t.Errorf("the poison tasks left a rollout in the ledger (err %v)", err)
	}
	keys, err := f.redis.Client().Keys(context.Background(), "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if strings.Contains(k, "passwd") || strings.Contains(k, "..") || strings.Contains(k, "FLUSHALL") {
			t.Errorf("a hostile ID reached a Redis key name: %q", k)
		}
	}
	f.workersAlive()
	for _, w := range f.workers {
		if got := httpStatus(w.Addr, "/healthz"); got != 200 {
			t.Errorf("%s: /healthz = %d", w.Name, got)
		}
	}
	var reasons []string
	for _, p := range poison {
		if ti := byID["poison-"+strings.ReplaceAll(p.name, " ", "-")]; ti != nil {
			reasons = append(reasons, p.name+": "+truncate(ti.LastErr, 90))
		}
	}
	figure(t, "%d poison tasks archived at their first run (retried 0, API calls 0); the %d-organisation rollout beside them: all succeeded; reasons: %s",
		len(got), n, strings.Join(reasons, " | "))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
