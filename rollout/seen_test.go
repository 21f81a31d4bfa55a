package rollout

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/versori/import-worker/internal/redistest"
	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/versori"
)

func seenOrg(i int) versori.OrgID { return versori.OrgID(fmt.Sprintf("01J%023d", i)) }

// TestReportDropsDuplicates feeds report a scan that returns records twice,
// as HSCAN may: records with a position (in several bitset pages), records
// without one, and a record seen pending and then finished. Each
// organisation comes out once.
func TestReportDropsDuplicates(t *testing.T) {
	var recs []ledger.Record
	for i := 1; i <= 5; i++ {
		recs = append(recs, ledger.Record{OrgID: seenOrg(i), State: ledger.Pending, Position: int64(i)})
	}
	for _, q := range []int64{seenPageBits - 1, seenPageBits, 3*seenPageBits + 7} {
		recs = append(recs, ledger.Record{OrgID: seenOrg(int(q)), State: ledger.Succeeded, Position: q})
	}
	for i := 100; i < 103; i++ {
		recs = append(recs, ledger.Record{OrgID: seenOrg(i), State: ledger.Failed}) // no position
	}
	// HSCAN's duplicates: everything again, in another order, one record
	// changed meanwhile (finished: it keeps its position).
	again := slices.Clone(recs)
	slices.Reverse(again)
	again[len(again)-1].State = ledger.Succeeded
	scan := func(fn func(ledger.Record) error) error {
		for _, r := range append(recs, again...) {
			if err := fn(r); err != nil {
				return err
			}
		}
		return nil
	}
	var got []versori.OrgID
	if err := report(scan, func(r ledger.Record) error { got = append(got, r.OrgID); return nil }); err != nil {
		t.Fatal(err)
	}
	want := make([]versori.OrgID, len(recs))
	for i, r := range recs {
		want[i] = r.OrgID
	}
	if !slices.Equal(got, want) {
		t.Errorf("report wrote %v;\nwant each once, in scan order: %v", got, want)
	}

	// An error from fn stops the scan and is returned.
	stop := errors.New("stop")
	n := 0
	if err := report(scan, func(ledger.Record) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Errorf("error from fn: %v after %d rows", err, n)
	}
}

// TestSeenSetMemory: the de-duplication set of a 1,000,000-row report of
// enlisted records costs a bit a row (128 KiB), not ~40 bytes (40 MB);
// records without a position still cost a set entry (logged).
func TestSeenSetMemory(t *testing.T) {
	const n = 1_000_000
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	var s seenSet
	rec := ledger.Record{OrgID: seenOrg(0)}
	for q := int64(1); q <= n; q++ {
		rec.Position = q
		if !s.add(rec) {
			t.Fatalf("position %d seen before", q)
		}
	}
	grown := int64(heap()) - int64(before)
	for _, q := range []int64{1, n / 2, n} {
		rec.Position = q
		if s.add(rec) {
			t.Fatalf("position %d not remembered", q)
		}
	}
	runtime.KeepAlive(&s)
	t.Logf("%d positioned rows: heap +%d B (%.3f B a row)", n, grown, float64(grown)/n)
	if grown > 1<<20 {
		t.Errorf("%d positioned rows cost %d B of heap; want under 1 MiB", n, grown)
	}

	const m = 100_000
	before = heap()
	var o seenSet
	for i := range m {
		if !o.add(ledger.Record{OrgID: seenOrg(i)}) {
			t.Fatalf("org %d seen before", i)
		}
	}
	grown = int64(heap()) - int64(before)
	runtime.KeepAlive(&o)
	t.Logf("%d rows without a position: heap +%d B (%.1f B a row)", m, grown, float64(grown)/m)
}

// TestReportOnShrinkingHash provokes real HSCAN duplicates: while a report
// of a large rollout runs, most of its records are deleted, so Redis
// shrinks the hash under the cursor and returns some records again. The
// report must write each organisation once, and every record never
// deleted. A shrink returns duplicates only when the cursor stopped inside
// a group of buckets, so the test tries up to five rollouts and skips if
// HSCAN never returned one (it then proved nothing).
func TestReportOnShrinkingHash(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a redis-server")
	}
	rdb := redistest.Start(t, redistest.Options{}).Client()
	m := New(rdb, Options{})
	for attempt := range 5 {
		dups, positioned := shrinkingReport(t, m, rdb, fmt.Sprintf("shrink-%d", attempt), attempt)
		if dups > 0 {
			t.Logf("attempt %d: HSCAN returned %d duplicates (%d of records with a position); each written once", attempt+1, dups, positioned)
			return
		}
	}
	t.Skip("HSCAN returned no duplicates in five tries: nothing was de-duplicated")
}

// shrinkingReport runs one report of TestReportOnShrinkingHash and returns
// how many duplicates HSCAN returned, and how many of them had a position.
// Each attempt takes other IDs, which land in other buckets.
func shrinkingReport(t *testing.T, m *Manager, rdb *redis.Client, id string, attempt int) (dups, positioned int) {
	t.Helper()
	ctx := context.Background()
	const n, keep = 40_000, 1_500
	ids := make([]versori.OrgID, n)
	for i := range ids {
		ids[i] = seenOrg(attempt*n + i)
	}
	if _, err := m.led.CreateRollout(ctx, ledger.Rollout{ID: id, ConnectorID: "01HZY3K8W0V6Q1B2C3D4E5F6G7", Version: "1"}); err != nil {
		t.Fatal(err)
	}
	// Half enlisted (with positions), half registered (without).
	if _, err := m.led.Enlist(ctx, id, ids[:n/2]); err != nil {
		t.Fatal(err)
	}
	if _, err := m.led.Register(ctx, id, ids[n/2:]); err != nil {
		t.Fatal(err)
	}
	kept := map[versori.OrgID]bool{}
	for i := 0; i < n; i += n / keep {
		kept[ids[i]] = true
	}
	orgsKey := m.Keys(id)[1]
	// The scan's first page, as HSCAN returns it to the ledger (same
	// cursor, same COUNT, same hash): kept, so the records Redis returns
	// again after the shrink (the end of that page) are still there.
	page, _, err := rdb.HScan(ctx, orgsKey, 0, "", ledger.DefaultScanCount).Result()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(page); i += 2 {
		kept[versori.OrgID(page[i])] = true
	}
	raw := map[versori.OrgID]int{}
	deleted := false
	scan := func(fn func(ledger.Record) error) error {
		return m.led.Scan(ctx, id, func(r ledger.Record) error {
			raw[r.OrgID]++
			if raw[r.OrgID] > 1 {
				dups++
				if r.Position > 0 {
					positioned++
				}
			}
			if !deleted {
				deleted = true
				var drop []string
				for _, o := range ids {
					if !kept[o] {
						drop = append(drop, string(o))
					}
				}
				if _, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
					for lo := 0; lo < len(drop); lo += 1000 {
						p.HDel(ctx, orgsKey, drop[lo:min(lo+1000, len(drop))]...)
					}
					return nil
				}); err != nil {
					return err
				}
			}
			return fn(r)
		})
	}
	out := map[versori.OrgID]int{}
	if err := report(scan, func(r ledger.Record) error { out[r.OrgID]++; return nil }); err != nil {
		t.Fatal(err)
	}
	for o, c := range out {
		if c != 1 {
			t.Errorf("%s: %s written %d times", id, o, c)
		}
	}
	for o := range kept {
		if out[o] != 1 {
			t.Errorf("%s: %s, never deleted, written %d times", id, o, out[o])
		}
	}
	return dups, positioned
}
