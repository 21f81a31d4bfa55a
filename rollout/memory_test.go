package rollout_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/versori/import-worker/internal/redistest"
	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/rollout"
	"github.com/versori/import-worker/versori"
)

// TestMemoryPerOrganisation measures Redis's used_memory per organisation
// of a large rollout: (a) queued (asynq task and pending ledger record),
// (b) finished (the ledger record only, the task gone as asynq drops a
// completed one), and, for comparison, the finished record in formats the
// ledger does not use; and the live heap a report of the finished rollout
// holds (the de-duplication set: a bit a row). It runs only with
// MEASURE_MEMORY=1 (MEASURE_MEMORY_N organisations, default 100,000):
//
//	MEASURE_MEMORY=1 go test -run TestMemoryPerOrganisation -v ./rollout/
func TestMemoryPerOrganisation(t *testing.T) {
	if os.Getenv("MEASURE_MEMORY") != "1" {
		t.Skip("set MEASURE_MEMORY=1 to measure (about a minute)")
	}
	n := 100_000
	if v := os.Getenv("MEASURE_MEMORY_N"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	rs := redistest.Start(t, redistest.Options{})
	rdb := rs.Client()
	ctx := context.Background()
	m := rollout.New(rdb, rollout.Options{Retention: time.Hour})
	orgs := make([]string, n)
	for i := range orgs {
		orgs[i] = org(i)
	}
	// Warm up: scripts loaded, queue known, so the figures are per org.
	if _, _, err := m.EnqueueList(ctx, rollout.Spec{ID: "warm-up", ConnectorID: testConnector, Version: "1.0.0"}, slices.Values(orgs[:10])); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Delete(ctx, "warm-up"); err != nil {
		t.Fatal(err)
	}
	base := usedMemory(t, rdb)

	start := time.Now()
	if _, _, err := m.EnqueueList(ctx, rollout.Spec{ID: "mem", ConnectorID: testConnector, Version: "1.0.0"}, slices.Values(orgs)); err != nil {
		t.Fatal(err)
	}
	queued := usedMemory(t, rdb) - base
	orgsKey := m.Keys("mem")[1]
	queuedRecords := memoryUsage(t, rdb, orgsKey)
	t.Logf("enqueued %d organisations in %s", n, time.Since(start).Round(time.Millisecond))
	taskKey := "asynq:{" + rollout.DefaultQueue + "}:t:mem:" + orgs[0]
	// A Manager enlists organisations in the rollout's backlog; their
	// tasks exist once the fleet's releaser hands them to the queue, which
	// no releaser does here.
	taskMsg, _ := rdb.HGet(ctx, taskKey, "msg").Result()
	var taskUsage int64
	if taskMsg != "" {
		taskUsage = memoryUsage(t, rdb, taskKey)
	}

	// What a worker leaves: each task done (asynq deletes a completed task
	// without retention), each record finished with a typical outcome.
	insp := asynq.NewInspectorFromRedisClient(rdb)
	if taskMsg != "" {
		if _, err := insp.DeleteAllPendingTasks(rollout.DefaultQueue); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	next := make(chan string)
	for range 32 {
		wg.Go(func() {
			for o := range next {
				// As the import handler records it: no connector ID when the
				// API returned the rollout's own.
				if _, err := m.Ledger().Finish(ctx, "mem", versori.OrgID(o), ledger.Outcome{
					State: ledger.Succeeded, Class: "imported", HTTPStatus: 200,
					Version: "1.0.0", Duration: 23456 * time.Microsecond, CountAttempt: true,
				}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	for _, o := range orgs {
		next <- o
	}
	close(next)
	wg.Wait()
	if err := m.OrganisationFinished(ctx, "mem"); err != nil {
		t.Fatal(err)
	}
	finished := usedMemory(t, rdb) - base
	finishedRecords := memoryUsage(t, rdb, orgsKey)
	sample, _ := rdb.HGet(ctx, orgsKey, orgs[0]).Result()

	// The report's own memory (the process's, not Redis's): rows are
	// streamed, and the set that drops HSCAN's duplicates costs a bit a
	// row for these records, which keep their positions once finished.
	// Live heap after a GC, every 100,000 rows; a 1,000,000-row report
	// must stay under 100 MiB.
	live := func() int64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return int64(ms.HeapAlloc)
	}
	heapBefore, heapPeak, rows := live(), int64(0), 0
	start = time.Now()
	if _, err := m.Report(ctx, "mem", rollout.Filter{}, nil, func(rollout.Row) error {
		if rows++; rows%100_000 == 0 {
			heapPeak = max(heapPeak, live()-heapBefore)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if rows != n {
		t.Errorf("report wrote %d rows; want %d", rows, n)
	}
	t.Logf("report: %d rows in %s, live heap growth at most %d B (%.2f B a row)", rows, time.Since(start).Round(time.Millisecond), heapPeak, float64(heapPeak)/float64(n))
	if limit := int64(100 << 20); heapPeak > limit*int64(n)/1_000_000 {
		t.Errorf("report holds %d B of live heap for %d rows; the budget is 100 MiB per 1,000,000", heapPeak, n)
	}

	per := func(b int64) string { return fmt.Sprintf("%.0f B", float64(b)/float64(n)) }
	t.Logf("(a) queued:   used_memory +%d B = %s per organisation (ledger orgs hash %s of it)", queued, per(queued), per(queuedRecords))
	t.Logf("    one asynq task hash: %d B (MEMORY USAGE; its msg field %d bytes), plus its entry in the pending list", taskUsage, len(taskMsg))
	t.Logf("(b) finished: used_memory +%d B = %s per organisation (ledger orgs hash %s of it)", finished, per(finished), per(finishedRecords))
	t.Logf("    finished record (%d bytes of JSON): %s", len(sample), sample)

	// Alternatives, for comparison only (scratch keys; the ledger's format
	// is unchanged): the same outcome without the fields a finished
	// record repeats (u = f; ci = the rollout's connector; h implied by
	// imported), and those records bucketed into small hashes that Redis
	// keeps as listpacks.
	compact := `{"s":"succeeded","a":1,"c":"imported","v":"1.0.0","d":23456,"f":1700000000000}`
	if _, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, o := range orgs {
			p.HSet(ctx, "scratch:compact", o, compact)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("    alt: compact JSON (%d bytes) in one hash: %s per organisation", len(compact), per(memoryUsage(t, rdb, "scratch:compact")))
	rdb.Del(ctx, "scratch:compact")
	// Bucketed, a record must fit hash-max-listpack-value (64 bytes):
	// a short state code, no duration.
	tiny := `{"s":"S","a":1,"c":"imported","v":"1.0.0","f":1700000000000}`
	const buckets = 1024 // about 100 orgs each at 100k: under hash-max-listpack-entries (128)
	before := usedMemory(t, rdb)
	if _, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, o := range orgs {
			p.HSet(ctx, "scratch:bucket:"+strconv.Itoa(i%buckets), o, tiny)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	enc, _ := rdb.ObjectEncoding(ctx, "scratch:bucket:0").Result()
	t.Logf("    alt: %d-byte JSON in %d buckets (%s): %s per organisation", len(tiny), buckets, enc, per(usedMemory(t, rdb)-before))
}

func usedMemory(t *testing.T, rdb *redis.Client) int64 {
	t.Helper()
	info, err := rdb.Info(context.Background(), "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(l, "used_memory:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	t.Fatal("no used_memory in INFO memory")
	return 0
}

func memoryUsage(t *testing.T, rdb *redis.Client, key string) int64 {
	t.Helper()
	n, err := rdb.MemoryUsage(context.Background(), key, 0).Result()
	if err != nil {
		t.Fatal(err)
	}
	return n
}
