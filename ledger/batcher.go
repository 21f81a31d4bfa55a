package ledger

import (
	"context"
	"fmt"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/versori/import-worker/versori"
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
// together, the reads in one HMGET and the finishes in one script call,
// both in one round trip, so the batch grows with the load and an idle
// worker waits for nothing. A round trip (two system calls on each side)
// is most of what the pipeline costs beyond asynq's own; see figure 2 of
// BENCHMARKS.md.
//
// Every other method is the Ledger's. Each call still gets its own answer:
// a batch is one Redis command, not one outcome. A batch's error (Redis
// away) is every one of its calls' error, and each caller retries as it
// would have.
type Batcher struct {
	*Ledger
	calls batchGroup[batchReq, batchRes]
}

// batchReq is a read (finish nil) or a finish.
type batchReq struct {
	orgID  versori.OrgID
	finish *Outcome
}

type batchRes struct {
	rec Record
	fin Finished
}

// NewBatcher returns a Batcher in front of l.
func NewBatcher(l *Ledger, opts BatcherOptions) *Batcher {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = DefaultMaxBatch
	}
	b := &Batcher{Ledger: l}
	b.calls = batchGroup[batchReq, batchRes]{max: opts.MaxBatch, flush: b.flush}
	return b
}

// Org returns one organisation's record, as Ledger.Org, reading it in one
// HMGET with the other records of its rollout asked for meanwhile.
func (b *Batcher) Org(ctx context.Context, rolloutID string, orgID versori.OrgID) (Record, error) {
	if err := checkIDs(rolloutID, orgID); err != nil {
		return Record{}, err
	}
	res, err := b.calls.do(ctx, rolloutID, batchReq{orgID: orgID})
	return res.rec, err
}

// Finish records how an organisation finished, as Ledger.Finish, in one
// script call with the other outcomes of its rollout recorded meanwhile.
func (b *Batcher) Finish(ctx context.Context, rolloutID string, orgID versori.OrgID, o Outcome) (Finished, error) {
	if err := checkID("rollout", rolloutID, true); err != nil {
		return Finished{}, err
	}
	if err := b.checkOutcome(orgID, o); err != nil {
		return Finished{}, err
	}
	res, err := b.calls.do(ctx, rolloutID, batchReq{orgID: orgID, finish: &o})
	return res.fin, err
}

// flush sends one batch: its finishes first, so that its reads see them,
// then its reads, pipelined when it has both.
func (b *Batcher) flush(ctx context.Context, rolloutID string, calls []*batchCall[batchReq, batchRes]) {
	k := b.keys(rolloutID)
	var reads, finishes []*batchCall[batchReq, batchRes]
	var fields []string
	var outs []OrgOutcome
	for _, c := range calls {
		if c.req.finish == nil {
			reads = append(reads, c)
			fields = append(fields, string(c.req.orgID))
		} else {
			finishes = append(finishes, c)
			outs = append(outs, OrgOutcome{OrgID: c.req.orgID, Outcome: *c.req.finish})
		}
	}
	var fb *finishBatch
	if len(outs) > 0 {
		fb = b.newFinishBatch(rolloutID, outs)
	}
	write := fb != nil && len(fb.sent) > 0 // else every outcome was refused before Redis
	var (
		fin     *redis.Cmd
		hm      *redis.SliceCmd
		waitErr error
	)
	switch {
	case write:
		var more func(redis.Pipeliner)
		if len(reads) > 0 {
			more = func(pipe redis.Pipeliner) { hm = pipe.HMGet(ctx, k.orgs, fields...) }
		}
		fin, waitErr = b.sendFinish(ctx, k, fb, more)
	case len(reads) > 0:
		hm = b.rdb.HMGet(ctx, k.orgs, fields...)
	}
	if fb != nil {
		res, err := fb.res, error(nil)
		if write {
			res, err = fb.results(fin.Val(), fin.Err())
		}
		for i, c := range finishes {
			if err != nil {
				c.err = err
				continue
			}
			c.res.fin, c.err = res[i].Finished, res[i].Err
			if c.err == nil {
				c.err = waitErr
			}
		}
	}
	if hm != nil {
		b.readResults(ctx, k, rolloutID, reads, hm)
	}
}

// readResults hands each read of a batch its record, or its error.
func (b *Batcher) readResults(ctx context.Context, k keys, rolloutID string, reads []*batchCall[batchReq, batchRes], hm *redis.SliceCmd) {
	vals, err := hm.Result()
	if err == nil && len(vals) != len(reads) {
		err = fmt.Errorf("%d values for %d fields", len(vals), len(reads))
	}
	if err != nil {
		err = fmt.Errorf("ledger: read %d organisations in rollout %q: %w", len(reads), rolloutID, err)
	}
	for i, c := range reads {
		if err != nil {
			c.err = err
			continue
		}
		switch raw := vals[i].(type) {
		case nil:
			c.err = b.missing(ctx, k, rolloutID, c.req.orgID)
		case string:
			c.res.rec, c.err = decodeRecord(string(c.req.orgID), raw)
		default:
			c.err = fmt.Errorf("ledger: read organisation %q in rollout %q: unexpected value %T", c.req.orgID, rolloutID, raw)
		}
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

	// Answer the batch and pass the turn on even if flush panics (asynq
	// recovers a handler's panic): a lane left busy would hold every later
	// call of the rollout for good.
	defer func() {
		if p := recover(); p != nil {
			for _, c := range batch {
				c.err = fmt.Errorf("ledger: batch of rollout %q: panic: %v", rolloutID, p)
			}
			defer panic(p)
		}
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
	}()
	g.flush(context.WithoutCancel(ctx), rolloutID, batch)
}
