package ledger

import (
	"context"
	"fmt"
	"sync"
)

// Default of BatcherOptions.
const (
	// DefaultMaxBatch bounds how many calls one round trip carries. A
	// worker's handlers number in the tens, so it is rarely reached; it
	// bounds how long one script holds Redis.
	DefaultMaxBatch = 256
)

// BatcherOptions configure a Batcher. The zero value is usable.
type BatcherOptions struct {
	// MaxBatch bounds the calls one round trip carries. Default
	// DefaultMaxBatch.
	MaxBatch int
}

// Batcher is a Ledger whose Org and Finish calls, made at once by many
// goroutines (a worker's handlers), share Redis round trips: a group
// commit. A call that finds no batch of its rollout in flight is sent at
// once; calls that come while one is in flight wait for it and then go
// together, in one HMGET or one script call, so the batch grows with the
// load and an idle worker waits for nothing. At figure 2's 50 handlers
// this halves the worker's round trips per organisation, and a round trip
// (two system calls on each side) is most of what the pipeline costs
// beyond asynq's own.
//
// Every other method is the Ledger's. Each call still gets its own answer:
// a batch is one Redis command, not one outcome. A batch's error (Redis
// away) is every one of its calls' error, and each caller retries as it
// would have.
type Batcher struct {
	*Ledger
	reads    batchGroup[string, Record]
	finishes batchGroup[OrgOutcome, Finished]
}

// NewBatcher returns a Batcher in front of l.
func NewBatcher(l *Ledger, opts BatcherOptions) *Batcher {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = DefaultMaxBatch
	}
	b := &Batcher{Ledger: l}
	b.reads = batchGroup[string, Record]{max: opts.MaxBatch, flush: b.flushReads}
	b.finishes = batchGroup[OrgOutcome, Finished]{max: opts.MaxBatch, flush: b.flushFinishes}
	return b
}

// Org returns one organisation's record, as Ledger.Org, reading it in one
// HMGET with the other records of its rollout asked for meanwhile.
func (b *Batcher) Org(ctx context.Context, rolloutID, orgID string) (Record, error) {
	if err := checkIDs(rolloutID, orgID); err != nil {
		return Record{}, err
	}
	return b.reads.do(ctx, rolloutID, orgID)
}

// Finish records how an organisation finished, as Ledger.Finish, in one
// script call with the other outcomes of its rollout recorded meanwhile.
func (b *Batcher) Finish(ctx context.Context, rolloutID, orgID string, o Outcome) (Finished, error) {
	if err := checkID("rollout", rolloutID, true); err != nil {
		return Finished{}, err
	}
	if err := b.checkOutcome(orgID, o); err != nil {
		return Finished{}, err
	}
	return b.finishes.do(ctx, rolloutID, OrgOutcome{OrgID: orgID, Outcome: o})
}

func (b *Batcher) flushReads(ctx context.Context, rolloutID string, calls []*batchCall[string, Record]) {
	k := b.keys(rolloutID)
	fields := make([]string, len(calls))
	for i, c := range calls {
		fields[i] = c.req
	}
	vals, err := b.rdb.HMGet(ctx, k.orgs, fields...).Result()
	if err == nil && len(vals) != len(calls) {
		err = fmt.Errorf("%d values for %d fields", len(vals), len(calls))
	}
	if err != nil {
		err = fmt.Errorf("ledger: read %d organisations in rollout %q: %w", len(calls), rolloutID, err)
	}
	for i, c := range calls {
		if err != nil {
			c.err = err
			continue
		}
		switch raw := vals[i].(type) {
		case nil:
			c.err = b.missing(ctx, k, rolloutID, c.req)
		case string:
			c.res, c.err = decodeRecord(c.req, raw)
		default:
			c.err = fmt.Errorf("ledger: read organisation %q in rollout %q: unexpected value %T", c.req, rolloutID, raw)
		}
	}
}

func (b *Batcher) flushFinishes(ctx context.Context, rolloutID string, calls []*batchCall[OrgOutcome, Finished]) {
	outs := make([]OrgOutcome, len(calls))
	for i, c := range calls {
		outs[i] = c.req
	}
	res, err := b.FinishAll(ctx, rolloutID, outs)
	for i, c := range calls {
		if err != nil {
			c.err = err
			continue
		}
		c.res, c.err = res[i].Finished, res[i].Err
	}
}

// batchGroup runs calls keyed by rollout in batches: at most one batch per
// rollout in flight, the calls that arrive meanwhile queued for the next.
// The caller whose call finds the rollout idle sends the batch itself, and
// hands the turn to the first call still queued when its batch is back, so
// no goroutine serves other callers' batches for longer than one round trip
// and none is started for it.
type batchGroup[Req, Res any] struct {
	max   int
	flush func(ctx context.Context, rolloutID string, calls []*batchCall[Req, Res])

	mu    sync.Mutex
	lanes map[string]*batchLane[Req, Res]
}

type batchLane[Req, Res any] struct {
	queue []*batchCall[Req, Res]
}

// batchCall is one caller's request; res and err are set before done is
// closed. turn is signalled when the call must send the next batch.
type batchCall[Req, Res any] struct {
	req  Req
	res  Res
	err  error
	done chan struct{}
	turn chan struct{}
}

// do queues req in its rollout's lane and returns its answer. It waits for
// the batch that carries req even when ctx ends first: the write may have
// happened, and the caller must learn what it did (a Finish whose answer
// is lost would count the organisation's outcome nowhere). The Redis
// client's read and write timeouts bound that wait; the batch runs on ctx's
// values without its cancellation, so one caller giving up does not fail
// the others' calls.
func (g *batchGroup[Req, Res]) do(ctx context.Context, rolloutID string, req Req) (Res, error) {
	c := &batchCall[Req, Res]{req: req, done: make(chan struct{}), turn: make(chan struct{}, 1)}
	g.mu.Lock()
	if g.lanes == nil {
		g.lanes = map[string]*batchLane[Req, Res]{}
	}
	l, busy := g.lanes[rolloutID]
	if !busy {
		l = &batchLane[Req, Res]{}
		g.lanes[rolloutID] = l
	}
	l.queue = append(l.queue, c)
	g.mu.Unlock()
	if busy {
		select {
		case <-c.done:
			return c.res, c.err
		case <-c.turn:
		}
	}
	g.send(ctx, rolloutID, l)
	<-c.done
	return c.res, c.err
}

// send sends the lane's next batch, which holds the caller's own call
// (first in the queue), then passes the turn on or retires the lane.
func (g *batchGroup[Req, Res]) send(ctx context.Context, rolloutID string, l *batchLane[Req, Res]) {
	g.mu.Lock()
	n := min(len(l.queue), g.max)
	batch := make([]*batchCall[Req, Res], n)
	copy(batch, l.queue)
	l.queue = l.queue[n:]
	g.mu.Unlock()

	g.flush(context.WithoutCancel(ctx), rolloutID, batch)
	for _, c := range batch {
		close(c.done)
	}

	g.mu.Lock()
	if len(l.queue) == 0 {
		delete(g.lanes, rolloutID)
	} else {
		l.queue[0].turn <- struct{}{}
	}
	g.mu.Unlock()
}
