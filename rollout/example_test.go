package rollout_test

import (
	"context"
	"fmt"
	"os"
	"slices"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/versori/import-worker/rollout"
	"github.com/versori/import-worker/versori"
)

// exampleRedis stands in for the production Redis (redisconn.New with
// REDIS_URL) in the examples.
func exampleRedis() (redis.UniversalClient, func()) {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	return rdb, func() { rdb.Close(); mr.Close() }
}

// A Go producer starts a rollout from a list of organisation IDs: invalid
// ones are listed with their index, duplicates (in any case) dropped, and
// running it again enqueues only what is missing.
func ExampleManager_EnqueueList() {
	rdb, done := exampleRedis()
	defer done()
	ctx := context.Background()
	m := rollout.New(rdb, rollout.Options{})

	// The connector is parsed where it comes in (any case; an *InputError
	// if invalid); EnqueueList parses the organisations itself, to list
	// the invalid ones.
	connector, err := rollout.ParseConnector("01hzy3k8w0v6q1b2c3d4e5f6g7")
	if err != nil {
		panic(err)
	}
	spec := rollout.Spec{ID: "acme-1.4.0", ConnectorID: connector, Version: "1.4.0"}
	orgs := []string{"01J0000000000000000000000A", "01j0000000000000000000000a", "not-an-id", "01J0000000000000000000000B"}
	_, invalid, err := m.EnqueueList(ctx, spec, slices.Values(orgs))
	fmt.Println(err != nil, invalid[0].Index, invalid[0].ID)

	spec.SkipInvalid = true
	res, _, err := m.EnqueueList(ctx, spec, slices.Values(orgs))
	if err != nil {
		panic(err)
	}
	fmt.Printf("created %v: enqueued %d, duplicates %d, invalid %d\n", res.Created, res.Enqueued, res.Duplicates, res.Invalid)

	res, _, _ = m.EnqueueList(ctx, spec, slices.Values(append(orgs, "01J0000000000000000000000C")))
	fmt.Printf("created %v: enqueued %d, already enqueued %d\n", res.Created, res.Enqueued, res.AlreadyEnqueued)
	// Output:
	// true 2 not-an-id
	// created true: enqueued 2, duplicates 1, invalid 1
	// created false: enqueued 1, already enqueued 2
}

// Status, report rows, cancel: the rest of the lifecycle.
func ExampleManager_Status() {
	rdb, done := exampleRedis()
	defer done()
	ctx := context.Background()
	m := rollout.New(rdb, rollout.Options{})
	spec := rollout.Spec{ID: "acme-2", ConnectorID: versori.MustParseConnectorID("01HZY3K8W0V6Q1B2C3D4E5F6G7"), Version: "latest"}
	if _, _, err := m.EnqueueList(ctx, spec, slices.Values([]string{"01J0000000000000000000000A", "01J0000000000000000000000B"})); err != nil {
		panic(err)
	}

	st, err := m.Status(ctx, "acme-2")
	if err != nil {
		panic(err)
	}
	fmt.Printf("total %d, pending %d, done %v\n", st.Total, st.Pending, st.Done)

	w, _ := rollout.NewRowWriter(os.Stdout, rollout.FormatCSV)
	sum, _ := m.Report(ctx, "acme-2", rollout.Filter{}, nil, func(rollout.Row) error { return nil })
	w.Close() // the header only: rows come in no particular order
	fmt.Println(sum.Rows, "rows")

	c, _ := m.Cancel(ctx, "acme-2")
	st, _ = m.Status(ctx, "acme-2")
	fmt.Printf("cancelled %d, done %v\n", c.Cancelled, st.Done)
	// Output:
	// total 2, pending 2, done false
	// org_id,state,class,http_status,attempts,error,version,version_mismatch,finished_at,duration_ms
	// 2 rows
	// cancelled 2, done true
}

// A receiver checks a completion callback's signature with the shared
// secret.
func ExampleVerify() {
	secret := []byte("the CALLBACK_SECRET of the workers")
	body := []byte(`{"rollout_id":"acme-1.4.0","done":true}`)
	sig := rollout.Sign(secret, body) // what the X-Signature-256 header carries
	fmt.Println(rollout.Verify(secret, body, sig), rollout.Verify([]byte("wrong"), body, sig))
	// Output: true false
}
