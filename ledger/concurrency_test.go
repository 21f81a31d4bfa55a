package ledger_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/versori"
)

// Many workers deliver every organisation's task more than once, at the
// same time: each organisation must change exactly once, and the counters
// must count it exactly once.
func TestConcurrentDoubleDelivery(t *testing.T) {
	forEach(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		ctx := context.Background()
		const orgs, workers = 300, 12
		ids := orgIDs(orgs)
		l, _ := newLedger(t, rdb, prefix, ids...)
		var changed atomic.Int64
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(w), 1))
				for _, i := range rng.Perm(orgs) {
					o := ledger.Outcome{State: ledger.Succeeded, Class: "imported", HTTPStatus: 200, Version: "1", CountAttempt: true}
					if i%3 == 0 {
						o = ledger.Outcome{State: ledger.Failed, Class: "not_found", HTTPStatus: 404, CountAttempt: true}
					}
					f, err := l.Finish(ctx, "r1", versori.OrgID(ids[i]), o)
					if err != nil {
						t.Error(err)
						return
					}
					if f.Changed {
						changed.Add(1)
					}
				}
			})
		}
		wg.Wait()
		if changed.Load() != orgs {
			t.Errorf("%d Finish calls reported a change; want %d (one per organisation)", changed.Load(), orgs)
		}
		checkCounts(t, l, "r1", ledger.Counts{Total: orgs, Succeeded: 200, Failed: 100,
			ByClass: map[string]int64{"imported": 200, "not_found": 100}, ByVersion: map[string]int64{"1": 200}})
	})
}

// Every operation at once, on the same organisations, in random order: the
// counters must still equal a recount of the records, and succeeded
// records, once there, must stay. Half the workers read and finish through
// a Batcher, as the worker does, so batched writes interleave with single
// ones and with every other operation.
func TestConcurrentMixedOperations(t *testing.T) {
	forEach(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		ctx := context.Background()
		const orgs, workers, opsPerWorker = 100, 10, 150
		ids := orgIDs(orgs)
		l, _ := newLedger(t, rdb, prefix)
		b := ledger.NewBatcher(l, ledger.BatcherOptions{})
		classes := []string{"server_error", "timeout", "rate_limited", "exhausted", "not_found"}
		var (
			wg        sync.WaitGroup
			succeeded sync.Map // orgs seen succeeded by any worker
		)
		for w := range workers {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(w), 2))
				var rw interface {
					Org(ctx context.Context, rolloutID string, orgID versori.OrgID) (ledger.Record, error)
					Finish(ctx context.Context, rolloutID string, orgID versori.OrgID, o ledger.Outcome) (ledger.Finished, error)
				} = l
				if w%2 == 1 {
					rw = b
				}
				for range opsPerWorker {
					org := ids[rng.IntN(orgs)]
					class := classes[rng.IntN(len(classes))]
					var err error
					switch op := rng.IntN(100); {
					case op < 5:
						_, err = l.AddOrgs(ctx, "r1", []versori.OrgID{versori.OrgID(org), versori.OrgID(ids[rng.IntN(orgs)])})
					case op < 45:
						err = l.Attempt(ctx, "r1", versori.OrgID(org), ledger.Attempt{Class: class, HTTPStatus: 503})
					case op < 50:
						_, err = rw.Finish(ctx, "r1", versori.OrgID(org), ledger.Outcome{State: ledger.Succeeded, Class: "imported", Version: []string{"1", "2"}[rng.IntN(2)], CountAttempt: true})
					case op < 75:
						_, err = rw.Finish(ctx, "r1", versori.OrgID(org), ledger.Outcome{State: ledger.Failed, Class: class, CountAttempt: rng.IntN(2) == 0})
					case op < 90:
						_, err = l.Requeue(ctx, "r1", []versori.OrgID{versori.OrgID(org)})
					default:
						_, err = l.Cancel(ctx, "r1", []versori.OrgID{versori.OrgID(org)})
					}
					if err != nil && !isNotFound(err) {
						t.Error(err)
						return
					}
					if rec, err := rw.Org(ctx, "r1", versori.OrgID(org)); err == nil && rec.State == ledger.Succeeded {
						succeeded.Store(org, rec)
					}
				}
			})
		}
		wg.Wait()
		got := counts(t, l, "r1")
		re, err := l.Recount(ctx, "r1")
		if err != nil {
			t.Fatal(err)
		}
		if !equalCounts(got, re) {
			t.Errorf("counters %s\ndisagree with records %s", fmtCounts(got), fmtCounts(re))
		}
		if sum := got.Pending + got.Succeeded + got.Failed + got.Cancelled; sum != got.Total {
			t.Errorf("states sum to %d; total %d", sum, got.Total)
		}
		succeeded.Range(func(k, v any) bool {
			if rec, err := l.Org(ctx, "r1", versori.OrgID(k.(string))); err != nil || rec != v.(ledger.Record) {
				t.Errorf("succeeded record of %s changed: %+v -> %+v (%v)", k, v, rec, err)
			}
			return true
		})
		t.Logf("final: %s", fmtCounts(got))
	})
}

// isNotFound: organisations join the rollout while the others work on them.
func isNotFound(err error) bool { return errors.Is(err, ledger.ErrOrgNotFound) }
