package ratebudget

import (
	"context"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// These tests count grants and their order; none asserts how long
// anything took, so a loaded machine cannot fail them.

// queued is how many callers wait for the turn.
func (q *fairTurn) queued() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.waiting
}

// settle polls cond until it holds: how goroutines line up is up to the
// scheduler, so the tests wait for each to be queued before the next.
func settle(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Microsecond)
	}
}

// hold takes the free turn for the test, as flow f.
func hold(t *testing.T, q *fairTurn, f flow) {
	t.Helper()
	if w := q.enqueue(f); w != nil {
		t.Fatal("the turn was not free")
	}
}

func TestFlowWeight(t *testing.T) {
	for _, tc := range []struct{ in, want float64 }{
		{1, 1}, {3, 3}, {0.5, 0.5}, {0, 1}, {-2, 1}, {math.NaN(), 1}, {math.Inf(1), 1}, {math.Inf(-1), 1},
		{MaxFlowWeight, MaxFlowWeight}, {1e9, MaxFlowWeight}, {MinFlowWeight, MinFlowWeight}, {1e-12, MinFlowWeight},
	} {
		if got := flowWeight(tc.in); got != tc.want {
			t.Errorf("flowWeight(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
	if name, w := FlowFrom(context.Background()); name != "" || w != 1 {
		t.Errorf("FlowFrom(no flow) = %q, %v; want the default flow \"\", 1", name, w)
	}
	if name, w := FlowFrom(WithFlow(context.Background(), "r-1", 4)); name != "r-1" || w != 4 {
		t.Errorf("FlowFrom(WithFlow(r-1, 4)) = %q, %v", name, w)
	}
	if name, w := FlowFrom(WithFlow(context.Background(), "r-1", 0)); name != "r-1" || w != 1 {
		t.Errorf("FlowFrom(WithFlow(r-1, 0)) = %q, %v; want weight 1", name, w)
	}
}

// Two flows of weights 3 and 1, both backlogged, share the turns 3:1.
func TestFairTurnSharesByWeight(t *testing.T) {
	for _, weights := range [][2]float64{{3, 1}, {1, 3}, {1, 1}} {
		t.Run(fmt.Sprint(weights), func(t *testing.T) {
			const (
				perFlow = 10
				total   = 400
			)
			q := newFairTurn()
			hold(t, q, flow{"setup", 1})
			var (
				mu     sync.Mutex
				grants []string
				wg     sync.WaitGroup
			)
			for i, name := range []string{"a", "b"} {
				f := flow{name, weights[i]}
				for range perFlow {
					wg.Go(func() {
						for {
							if err := q.wait(context.Background(), f, nil); err != nil {
								t.Error(err)
								return
							}
							mu.Lock()
							done := len(grants) >= total
							if !done {
								grants = append(grants, f.name)
							}
							mu.Unlock()
							q.release()
							if done {
								return
							}
						}
					})
				}
			}
			settle(t, "every caller to queue", func() bool { return q.queued() == 2*perFlow })
			q.release()
			wg.Wait()

			// Count while both flows were surely backlogged: each caller
			// queues again at once, so a flow never has fewer than
			// perFlow-1 waiters until the last grants drain them.
			counted := grants[:total-2*perFlow]
			a := 0
			for _, g := range counted {
				if g == "a" {
					a++
				}
			}
			share, want := float64(a)/float64(len(counted)), weights[0]/(weights[0]+weights[1])
			t.Logf("weights %v: flow a had %d of %d turns = %.3f, want %.3f", weights, a, len(counted), share, want)
			if math.Abs(share-want) > 0.05 {
				t.Errorf("flow a's share %.3f, want %.3f +- 0.05", share, want)
			}
			if q.queued() != 0 || q.held || len(q.flows) != 0 || len(q.ready) != 0 {
				t.Errorf("after the last release: %d waiting, held %v, %d flows, %d ready; want all empty", q.queued(), q.held, len(q.flows), len(q.ready))
			}
		})
	}
}

// runQueue lines callers up behind the holder, one at a time so their
// order is known, releases the turn, and returns the order the callers
// got it in. Each caller gives the turn up as soon as it has it.
func runQueue(t *testing.T, q *fairTurn, callers []flow, label func(i int) string) []string {
	t.Helper()
	var (
		mu    sync.Mutex
		order []string
		wg    sync.WaitGroup
	)
	for i, f := range callers {
		wg.Go(func() {
			if err := q.wait(context.Background(), f, nil); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			order = append(order, label(i))
			mu.Unlock()
			q.release()
		})
		settle(t, "caller to queue", func() bool { return q.queued() == i+1 })
	}
	q.release()
	wg.Wait()
	return order
}

// A new flow starts at the virtual time, ahead of a flow that has just had
// the turn: its first caller goes before a backlog of 20 of the other's.
// One that has just had a turn itself waits for its tag, and cannot skip
// its debt by leaving the queue and coming back.
func TestFairTurnNewFlowGoesNext(t *testing.T) {
	big, small := flow{"big", 1}, flow{"small", 1}
	label := func(callers []flow) func(int) string {
		return func(i int) string { return fmt.Sprintf("%s%d", callers[i].name, i) }
	}
	want := func(first ...string) []string {
		w := slices.Clone(first)
		for i := range 20 {
			if s := fmt.Sprintf("big%d", i); !slices.Contains(w, s) {
				w = append(w, s)
			}
		}
		return w
	}

	t.Run("new flow", func(t *testing.T) {
		q := newFairTurn()
		hold(t, q, big) // a big-rollout handler books
		callers := append(slices.Repeat([]flow{big}, 20), small)
		got := runQueue(t, q, callers, label(callers))
		if w := want("small20"); !slices.Equal(got, w) {
			t.Errorf("order %v, want %v", got, w)
		}
	})

	t.Run("flow that just had the turn", func(t *testing.T) {
		q := newFairTurn()
		hold(t, q, small) // small's tag is now a turn ahead
		callers := append(slices.Repeat([]flow{big}, 20), small)
		got := runQueue(t, q, callers, label(callers))
		if w := want("big0", "small20"); !slices.Equal(got, w) {
			t.Errorf("order %v, want %v: small had its turn, big's first goes first", got, w)
		}
	})

	t.Run("heavier new flow", func(t *testing.T) {
		q := newFairTurn()
		hold(t, q, big)
		heavy := flow{"small", 4}
		callers := append(slices.Repeat([]flow{big}, 20), heavy, heavy, heavy, heavy, heavy)
		got := runQueue(t, q, callers, label(callers))
		// Tags: small 0, 1/4, 2/4, 3/4, 1; big 1, 2, ... and at 1 big
		// came first.
		if w := want("small20", "small21", "small22", "small23", "big0", "small24"); !slices.Equal(got, w) {
			t.Errorf("order %v, want %v", got, w)
		}
	})
}

// A caller that gives up (its context ends, or its time runs out) leaves
// the queue, and the turn still reaches everyone else.
func TestFairTurnCancelledWaiterDoesNotStall(t *testing.T) {
	q := newFairTurn()
	hold(t, q, flow{"a", 1})
	ctx, cancel := context.WithCancel(context.Background())
	expire := make(chan time.Time)
	errs := make(chan error, 2)
	go func() { errs <- q.wait(ctx, flow{"a", 1}, nil) }()
	settle(t, "first caller to queue", func() bool { return q.queued() == 1 })
	go func() { errs <- q.wait(context.Background(), flow{"b", 1}, expire) }()
	settle(t, "second caller to queue", func() bool { return q.queued() == 2 })

	var got []string
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, name := range []string{"a", "b", "c", "a"} {
		wg.Go(func() {
			if err := q.wait(context.Background(), flow{name, 1}, nil); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			got = append(got, name)
			mu.Unlock()
			q.release()
		})
	}
	settle(t, "every caller to queue", func() bool { return q.queued() == 6 })

	cancel()
	if err := <-errs; err != context.Canceled {
		t.Fatalf("cancelled caller got %v, want context.Canceled", err)
	}
	expire <- time.Time{}
	if err := <-errs; err != errTurnExpired {
		t.Fatalf("expired caller got %v, want errTurnExpired", err)
	}
	if n := q.queued(); n != 4 {
		t.Fatalf("%d callers queued after two gave up, want 4", n)
	}
	q.release()
	wg.Wait()
	if len(got) != 4 {
		t.Errorf("%d of 4 callers got the turn: %v", len(got), got)
	}
	if q.held || len(q.flows) != 0 {
		t.Errorf("after the last release: held %v, %d flows", q.held, len(q.flows))
	}
	// A done context does not take even a free turn.
	if err := q.wait(ctx, flow{"a", 1}, nil); err != context.Canceled || q.held {
		t.Errorf("wait(done ctx) = %v, held %v; want context.Canceled, not held", err, q.held)
	}
}

// A turn handed to a caller that has just given up passes to the next
// caller, and the flow that did not use it keeps its place.
func TestFairTurnGrantToLeaverPassesOn(t *testing.T) {
	q := newFairTurn()
	hold(t, q, flow{"x", 1})
	a1 := q.enqueue(flow{"a", 1})
	a2 := q.enqueue(flow{"a", 1})
	b := q.enqueue(flow{"b", 1})
	q.release() // to a1: a's tag is 0, b's 0, a came first
	if !isClosed(a1.granted) || isClosed(a2.granted) || isClosed(b.granted) {
		t.Fatal("the turn did not go to the first caller of a")
	}
	q.leave(a1) // it gave up as the turn came
	if !isClosed(a2.granted) {
		t.Fatal("the turn did not pass from a1 to a2: a1 did not use a's turn, so a keeps it")
	}
	q.release()
	if !isClosed(b.granted) {
		t.Fatal("the turn did not reach b")
	}
	q.release()
	if q.held || q.queued() != 0 || len(q.flows) != 0 {
		t.Errorf("after the last release: held %v, %d waiting, %d flows", q.held, q.queued(), len(q.flows))
	}
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// Idle flows are forgotten once they could gain nothing from being
// remembered, so the table follows the flows that wait, not every one
// ever seen.
func TestFairTurnForgetsIdleFlows(t *testing.T) {
	q := newFairTurn()
	hold(t, q, flow{"steady", 1})
	// steady stays backlogged for the whole test, so the busy period never
	// ends; 1000 one-off flows pass through it.
	// The test plays whichever caller holds the turn.
	steady := q.enqueue(flow{"steady", 1})
	steadyTurns := 0
	for i := range 1000 {
		w := q.enqueue(flow{fmt.Sprint("one-off-", i), 1})
		for range 3 {
			q.release() // to whichever is next
			if isClosed(w.granted) {
				break
			}
			if !isClosed(steady.granted) {
				t.Fatal("the turn went to neither caller")
			}
			steadyTurns++
			steady = q.enqueue(flow{"steady", 1})
		}
		if !isClosed(w.granted) {
			t.Fatalf("one-off flow %d did not get the turn", i)
		}
		if n := len(q.flows); n > 2*minSweep+2 {
			t.Fatalf("%d flows remembered after %d one-off flows, want at most %d", n, i+1, 2*minSweep+2)
		}
	}
	// Each new flow arrived while the one before held the turn, so the
	// virtual time stood still but for the sweeps; steady is not starved.
	t.Logf("steady had %d turns while 1000 one-off flows passed", steadyTurns)
	if steadyTurns < 1000/(2*minSweep) {
		t.Errorf("steady had %d turns while 1000 one-off flows passed, want at least %d", steadyTurns, 1000/(2*minSweep))
	}
	q.leave(steady)
	q.release()
	if q.held || len(q.flows) != 0 {
		t.Errorf("after the last release: held %v, %d flows", q.held, len(q.flows))
	}
}

// Many callers of many flows, some giving up at random: at most one holds
// the turn at a time, every caller that did not give up gets it, and the
// queue is empty at the end. Run it with -race.
func TestFairTurnStress(t *testing.T) {
	const (
		callers = 64
		rounds  = 300
		flows   = 16
	)
	q := newFairTurn()
	var (
		holders, granted, gaveUp atomic.Int64
		wg                       sync.WaitGroup
	)
	for c := range callers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(c), 1))
			for range rounds {
				f := flow{fmt.Sprint("r", rng.IntN(flows)), flowWeight(float64(rng.IntN(5)))}
				if rng.IntN(8) == 0 {
					f = defaultFlow
				}
				ctx, cancel := context.Background(), context.CancelFunc(func() {})
				var expire <-chan time.Time
				switch rng.IntN(6) {
				case 0:
					ctx, cancel = context.WithTimeout(ctx, time.Duration(rng.IntN(200))*time.Microsecond)
				case 1:
					tm := time.NewTimer(time.Duration(rng.IntN(200)) * time.Microsecond)
					expire = tm.C
					cancel = func() { tm.Stop() }
				}
				err := q.wait(ctx, f, expire)
				cancel()
				if err != nil {
					gaveUp.Add(1)
					continue
				}
				if n := holders.Add(1); n != 1 {
					t.Errorf("%d callers hold the turn at once", n)
				}
				granted.Add(1)
				if rng.IntN(4) == 0 {
					time.Sleep(time.Duration(rng.IntN(20)) * time.Microsecond)
				}
				holders.Add(-1)
				q.release()
			}
		})
	}
	wg.Wait()
	t.Logf("%d turns granted, %d callers gave up", granted.Load(), gaveUp.Load())
	if granted.Load()+gaveUp.Load() != callers*rounds {
		t.Errorf("%d granted + %d gave up, want %d", granted.Load(), gaveUp.Load(), callers*rounds)
	}
	if q.held || q.queued() != 0 || len(q.flows) != 0 || len(q.ready) != 0 {
		t.Errorf("at the end: held %v, %d waiting, %d flows, %d ready; want all empty", q.held, q.queued(), len(q.flows), len(q.ready))
	}
}

// booked runs Acquire through a budget on a frozen Redis clock with the
// process clock stopped and sleeps skipped: each booking lies one interval
// after the one before, so the slot each caller was told to sleep until
// gives the order the callers booked in, whatever order they return in.
type booked struct {
	mu    sync.Mutex
	slots map[time.Duration]string
}

func (r *booked) order() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	keys := slices.Sorted(maps.Keys(r.slots))
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = r.slots[k]
	}
	return out
}

func bookingBudget(t *testing.T) (*Budget, *booked) {
	t.Helper()
	_, c := frozen(t)
	// Lookahead and MaxWait far beyond the test's bookings: the turn is
	// all that orders them.
	b := mustNew(t, c, Config{Limit: 1000, Burst: 1, MaxWait: time.Hour, Lookahead: time.Hour})
	rec := &booked{slots: map[time.Duration]string{}}
	stopped := time.Unix(0, 0)
	b.now = func() time.Time { return stopped }
	b.sleep = func(ctx context.Context, d time.Duration) error {
		name, _ := FlowFrom(ctx)
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if prev, dup := rec.slots[d]; dup {
			t.Errorf("two callers (%s, %s) booked the slot at %v", prev, name, d)
		}
		rec.slots[d] = name
		return nil
	}
	return b, rec
}

// Through Acquire: a task of a small rollout that a handler has just
// picked up books before the 20 handlers of a big rollout already waiting.
func TestAcquireNewFlowBooksNext(t *testing.T) {
	b, rec := bookingBudget(t)
	hold(t, b.turn, flow{"big", 1}) // a big-rollout handler is booking
	var wg sync.WaitGroup
	acquire := func(name string) {
		wg.Go(func() {
			if _, err := b.Acquire(WithFlow(context.Background(), name, 1)); err != nil {
				t.Errorf("Acquire(%s): %v", name, err)
			}
		})
	}
	for i := range 20 {
		acquire("big")
		settle(t, "handler to queue", func() bool { return b.turn.queued() == i+1 })
	}
	acquire("small")
	settle(t, "small handler to queue", func() bool { return b.turn.queued() == 21 })
	b.turn.release()
	wg.Wait()
	got := rec.order()
	if want := append([]string{"small"}, slices.Repeat([]string{"big"}, 20)...); !slices.Equal(got, want) {
		t.Errorf("booking order %v, want %v", got, want)
	}
}

// Through Acquire: two rollouts of weights 3 and 1 with handlers always
// waiting book 3:1.
func TestAcquireSharesByWeight(t *testing.T) {
	const (
		perFlow = 8
		total   = 320
	)
	b, rec := bookingBudget(t)
	hold(t, b.turn, defaultFlow)
	var (
		left atomic.Int64
		wg   sync.WaitGroup
	)
	left.Store(total)
	for _, f := range []flow{{"heavy", 3}, {"light", 1}} {
		for range perFlow {
			wg.Go(func() {
				for left.Add(-1) >= 0 {
					if _, err := b.Acquire(WithFlow(context.Background(), f.name, f.weight)); err != nil {
						t.Errorf("Acquire: %v", err)
						return
					}
				}
			})
		}
	}
	settle(t, "every handler to queue", func() bool { return b.turn.queued() == 2*perFlow })
	b.turn.release()
	wg.Wait()
	got := rec.order()
	if len(got) != total {
		t.Fatalf("%d bookings, want %d", len(got), total)
	}
	counted := got[:total-2*perFlow] // both surely backlogged
	heavy := 0
	for _, name := range counted {
		if name == "heavy" {
			heavy++
		}
	}
	share := float64(heavy) / float64(len(counted))
	t.Logf("heavy booked %d of %d = %.3f", heavy, len(counted), share)
	if math.Abs(share-0.75) > 0.05 {
		t.Errorf("heavy's share %.3f, want 0.75 +- 0.05", share)
	}
}

// FuzzFairTurn drives the fair turn through queueing, releases and
// callers giving up (before or after the turn reached them), one step at
// a time without goroutines, and checks after each step that at most one
// caller holds the turn, that the turn went to the first caller of the
// backlogged flow with the smallest tag, that the bookkeeping agrees with
// the callers still waiting, and that draining the queue leaves nothing.
func FuzzFairTurn(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7})
	f.Add([]byte{0, 8, 16, 24, 1, 2, 9, 10, 3, 11, 7, 15})
	f.Fuzz(func(t *testing.T, ops []byte) {
		q := newFairTurn()
		var waiters []*turnWaiter // queued and not yet gone, in order of arrival
		holder := -1              // index in waiters of the caller holding the turn; -1 the test or nobody
		free := true
		check := func() {
			t.Helper()
			queued := 0
			for i, w := range waiters {
				if w.isGranted && i != holder {
					t.Fatalf("waiter %d was granted but does not hold the turn", i)
				}
				if !w.isGranted {
					queued++
				}
			}
			if q.waiting != queued || q.held == free {
				t.Fatalf("%d waiting (want %d), held %v (want %v)", q.waiting, queued, q.held, !free)
			}
			for i, fl := range q.ready {
				if fl.index != i || fl.head == nil || q.flows[fl.name] != fl {
					t.Fatalf("ready[%d] = %+v is inconsistent", i, fl)
				}
			}
		}
		// next is who the turn should go to: the earliest waiter of the
		// flow with the smallest (tag, seq).
		next := func() *turnWaiter {
			var best *turnFlow
			for _, fl := range q.ready {
				if best == nil || fl.tag < best.tag || fl.tag == best.tag && fl.seq < best.seq {
					best = fl
				}
			}
			if best == nil {
				return nil
			}
			for _, w := range waiters {
				if !w.isGranted && w.flow == best {
					return w
				}
			}
			t.Fatalf("flow %q is backlogged with no waiter", best.name)
			return nil
		}
		release := func() {
			t.Helper()
			want := next()
			if holder >= 0 {
				waiters = slices.Delete(waiters, holder, holder+1)
			}
			holder = -1
			q.release()
			if want == nil {
				free = true
				return
			}
			if !want.isGranted {
				t.Fatalf("the turn did not go to the first waiter of the flow with the smallest tag")
			}
			holder = slices.Index(waiters, want)
		}
		for _, op := range ops {
			switch op % 4 {
			case 0, 1: // a caller comes
				fl := flow{fmt.Sprint("f", op>>5), flowWeight(float64(op>>2&7) / 2)}
				if w := q.enqueue(fl); w == nil {
					if !free {
						t.Fatal("a caller took the turn while it was held")
					}
					free = false
				} else {
					waiters = append(waiters, w)
				}
			case 2: // the holder gives the turn up
				if !free {
					release()
				}
			case 3: // a caller gives up
				if len(waiters) == 0 {
					continue
				}
				i := int(op>>2) % len(waiters)
				if i == holder {
					// The turn reached it as it gave up: its flow gets
					// back the tag it had, and the turn passes on.
					w := waiters[i]
					fl := w.flow
					tag, seq := fl.tag, fl.seq
					fl.tag, fl.seq = w.start, w.startSeq
					want := next()
					fl.tag, fl.seq = tag, seq
					waiters = slices.Delete(waiters, i, i+1)
					holder = -1
					q.leave(w)
					if want == nil {
						free = true
					} else if !want.isGranted {
						t.Fatal("the turn of a caller that gave up did not pass to the next")
					} else {
						holder = slices.Index(waiters, want)
					}
					continue
				}
				q.leave(waiters[i])
				waiters = slices.Delete(waiters, i, i+1)
				if holder > i {
					holder--
				}
			}
			check()
		}
		for !free {
			release()
			check()
		}
		if len(waiters) != 0 || len(q.flows) != 0 || len(q.ready) != 0 {
			t.Fatalf("drained: %d waiters, %d flows, %d ready", len(waiters), len(q.flows), len(q.ready))
		}
	})
}
