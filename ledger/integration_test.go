package ledger_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/versori/import-worker/internal/redistest"
	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/versori"
)

// A rollout of 100,000 organisations on a real Redis: adding them, reading
// the status, finishing a share of them and streaming them all back. Timings
// are logged, not asserted (the machine is shared); what is asserted is
// counted: the commands each step sends.
func TestLargeRollout(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	const n = 100_000
	s := redistest.Start(t, redistest.Options{})
	rdb := s.Client()
	ctx := context.Background()
	l := ledger.New(rdb, ledger.Options{})
	if _, err := l.CreateRollout(ctx, ledger.Rollout{ID: "big", ConnectorID: "c", Version: "1.0.0"}); err != nil {
		t.Fatal(err)
	}
	ids := orgIDs(n)
	stats := func() map[string]int64 {
		t.Helper()
		m, err := s.CommandStats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	delta := func(before, after map[string]int64) map[string]int64 {
		d := map[string]int64{}
		for k, v := range after {
			if v != before[k] && k != "info" && k != "hello" && k != "client|setinfo" {
				d[k] = v - before[k]
			}
		}
		return d
	}

	st := stats()
	start := time.Now()
	added, err := l.AddOrgs(ctx, "big", oids(ids...))
	addTook := time.Since(start)
	if err != nil || added != n {
		t.Fatalf("AddOrgs = %d, %v; want %d", added, err, n)
	}
	d := delta(st, stats())
	t.Logf("AddOrgs of %d organisations: %v (%.0f orgs/s), commands %v", n, addTook, n/addTook.Seconds(), d)
	// The first batches in flight each meet NOSCRIPT once (EVALSHA, then
	// EVAL).
	if calls := d["evalsha"] + d["eval"]; calls > n/ledger.DefaultBatchSize+2*ledger.DefaultParallelism {
		t.Errorf("AddOrgs made %d script calls; want about %d (one per batch)", calls, n/ledger.DefaultBatchSize)
	}

	start = time.Now()
	again, err := l.AddOrgs(ctx, "big", oids(ids...))
	t.Logf("AddOrgs again (nothing new): %v", time.Since(start))
	if err != nil || again != 0 {
		t.Fatalf("repeated AddOrgs = %d, %v; want 0", again, err)
	}

	// The producer's path on a re-run: every organisation is known.
	start = time.Now()
	states, err := l.Register(ctx, "big", oids(ids...))
	t.Logf("Register of %d known organisations: %v", n, time.Since(start))
	if err != nil || len(states) != n || states[0] != ledger.Pending || states[n-1] != ledger.Pending {
		t.Fatalf("Register = %d states, %v", len(states), err)
	}

	// Finish a tenth of them from 8 goroutines, each organisation twice.
	start = time.Now()
	var wg sync.WaitGroup
	const finishers = 8
	for w := range finishers {
		wg.Go(func() {
			for i := w; i < n/10; i += finishers {
				for range 2 {
					if _, err := l.Finish(ctx, "big", versori.OrgID(ids[i]), ledger.Outcome{State: ledger.Succeeded, Class: "imported", HTTPStatus: 200, Version: "1.0.0", CountAttempt: true}); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	t.Logf("Finish: %d calls from %d goroutines in %v (%.0f calls/s)", 2*n/10, finishers, took, float64(2*n/10)/took.Seconds())

	// Status reads two small hashes, whatever the size.
	st = stats()
	start = time.Now()
	r, c, err := l.Rollout(ctx, "big")
	statusTook := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	d = delta(st, stats())
	t.Logf("Rollout (status) of %d organisations: %v, commands %v", r.Total, statusTook, d)
	if len(d) != 1 || d["hgetall"] != 2 {
		t.Errorf("Rollout sent %v; want exactly 2 HGETALL (def and counters), never the records", d)
	}
	want := ledger.Counts{Total: n, Pending: n - n/10, Succeeded: n / 10,
		ByClass: map[string]int64{"imported": n / 10}, ByVersion: map[string]int64{"1.0.0": n / 10}}
	if !equalCounts(c, want) {
		t.Errorf("counts = %s\nwant     %s", fmtCounts(c), fmtCounts(want))
	}

	// Scan streams in pages; the heap stays small next to the rollout.
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base, peak := ms.HeapAlloc, ms.HeapAlloc
	st = stats()
	start = time.Now()
	seen, succeeded := 0, 0
	err = l.Scan(ctx, "big", func(r ledger.Record) error {
		seen++
		if r.State == ledger.Succeeded {
			succeeded++
		}
		if seen%10_000 == 0 {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
		}
		return nil
	})
	scanTook := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	d = delta(st, stats())
	t.Logf("Scan of %d records: %v (%.0f records/s), %d HSCAN pages, heap growth at most %.1f MiB",
		seen, scanTook, float64(seen)/scanTook.Seconds(), d["hscan"], float64(peak-base)/(1<<20))
	if seen < n || succeeded < n/10 {
		t.Errorf("Scan saw %d records (%d succeeded); want at least %d (%d)", seen, succeeded, n, n/10)
	}
	if d["hscan"] < n/ledger.DefaultScanCount/2 {
		t.Errorf("Scan used %d HSCAN pages; want about %d (streamed, not loaded whole)", d["hscan"], n/ledger.DefaultScanCount)
	}

	re, err := l.Recount(ctx, "big")
	if err != nil {
		t.Fatal(err)
	}
	if !equalCounts(re, want) {
		t.Errorf("recount = %s\nwant      %s", fmtCounts(re), fmtCounts(want))
	}

	mem, _ := rdb.MemoryUsage(ctx, "versori-import:rollout:{big}:orgs", 0).Result()
	t.Logf("Redis memory for %d records: %.1f MiB (%.0f bytes/record)", n, float64(mem)/(1<<20), float64(mem)/n)

	start = time.Now()
	if ok, err := l.Delete(ctx, "big"); err != nil || !ok {
		t.Fatalf("Delete = %v, %v", ok, err)
	}
	t.Logf("Delete: %v", time.Since(start))
}

func BenchmarkAddOrgs(b *testing.B) {
	for _, batch := range []int{100, 1000} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			s := redistest.Start(b, redistest.Options{})
			ctx := context.Background()
			l := ledger.New(s.Client(), ledger.Options{BatchSize: batch})
			if _, err := l.CreateRollout(ctx, ledger.Rollout{ID: "b", ConnectorID: "c", Version: "v"}); err != nil {
				b.Fatal(err)
			}
			const per = 10_000
			ids := make([]string, per)
			b.ResetTimer()
			for i := range b.N {
				for j := range ids {
					ids[j] = fmt.Sprintf("org-%d-%d", i, j)
				}
				if _, err := l.AddOrgs(ctx, "b", oids(ids...)); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*per)/b.Elapsed().Seconds(), "orgs/s")
		})
	}
}

func BenchmarkFinish(b *testing.B) {
	s := redistest.Start(b, redistest.Options{})
	ctx := context.Background()
	l := ledger.New(s.Client(), ledger.Options{})
	if _, err := l.CreateRollout(ctx, ledger.Rollout{ID: "b", ConnectorID: "c", Version: "v"}); err != nil {
		b.Fatal(err)
	}
	ids := orgIDs(b.N)
	if _, err := l.AddOrgs(ctx, "b", oids(ids...)); err != nil {
		b.Fatal(err)
	}
	var mu sync.Mutex
	next := 0
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			mu.Lock()
			id := ids[next]
			next++
			mu.Unlock()
			if _, err := l.Finish(ctx, "b", versori.OrgID(id), ledger.Outcome{State: ledger.Succeeded, Class: "imported", HTTPStatus: 200, Version: "v", CountAttempt: true}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "finishes/s")
}
