package ratebudget

import (
	"container/heap"
	"context"
	"errors"
	"math"
	"sync"
	"time"
)

// Limits on a flow's weight (see WithFlow). The ratio of the two bounds
// how far one flow can be preferred to another (10^6 : 1) and keeps every
// step of a flow's virtual tag (1/weight) between 0.001 and 1000, so the
// tags stay exact enough in a float64 over any busy period.
const (
	MaxFlowWeight = 1000
	MinFlowWeight = 1.0 / MaxFlowWeight
)

// flowKey is the context key of a caller's flow.
type flowKey struct{}

// flow is who a caller books for: callers of one flow share its part of
// the process's turns.
type flow struct {
	name   string
	weight float64
}

// defaultFlow is the flow of callers that name none.
var defaultFlow = flow{name: "", weight: 1}

// WithFlow returns a context under which Acquire and Wait book as part of
// flow, with the given weight. While several flows have callers waiting
// for this process's turn to book, the turns are shared among them in
// proportion to their weights (weighted fair queueing), instead of in the
// order the callers came: a rollout's task that a handler has just picked
// up does not wait behind every other handler of the process holding
// tasks of a bigger rollout. Within one flow callers keep their order.
//
// Callers whose context names no flow form one default flow of weight 1;
// an empty flow name is that default flow. A weight <= 0, NaN or ±Inf
// means 1; a weight is capped at MaxFlowWeight and raised to
// MinFlowWeight. The flow orders callers inside one process only: the
// fleet's rate is shared between processes by the booking script, first
// come first served, and across the fleet by what the queue feeds each
// process. Reserve, a single booking attempt that takes no turn, is not
// ordered by it.
func WithFlow(ctx context.Context, name string, weight float64) context.Context {
	return context.WithValue(ctx, flowKey{}, flow{name: name, weight: flowWeight(weight)})
}

// FlowFrom returns the flow ctx books for, and its weight as the budget
// uses it: the default flow ("", 1) when WithFlow named none. Other
// implementations of a budget (a test's fake, a wrapper) read it here.
func FlowFrom(ctx context.Context) (name string, weight float64) {
	f := flowOf(ctx)
	return f.name, f.weight
}

func flowOf(ctx context.Context) flow {
	if f, ok := ctx.Value(flowKey{}).(flow); ok {
		return f
	}
	return defaultFlow
}

// flowWeight is w as the turn uses it: a weight the caller did not mean
// (<= 0, NaN, Inf) counts as the default 1, and the rest is kept within
// [MinFlowWeight, MaxFlowWeight].
func flowWeight(w float64) float64 {
	if math.IsNaN(w) || math.IsInf(w, 0) || w <= 0 {
		return 1
	}
	return min(max(w, MinFlowWeight), MaxFlowWeight)
}

// errTurnExpired is what fairTurn.wait returns when its expiry fires
// first.
var errTurnExpired = errors.New("ratebudget: turn expired")

// fairTurn is the process's turn to book: held by at most one caller at a
// time, and handed to the waiting callers by start-time fair queueing
// (Goyal, Vin and Cheng, 1996) across flows.
//
// Each flow has a virtual tag: the virtual start time of its next turn.
// The turn goes to the first waiter of the backlogged flow with the
// smallest tag (ties first come, first served), the virtual time becomes
// that tag, and the flow's tag advances by 1/weight of the waiter it went
// to. Two backlogged flows of weights 3 and 1 so take 3 turns and 1. A
// flow that becomes backlogged starts at max(its tag, the virtual time):
// a flow that was idle has no credit banked for the turns it did not
// want, and one that has just had a turn cannot skip its debt by leaving
// and coming back. A new flow starts at the virtual time, so its first
// waiter goes before a flow whose tag is ahead of it, that is, before a
// flow that has just had a turn.
//
// Choosing is O(log flows) with a heap of the backlogged flows; waiters
// of one flow are a linked list, so a waiter that gives up leaves in
// O(1) (and its flow leaves the heap in O(log flows)). An idle flow is
// remembered only while its tag is ahead of the virtual time (after that
// it is the same as a new one), and the whole table is dropped when the
// turn falls free with nobody waiting, so memory follows the flows that
// wait now, not every rollout ever seen. (A stream of new flows, each
// arriving while the one before holds the turn, would keep the virtual
// time still; when the idle flows outnumber the backlogged ones, the
// virtual time moves up to the smallest backlogged tag: see flow.)
type fairTurn struct {
	mu    sync.Mutex
	held  bool
	vtime float64
	seq   uint64 // orders tags set at the same virtual time
	// flows holds the backlogged flows and the idle ones whose tag is
	// ahead of vtime; ready the backlogged ones, by tag.
	flows   map[string]*turnFlow
	ready   flowHeap
	waiting int
	sweepAt int // size of flows at which idle entries are next swept
}

type turnFlow struct {
	name       string
	tag        float64
	seq        uint64
	index      int // in ready; -1 when the flow has no waiters
	head, tail *turnWaiter
}

type turnWaiter struct {
	flow       *turnFlow
	weight     float64
	granted    chan struct{} // closed when the turn is handed to this waiter
	isGranted  bool          // set, under fairTurn.mu, with the close
	start      float64       // the flow's tag and its seq before the turn was granted,
	startSeq   uint64        // to give them back if it goes unused
	prev, next *turnWaiter
}

// minSweep is the size of the flow table below which idle flows are left
// for the end of the busy period.
const minSweep = 64

func newFairTurn() *fairTurn {
	return &fairTurn{flows: map[string]*turnFlow{}, sweepAt: minSweep}
}

// wait returns nil when the caller holds the turn, ctx's error when ctx
// ends first, and errTurnExpired when expire fires first. A caller that
// gets nil must release the turn.
func (q *fairTurn) wait(ctx context.Context, f flow, expire <-chan time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	w := q.enqueue(f)
	if w == nil {
		return nil
	}
	select {
	case <-w.granted:
		return nil
	case <-ctx.Done():
		q.leave(w)
		return ctx.Err()
	case <-expire:
		q.leave(w)
		return errTurnExpired
	}
}

// enqueue takes the turn at once when it is free (and returns nil), or
// queues a waiter for it.
func (q *fairTurn) enqueue(f flow) *turnWaiter {
	q.mu.Lock()
	defer q.mu.Unlock()
	fl := q.flow(f.name)
	if fl.head == nil {
		// Backlogged again: no credit for the time it was idle.
		fl.tag = max(fl.tag, q.vtime)
		fl.seq = q.nextSeq()
	}
	if !q.held {
		// Nobody waits when the turn is free: release hands it on.
		q.held = true
		q.grantTo(fl, f.weight)
		q.forgetIfIdle(fl)
		return nil
	}
	w := &turnWaiter{flow: fl, weight: f.weight, granted: make(chan struct{})}
	if fl.tail == nil {
		fl.head, fl.tail = w, w
		heap.Push(&q.ready, fl)
	} else {
		w.prev, fl.tail.next, fl.tail = fl.tail, w, w
	}
	q.waiting++
	return w
}

// leave takes a waiter that gave up out of the queue. If the turn was
// handed to it meanwhile, its flow gets the turn back (it did not use
// it) and the turn passes on: a waiter that gives up never takes a turn
// with it.
func (q *fairTurn) leave(w *turnWaiter) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if w.isGranted {
		if fl := w.flow; q.flows[fl.name] == fl {
			fl.tag, fl.seq = w.start, w.startSeq
			if fl.index >= 0 {
				heap.Fix(&q.ready, fl.index)
			}
		}
		q.handOn()
		return
	}
	q.unlink(w)
	q.forgetIfIdle(w.flow)
}

// release gives up the turn: to the next waiter, if any.
func (q *fairTurn) release() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.held {
		panic("ratebudget: release of a turn not held")
	}
	q.handOn()
}

func (q *fairTurn) handOn() {
	if len(q.ready) == 0 {
		// The end of a busy period: every flow is idle, and none may
		// keep credit or debt into the next, so the virtual clock
		// starts again from nothing.
		q.held = false
		clear(q.flows)
		q.vtime, q.seq, q.sweepAt = 0, 0, minSweep
		return
	}
	fl := q.ready[0]
	w := fl.head
	q.unlink(w)
	w.start, w.startSeq = fl.tag, fl.seq
	q.grantTo(fl, w.weight)
	if fl.index >= 0 {
		heap.Fix(&q.ready, fl.index)
	}
	w.isGranted = true
	close(w.granted)
}

// grantTo advances the virtual time to fl's tag and fl's tag past the
// turn it takes.
func (q *fairTurn) grantTo(fl *turnFlow, weight float64) {
	q.vtime = fl.tag
	fl.tag += 1 / weight
	fl.seq = q.nextSeq()
}

func (q *fairTurn) nextSeq() uint64 {
	q.seq++
	return q.seq
}

// unlink takes w out of its flow's list, and the flow out of ready when
// it was the last.
func (q *fairTurn) unlink(w *turnWaiter) {
	fl := w.flow
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		fl.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		fl.tail = w.prev
	}
	w.prev, w.next = nil, nil
	q.waiting--
	if fl.head == nil && fl.index >= 0 {
		heap.Remove(&q.ready, fl.index)
	}
}

// flow returns the entry of name, making one (after sweeping out the
// idle flows, once the table has doubled since the last sweep).
func (q *fairTurn) flow(name string) *turnFlow {
	if fl, ok := q.flows[name]; ok {
		return fl
	}
	if len(q.flows) >= q.sweepAt {
		q.sweep()
		if idle := len(q.flows) - len(q.ready); idle > len(q.ready) && len(q.ready) > 0 {
			// Flows keep coming that the backlogged ones have not yet
			// caught up with: each new one starts at the virtual time,
			// which does not move while they do, so they would hold
			// memory and keep the backlogged flows waiting. Moving the
			// virtual time up to the smallest backlogged tag changes no
			// order among the backlogged flows; it only makes a new flow
			// tie with them instead of going first, and lets the idle
			// flows behind it go.
			q.vtime = max(q.vtime, q.ready[0].tag)
			q.sweep()
		}
		q.sweepAt = max(minSweep, 2*len(q.flows))
	}
	fl := &turnFlow{name: name, tag: q.vtime, index: -1}
	q.flows[name] = fl
	return fl
}

func (q *fairTurn) sweep() {
	for _, fl := range q.flows {
		q.forgetIfIdle(fl)
	}
}

// forgetIfIdle drops fl when it has no waiters and its tag is not ahead
// of the virtual time: it would start at the virtual time anyway.
func (q *fairTurn) forgetIfIdle(fl *turnFlow) {
	if fl.head == nil && fl.tag <= q.vtime && q.flows[fl.name] == fl {
		delete(q.flows, fl.name)
	}
}

// flowHeap orders the backlogged flows by tag, then by when the tag was
// set.
type flowHeap []*turnFlow

func (h flowHeap) Len() int { return len(h) }
func (h flowHeap) Less(i, j int) bool {
	if h[i].tag != h[j].tag {
		return h[i].tag < h[j].tag
	}
	return h[i].seq < h[j].seq
}
func (h flowHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *flowHeap) Push(x any) {
	fl := x.(*turnFlow)
	fl.index = len(*h)
	*h = append(*h, fl)
}
func (h *flowHeap) Pop() any {
	old := *h
	fl := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	fl.index = -1
	return fl
}
