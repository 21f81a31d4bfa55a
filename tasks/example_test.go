package tasks_test

import (
	"context"
	"fmt"
	"slices"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/versori/import-worker/orglist"
	"github.com/versori/import-worker/tasks"
	"github.com/versori/import-worker/versori"
)

// A producer starts a rollout: it records the rollout in the ledger and
// enqueues one task per organisation. Running it again enqueues only what is
// missing.
func ExampleProducer_EnqueueAll() {
	mr := miniredis.NewMiniRedis() // in production: redisconn.New(os.Getenv("REDIS_URL"), ...)
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	p := tasks.NewProducer(rdb, tasks.ProducerConfig{})
	// IDs are parsed once, where they come in: the producer takes the
	// parsed types (an ID in any case is one organisation).
	connector, err := versori.ParseConnectorID("01hzy0000000000000000c0nn0")
	if err != nil {
		panic(err)
	}
	rollout := tasks.Rollout{ID: "salesforce-2026-11", ConnectorID: connector, Version: "latest"}
	orgs := []string{"01HZY00000000000000000000A", "01hzy00000000000000000000b"}

	ids, invalid := orglist.ParseIDs(slices.Values(orgs))
	sum, err := p.EnqueueAll(context.Background(), rollout, ids, nil)
	if err == nil {
		err = *invalid
	}
	if err != nil {
		panic(err)
	}
	fmt.Printf("enqueued %d, already enqueued %d\n", sum.Enqueued, sum.AlreadyEnqueued)

	// The same list again, plus one organisation: only the new one is queued.
	orgs = append(orgs, "01HZY00000000000000000000C")
	ids, invalid = orglist.ParseIDs(slices.Values(orgs))
	sum, err = p.EnqueueAll(context.Background(), rollout, ids, nil)
	if err == nil {
		err = *invalid
	}
	if err != nil {
		panic(err)
	}
	fmt.Printf("enqueued %d, already enqueued %d\n", sum.Enqueued, sum.AlreadyEnqueued)
	// Output:
	// enqueued 2, already enqueued 0
	// enqueued 1, already enqueued 2
}

// Enqueue adds a single organisation; enqueueing it twice is harmless.
func ExampleProducer_Enqueue() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	p := tasks.NewProducer(rdb, tasks.ProducerConfig{})
	rollout := tasks.Rollout{ID: "hotfix-42", ConnectorID: versori.MustParseConnectorID("01HZY0000000000000000C0NN0"), Version: "2.3.1"}
	org := versori.MustParseOrgID("01HZY00000000000000000000A")
	for range 2 {
		added, err := p.Enqueue(context.Background(), rollout, org)
		if err != nil {
			panic(err)
		}
		fmt.Println("added:", added)
	}
	// Output:
	// added: true
	// added: false
}

// The task ID joins the rollout and the organisation, which is what makes
// enqueueing idempotent.
func ExampleTaskID() {
	fmt.Println(tasks.TaskID("hotfix-42", versori.MustParseOrgID("01hzy00000000000000000000a")))
	// Output: hotfix-42:01HZY00000000000000000000A
}
