package ledger_test

import (
	"context"
	"fmt"
	"log"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/versori"
)

// A rollout's life: a producer defines it and adds organisations, workers
// record outcomes (twice, as at-least-once delivery may), an operator reads
// the status and streams the report.
func Example() {
	mr, err := miniredis.Run()
	if err != nil {
		log.Fatal(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ctx := context.Background()

	l := ledger.New(rdb, ledger.Options{})
	if _, err := l.CreateRollout(ctx, ledger.Rollout{ID: "rollout-1", ConnectorID: "01HZY5", Version: "latest"}); err != nil {
		log.Fatal(err)
	}
	if _, err := l.AddOrgs(ctx, "rollout-1", []versori.OrgID{"org-a", "org-b", "org-c"}); err != nil {
		log.Fatal(err)
	}

	// Worker side.
	_ = l.Attempt(ctx, "rollout-1", "org-b", ledger.Attempt{Class: "server_error", HTTPStatus: 503, Error: "unavailable"})
	for range 2 { // the same task delivered twice
		f, _ := l.Finish(ctx, "rollout-1", "org-a", ledger.Outcome{
			State: ledger.Succeeded, Class: "imported", HTTPStatus: 200, Version: "1.4.0", CountAttempt: true})
		fmt.Println("org-a changed:", f.Changed)
	}
	_, _ = l.Finish(ctx, "rollout-1", "org-c", ledger.Outcome{
		State: ledger.Failed, Class: "not_found", HTTPStatus: 404, Error: "connector not found", CountAttempt: true})

	// Operator side: status reads counters only.
	_, c, _ := l.Rollout(ctx, "rollout-1")
	fmt.Printf("total %d: pending %d (retrying %d), succeeded %d, failed %d, done %v\n",
		c.Total, c.Pending, c.Retrying, c.Succeeded, c.Failed, c.Done())

	// Retry re-drives the failed ones.
	var failed []string
	_ = l.Failed(ctx, "rollout-1", nil, func(r ledger.Record) error {
		failed = append(failed, string(r.OrgID))
		return nil
	})
	n, _ := l.Requeue(ctx, "rollout-1", oids(failed...))
	fmt.Println("requeued:", n)

	r, _ := l.Org(ctx, "rollout-1", "org-c")
	fmt.Println(r.OrgID, r.State, r.Class, r.Attempts, r.Error)
	// Output:
	// org-a changed: true
	// org-a changed: false
	// total 3: pending 1 (retrying 1), succeeded 1, failed 1, done false
	// requeued: 1
	// org-c pending not_found 1 connector not found
}
