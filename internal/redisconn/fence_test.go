package redisconn

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// Payloads as Redis 7's sentinels publish them.
const (
	promoting  = "slave 127.0.0.1:7101 127.0.0.1 7101 @ mymaster 127.0.0.1 7100"
	switched   = "mymaster 127.0.0.1 7100 127.0.0.1 7101"
	abortedFor = "master mymaster 127.0.0.1 7100"
	leader     = "127.0.0.1:26379"
)

func TestEventMaster(t *testing.T) {
	for _, tc := range []struct{ channel, payload, want string }{
		{"+failover-state-send-slaveof-noone", promoting, "mymaster"},
		{"+switch-master", switched, "mymaster"},
		{"-failover-abort-slave-timeout", abortedFor, "mymaster"},
		{"-failover-abort-slave-timeout", "master other 10.0.0.1 6379", "other"},
		{"+switch-master", "", ""},
		{"+failover-state-send-slaveof-noone", "slave 1.2.3.4:1 1.2.3.4 1 @", ""},
		{"-failover-abort-not-elected", "garbage", ""},
	} {
		if got := eventMaster(tc.channel, tc.payload); got != tc.want {
			t.Errorf("eventMaster(%q, %q) = %q, want %q", tc.channel, tc.payload, got, tc.want)
		}
	}
}

// fakeServer stands for the server the client's commands go to: the old
// master until switch, then the new one.
type fakeServer struct {
	mu       sync.Mutex
	role, id string
	err      error
	gate     chan struct{} // when set, a probe waits for it
	probes   int
}

func (s *fakeServer) probe(ctx context.Context) (string, string, error) {
	s.mu.Lock()
	gate := s.gate
	s.probes++
	s.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return "", "", ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.role, s.id, s.err
}

func (s *fakeServer) set(role, id string, err error) {
	s.mu.Lock()
	s.role, s.id, s.err = role, id, err
	s.mu.Unlock()
}

func newTestFence(s *fakeServer, max time.Duration) *fence {
	return &fence{master: "mymaster", log: slog.New(slog.DiscardHandler), max: max, probe: s.probe}
}

// blocked reports whether a command waits at the fence for at least d.
func blocked(f *fence, d time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return errors.Is(f.wait(ctx), context.DeadlineExceeded)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 5s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitProbed(t *testing.T, f *fence) {
	t.Helper()
	eventually(t, "the old master's ID asked for", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.probed
	})
}

func TestFenceHoldsFromPromotionToTheNewMaster(t *testing.T) {
	s := &fakeServer{role: "master", id: "old-id"}
	f := newTestFence(s, time.Minute)
	var holds []time.Duration
	var holdsMu sync.Mutex
	f.onHold = func(d time.Duration) {
		holdsMu.Lock()
		holds = append(holds, d)
		holdsMu.Unlock()
	}
	defer f.close()
	ctx := context.Background()

	if blocked(f, 20*time.Millisecond) {
		t.Fatal("a command waited with no failover under way")
	}
	f.event(ctx, leader, "+failover-state-send-slaveof-noone", promoting)
	if !blocked(f, 50*time.Millisecond) {
		t.Fatal("a command went through while the replica was being promoted")
	}
	if err := f.wait(passing(ctx)); err != nil {
		t.Fatalf("the fence's own probe was held: %v", err)
	}
	// Another master's abort, and another sentinel's, are not this
	// failover's.
	f.event(ctx, leader, "-failover-abort-slave-timeout", "master other 127.0.0.1 7200")
	f.event(ctx, "127.0.0.1:26380", "-failover-abort-slave-timeout", abortedFor)
	if !f.holding() {
		t.Fatal("an abort of another failover released the hold")
	}
	// The sentinels name the new master, but the client still writes to
	// the old one (go-redis has not followed yet): still held.
	waitProbed(t, f)
	f.event(ctx, leader, "+switch-master", switched)
	if !blocked(f, 100*time.Millisecond) {
		t.Fatal("released while the client still wrote to the old master")
	}
	s.set("master", "new-id", nil)
	eventually(t, "released once the client writes to the new master", func() bool { return !f.holding() })
	if blocked(f, 20*time.Millisecond) {
		t.Fatal("a command waited after the release")
	}
	holdsMu.Lock()
	defer holdsMu.Unlock()
	if len(holds) != 1 || holds[0] < 150*time.Millisecond {
		t.Errorf("holds observed %v, want one of at least the 150 ms the test held", holds)
	}
}

func TestFenceWaitsForTheOldMastersIDBeforeReleasing(t *testing.T) {
	s := &fakeServer{role: "master", id: "old-id", gate: make(chan struct{})}
	f := newTestFence(s, time.Minute)
	defer f.close()
	ctx := context.Background()
	f.event(ctx, leader, "+failover-state-send-slaveof-noone", promoting)
	// The switch arrives before the old master answered: any master
	// would look new, so nothing may be released yet.
	f.event(ctx, leader, "+switch-master", switched)
	time.Sleep(100 * time.Millisecond)
	if !f.holding() {
		t.Fatal("released before the old master's ID was known")
	}
	close(s.gate)
	time.Sleep(100 * time.Millisecond)
	if !f.holding() {
		t.Fatal("released on the old master")
	}
	s.set("master", "new-id", nil)
	eventually(t, "released on the new master", func() bool { return !f.holding() })
}

func TestFenceAfterADeadMasterReleasesOnAnyMaster(t *testing.T) {
	s := &fakeServer{err: errors.New("connection refused")}
	f := newTestFence(s, time.Minute)
	defer f.close()
	ctx := context.Background()
	f.event(ctx, leader, "+failover-state-send-slaveof-noone", promoting)
	f.event(ctx, leader, "+switch-master", switched)
	time.Sleep(50 * time.Millisecond)
	if !f.holding() {
		t.Fatal("released while no server answered")
	}
	s.set("slave", "x", nil)
	time.Sleep(50 * time.Millisecond)
	if !f.holding() {
		t.Fatal("released on a replica")
	}
	s.set("master", "new-id", nil)
	eventually(t, "released on the new master", func() bool { return !f.holding() })
}

func TestFenceReleasesOnAbortAndAtItsMaximum(t *testing.T) {
	ctx := context.Background()
	t.Run("abort", func(t *testing.T) {
		f := newTestFence(&fakeServer{role: "master", id: "old-id"}, time.Minute)
		defer f.close()
		f.event(ctx, leader, "+failover-state-send-slaveof-noone", promoting)
		f.event(ctx, leader, "-failover-abort-slave-timeout", abortedFor)
		if f.holding() {
			t.Fatal("an aborted failover left the hold on")
		}
	})
	t.Run("maximum", func(t *testing.T) {
		f := newTestFence(&fakeServer{role: "master", id: "old-id"}, 100*time.Millisecond)
		defer f.close()
		f.event(ctx, leader, "+failover-state-send-slaveof-noone", promoting)
		if !f.holding() {
			t.Fatal("no hold")
		}
		// No switch is ever heard: the hold ends at its maximum.
		eventually(t, "released at the maximum", func() bool { return !f.holding() })
	})
	t.Run("close", func(t *testing.T) {
		f := newTestFence(&fakeServer{role: "master", id: "old-id"}, time.Minute)
		f.event(ctx, leader, "+failover-state-send-slaveof-noone", promoting)
		errc := make(chan error, 1)
		go func() { errc <- f.wait(ctx) }()
		f.close()
		select {
		case err := <-errc:
			if err != nil {
				t.Fatalf("wait after close: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a held command stayed held after Close")
		}
	})
}

func TestFenceHeldCommandEndsWithItsContext(t *testing.T) {
	f := newTestFence(&fakeServer{role: "master", id: "old-id"}, time.Minute)
	defer f.close()
	f.event(context.Background(), leader, "+failover-state-send-slaveof-noone", promoting)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := f.wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("wait = %v, want context.Canceled", err)
	}
}

func TestFenceOneHoldPerFailover(t *testing.T) {
	s := &fakeServer{role: "master", id: "old-id"}
	f := newTestFence(s, time.Minute)
	defer f.close()
	ctx := context.Background()
	f.event(ctx, leader, "+failover-state-send-slaveof-noone", promoting)
	f.event(ctx, leader, "+failover-state-send-slaveof-noone", promoting)
	if f.currentGen() != 1 {
		t.Fatalf("%d holds for one failover", f.currentGen())
	}
	waitProbed(t, f)
	s.set("master", "new-id", nil)
	f.event(ctx, leader, "+switch-master", switched)
	eventually(t, "released", func() bool { return !f.holding() })
	// The next failover holds again, from the new master's ID.
	f.event(ctx, leader, "+failover-state-send-slaveof-noone", promoting)
	if !f.holding() || f.currentGen() != 2 {
		t.Fatal("the second failover was not held")
	}
}
