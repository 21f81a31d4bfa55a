package ledger

import (
	"context"
	"sync"
	"testing"
	"time"
)

// A flush that panics answers its batch with an error, re-panics in the
// caller that sent it, and leaves the lane free: the next call is sent.
func TestBatchGroupSurvivesAPanic(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	flushes := 0
	g := batchGroup[int, int]{max: 10, flush: func(_ context.Context, _ string, calls []*batchCall[int, int]) {
		mu.Lock()
		flushes++
		n := flushes
		mu.Unlock()
		if n == 1 {
			close(entered)
			<-release
			panic("boom")
		}
		for _, c := range calls {
			c.res = c.req * 2
		}
	}}
	ctx := context.Background()
	panicked := make(chan any, 1)
	go func() {
		defer func() { panicked <- recover() }()
		g.do(ctx, "r", 1)
	}()
	<-entered
	errc := make(chan error, 1)
	go func() { _, err := g.do(ctx, "r", 2); errc <- err }() // queued: the second batch
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Millisecond) {
		g.mu.Lock()
		queued := len(g.lanes["r"].queue)
		g.mu.Unlock()
		if queued == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the second call never queued")
		}
	}
	close(release)
	if p := <-panicked; p != "boom" {
		t.Fatalf("the sender recovered %v; want the flush's panic", p)
	}
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("the call queued behind the panicking batch: %v; want it sent in the next", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the call queued behind the panicking batch is stuck: the lane stayed busy")
	}
	if res, err := g.do(ctx, "r", 21); err != nil || res != 42 {
		t.Fatalf("a later call: %d, %v; want 42", res, err)
	}
}
