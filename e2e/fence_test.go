package e2e

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/versori/import-worker/internal/redisconn"
)

// TestSentinelFailoverKeepsAcknowledgedWrites drives redisconn's fence
// alone: four writers INCR one key through a redis-sentinel:// client
// while SENTINEL FAILOVER promotes the replica, and afterwards the new
// master must hold every increment the client saw acknowledged. The same
// run with the fence off (FailoverHold -1) must lose some (the old master
// takes writes until the client follows +switch-master, and discards them
// when it becomes a replica), or the test could not tell.
func TestSentinelFailoverKeepsAcknowledgedWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	t.Parallel()
	for _, tc := range []struct {
		name string
		hold time.Duration
	}{{"fenced", 0}, {"unfenced", -1}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ss := startSentinelSet(t)
			ctx := context.Background()
			rdb, err := redisconn.New(ss.URL(), redisconn.Options{FailoverHold: tc.hold})
			if err != nil {
				t.Fatal(err)
			}
			defer rdb.Close()
			master, replica := ss.current(t)

			var acked, failed atomic.Int64
			var longest atomic.Int64 // the longest one INCR took, in ns
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						start := time.Now()
						cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
						err := rdb.Incr(cctx, "fence:n").Err()
						cancel()
						if d := int64(time.Since(start)); d > longest.Load() {
							longest.Store(d)
						}
						if err != nil {
							failed.Add(1)
							time.Sleep(10 * time.Millisecond)
							continue
						}
						acked.Add(1)
						time.Sleep(2 * time.Millisecond)
					}
				}()
			}
			time.Sleep(500 * time.Millisecond)
			if err := ss.sentinels[0].Client().Do(ctx, "SENTINEL", "FAILOVER", ss.name).Err(); err != nil {
				t.Fatalf("SENTINEL FAILOVER: %v", err)
			}
			faultAt := time.Now()
			if !eventually(30*time.Second, func() bool { return ss.masterPort(ctx) == replica.Port() }) {
				t.Fatalf("the sentinels did not promote the replica within 30s")
			}
			promoted := time.Since(faultAt)
			time.Sleep(2 * time.Second) // writes go on past the switch
			close(stop)
			wg.Wait()
			kept, err := replica.Client().Get(ctx, "fence:n").Int64()
			if err != nil {
				t.Fatalf("GET on the new master: %v", err)
			}
			oldHas, _ := master.Client().Get(ctx, "fence:n").Int64()
			lost := acked.Load() - kept
			figure(t, "%s: promoted %.2fs after SENTINEL FAILOVER; %d INCRs acknowledged, %d failed, the new master holds %d (the old one %d): %d acknowledged writes lost; longest INCR %.2fs",
				tc.name, promoted.Seconds(), acked.Load(), failed.Load(), kept, oldHas, max(0, lost), time.Duration(longest.Load()).Seconds())
			switch {
			case tc.hold >= 0 && lost > 0:
				t.Errorf("the new master holds %d of %d acknowledged increments: %d lost through the fence", kept, acked.Load(), lost)
			case tc.hold >= 0 && time.Duration(longest.Load()) > 10*time.Second:
				t.Errorf("an INCR was held %.1fs, more than the fence's maximum hold", time.Duration(longest.Load()).Seconds())
			case tc.hold < 0 && lost <= 0:
				t.Errorf("without the fence no acknowledged write was lost (%d acknowledged, %d kept): the test cannot tell the fence works", acked.Load(), kept)
			}
		})
	}
}
