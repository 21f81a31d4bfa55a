package ledger

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/versori/import-worker/versori"
)

// Finished is what recording an outcome did.
type Finished struct {
	// Changed reports whether the record changed (false for a record that
	// had finished already, which counts once).
	Changed bool
	// Pending is how many of the rollout's organisations are pending
	// after the write: 0 means the rollout may be done.
	Pending int64
}

// OrgOutcome is one organisation's outcome, for FinishAll.
type OrgOutcome struct {
	OrgID   versori.OrgID
	Outcome Outcome
}

// FinishResult is FinishAll's answer for one organisation: what the write
// did, or why it was refused (ErrOrgNotFound, ErrInvalidID,
// ErrInvalidClass, ErrInvalidOutcome).
type FinishResult struct {
	Finished
	Err error
}

// FinishAll records the outcomes of organisations of one rollout in one
// script call, in order, each as Finish would; one listed twice is applied
// twice, the second write seeing the first. The error is for the call as a
// whole (Redis, an unknown rollout); a refused organisation has its own in
// its result, and does not stop the others. With Options.WaitReplicas, an
// error wrapping ErrNotReplicated comes with the results: the writes
// happened, and a caller that writes them again must remember which
// changed (the second write finds them finished).
func (l *Ledger) FinishAll(ctx context.Context, rolloutID string, outs []OrgOutcome) ([]FinishResult, error) {
	if err := checkID("rollout", rolloutID, true); err != nil {
		return nil, err
	}
	fb := l.newFinishBatch(rolloutID, outs)
	if len(fb.sent) == 0 {
		return fb.res, nil
	}
	script, waitErr := l.sendFinish(ctx, l.keys(rolloutID), fb, nil)
	res, err := fb.results(script.Val(), script.Err())
	if err != nil {
		return nil, err
	}
	return res, waitErr
}

// sendFinish sends fb's script call, then what more adds to the pipeline
// (the Batcher's reads), then, when Options.WaitReplicas asks for it, a
// WAIT, in one round trip on one connection: WAIT counts the writes of the
// connection it is sent on, so on another one it would prove nothing. A
// Redis that lost its scripts (restarted, SCRIPT FLUSH) gets the pipeline
// again with the script's text. waitErr is the WAIT's verdict; the
// script's own answer is in script either way, since the write happened.
func (l *Ledger) sendFinish(ctx context.Context, k keys, fb *finishBatch, more func(redis.Pipeliner)) (script *redis.Cmd, waitErr error) {
	var on interface{ Pipeline() redis.Pipeliner } = l.rdb
	if cc, ok := l.rdb.(*redis.ClusterClient); ok && l.opts.WaitReplicas > 0 {
		// WAIT has no key: the pipeline goes to the master of the slot.
		node, err := cc.MasterForKey(ctx, k.orgs)
		if err != nil {
			script = redis.NewCmd(ctx)
			script.SetErr(err)
			return script, nil
		}
		on = node
	}
	var wait *redis.Cmd
	send := func(text bool) {
		pipe := on.Pipeline()
		if text {
			script = finishScript.Eval(ctx, pipe, k.list(), fb.args...)
		} else {
			script = finishScript.EvalSha(ctx, pipe, k.list(), fb.args...)
		}
		if more != nil {
			more(pipe)
		}
		if l.opts.WaitReplicas > 0 {
			wait = pipe.Do(ctx, "WAIT", l.opts.WaitReplicas, l.opts.WaitTimeout.Milliseconds())
		}
		if _, err := pipe.Exec(ctx); err != nil && script.Err() == nil && script.Val() == nil {
			// Not sent at all (no connection): the commands hold no
			// error of their own.
			script.SetErr(err)
		}
	}
	send(false)
	if redis.HasErrorPrefix(script.Err(), "NOSCRIPT") {
		send(true)
	}
	if wait == nil || script.Err() != nil {
		return script, nil
	}
	n, err := wait.Int64()
	switch {
	case err != nil:
		return script, fmt.Errorf("ledger: wait for replicas: %w", err)
	case n < int64(l.opts.WaitReplicas):
		return script, fmt.Errorf("ledger: outcomes written, but %d of %d replicas acknowledged them within %s: %w", n, l.opts.WaitReplicas, l.opts.WaitTimeout, ErrNotReplicated)
	}
	return script, nil
}

// finishBatch is one call of finishScript: its arguments, and the results
// of the outcomes refused before it (sent lists those it carries).
type finishBatch struct {
	rolloutID string
	args      []any
	sent      []int
	res       []FinishResult
}

func (l *Ledger) newFinishBatch(rolloutID string, outs []OrgOutcome) *finishBatch {
	fb := &finishBatch{
		rolloutID: rolloutID,
		args:      make([]any, 1, 1+finishFields*len(outs)),
		sent:      make([]int, 0, len(outs)),
		res:       make([]FinishResult, len(outs)),
	}
	fb.args[0] = l.opts.Clock().UnixMilli()
	for i, oo := range outs {
		if err := l.checkOutcome(oo.OrgID, oo.Outcome); err != nil {
			fb.res[i].Err = err
			continue
		}
		o := oo.Outcome
		count := 0
		if o.CountAttempt {
			count = 1
		}
		fb.args = append(fb.args, string(oo.OrgID), string(o.State), o.Class, o.HTTPStatus, sanitize(o.Error, l.opts.MaxErrorLen),
			sanitize(o.ConnectorID, maxAPIFieldLen), sanitize(o.Version, maxAPIFieldLen),
			o.Duration.Microseconds(), count)
		fb.sent = append(fb.sent, i)
	}
	return fb
}

// results reads the script's answer v (or its error) into the results.
func (fb *finishBatch) results(v any, err error) ([]FinishResult, error) {
	if err != nil {
		return nil, fmt.Errorf("ledger: finish %d organisations in rollout %q: %w", len(fb.sent), fb.rolloutID, err)
	}
	codes, ok := v.([]any)
	if !ok {
		if code, isInt := v.(int64); isInt {
			return nil, scriptErr(code, fb.rolloutID, "")
		}
		return nil, fmt.Errorf("ledger: finish organisations in rollout %q: unexpected script result %v", fb.rolloutID, v)
	}
	if len(codes) != len(fb.sent)+1 {
		return nil, fmt.Errorf("ledger: finish organisations in rollout %q: %d results for %d organisations", fb.rolloutID, len(codes)-1, len(fb.sent))
	}
	pending, _ := codes[0].(int64)
	for j, i := range fb.sent {
		code, _ := codes[j+1].(int64)
		if code < 0 {
			// The organisation's ID is in the arguments: 1 + 9j + 0.
			fb.res[i].Err = scriptErr(code, fb.rolloutID, fb.args[1+finishFields*j].(string))
			continue
		}
		fb.res[i].Finished = Finished{Changed: code == 1, Pending: pending}
	}
	return fb.res, nil
}

// checkOutcome refuses what Finish cannot record.
func (l *Ledger) checkOutcome(orgID versori.OrgID, o Outcome) error {
	if err := checkOrg(orgID); err != nil {
		return err
	}
	if o.State != Succeeded && o.State != Failed {
		return fmt.Errorf("ledger: finish organisation %q with state %q: %w", orgID, o.State, ErrInvalidOutcome)
	}
	return checkClass(o.Class)
}
