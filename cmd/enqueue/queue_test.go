package main

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/versori/import-worker/internal/redistest"
	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/rollout"
	"github.com/versori/import-worker/tasks"
	"github.com/versori/import-worker/versori"
)

// failAll records every pending organisation of rollout id as failed.
func failAll(t *testing.T, led *ledger.Ledger, id string, orgs []string) {
	t.Helper()
	for _, o := range orgs {
		if _, err := led.Finish(context.Background(), id, versori.OrgID(o), ledger.Outcome{State: ledger.Failed, Class: "server_error", HTTPStatus: 503, CountAttempt: true}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRetryAndCancelUseTheRolloutsQueue enqueues a rollout on --queue
// hostile, then retries it without --queue: the fresh tasks must go to
// hostile, not to the default queue. A --queue that differs from the
// rollout's, or that the worker would refuse, is bad usage.
func TestRetryAndCancelUseTheRolloutsQueue(t *testing.T) {
	s := redistest.Start(t, redistest.Options{})
	env := map[string]string{"REDIS_URL": s.URL()}
	orgs := []string{orgA, orgB, orgC}
	list := writeFile(t, "orgs.txt", strings.Join(orgs, "\n"))
	r := cli(t, env, "", enqueueArgs(list, "--rollout", "r1", "--queue", "hostile")...)
	if r.code != 0 {
		t.Fatalf("enqueue: exit %d: %s", r.code, r.stderr)
	}
	led := ledger.New(s.Client(), ledger.Options{})
	insp := asynq.NewInspectorFromRedisClient(s.Client())
	// No worker released them: the tasks are not queued yet.
	for _, o := range orgs {
		if err := insp.DeleteTask("hostile", tasks.TaskID("r1", versori.OrgID(o))); err != nil && !errors.Is(err, asynq.ErrQueueNotFound) && !errors.Is(err, asynq.ErrTaskNotFound) {
			t.Fatal(err)
		}
	}
	failAll(t, led, "r1", orgs)

	r = cli(t, env, "", "retry", "r1", "--queue", "imports")
	if r.code != 2 || !strings.Contains(r.stderr, "enqueued on queue hostile") {
		t.Errorf("retry with another --queue: exit %d: %s", r.code, r.stderr)
	}
	r = cli(t, env, "", "cancel", "r1", "--queue", "imports")
	if r.code != 2 || !strings.Contains(r.stderr, "enqueued on queue hostile") {
		t.Errorf("cancel with another --queue: exit %d: %s", r.code, r.stderr)
	}
	r = cli(t, env, "", enqueueArgs(list, "--rollout", "r1", "--queue", "imports")...)
	if r.code != 2 || !strings.Contains(r.stderr, "enqueued on queue hostile") {
		t.Errorf("re-enqueue on another --queue: exit %d: %s", r.code, r.stderr)
	}

	r = cli(t, env, "", "retry", "r1", "--json")
	if r.code != 0 || !strings.Contains(r.stdout, `"enqueued":3`) {
		t.Fatalf("retry: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	for _, q := range []string{"hostile", "imports"} {
		qi, err := insp.GetQueueInfo(q)
		want := map[string]int{"hostile": 3, "imports": 0}[q]
		got := 0
		if err == nil {
			got = qi.Size
		}
		if got != want {
			t.Errorf("queue %s holds %d tasks after the retry; want %d", q, got, want)
		}
	}
	r = cli(t, env, "", "cancel", "r1", "--json")
	if r.code != 0 || !strings.Contains(r.stdout, `"tasks_deleted":3`) {
		t.Errorf("cancel: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}

	for _, q := range []string{"a b", "{x}", strings.Repeat("q", 100)} {
		r = cli(t, env, "", "status", "r1", "--queue", q)
		if r.code != 2 || !strings.Contains(r.stderr, "--queue") {
			t.Errorf("--queue %q: exit %d: %s", q, r.code, r.stderr)
		}
	}
	env["WORKER_QUEUE"] = "a b"
	if r = cli(t, env, "", "status", "r1"); r.code != 2 {
		t.Errorf("WORKER_QUEUE %q: exit %d: %s", env["WORKER_QUEUE"], r.code, r.stderr)
	}
}

// TestConcurrentRetriesAgree runs two re-drives of the same failed
// organisations at once, many times: every organisation is re-driven by one
// of them, and each run's count of re-driven organisations is the count of
// tasks it enqueued (before, the loser said "no failed organisations" and
// still enqueued them).
func TestConcurrentRetriesAgree(t *testing.T) {
	s := redistest.Start(t, redistest.Options{})
	ctx := context.Background()
	rdb := s.Client()
	led := ledger.New(rdb, ledger.Options{})
	orgs := makeOrgs(5)
	for round := range 20 {
		id := "r" + string(rune('a'+round))
		if _, err := led.CreateRollout(ctx, ledger.Rollout{ID: id, ConnectorID: testConnector, Version: "1.0.0"}); err != nil {
			t.Fatal(err)
		}
		if _, err := led.AddOrgs(ctx, id, oids(orgs...)); err != nil {
			t.Fatal(err)
		}
		failAll(t, led, id, orgs)
		ro, _, err := led.Rollout(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		res := make([]retryResult, 2)
		for i := range res {
			wg.Go(func() {
				var err error
				res[i], err = rollout.New(rdb, rollout.Options{}).RetryOn(ctx, ro, nil, tasks.DefaultQueue)
				if err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if total := res[0].Requeued + res[1].Requeued; total != len(orgs) {
			t.Errorf("round %d: re-drove %d in all; want %d", round, total, len(orgs))
		}
		for i, r := range res {
			if r.Enqueued+r.Running != r.Requeued {
				t.Errorf("round %d, run %d: said %d re-driven but enqueued %d (%d running)", round, i, r.Requeued, r.Enqueued, r.Running)
			}
		}
	}
}
