package ledger

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/versori/import-worker/versori"
)

// Attempt describes an API call that did not finish an organisation: it
// will be retried.
type Attempt struct {
	Class      string
	HTTPStatus int
	Error      string
	Duration   time.Duration
}

// Outcome describes how an organisation finished.
type Outcome struct {
	// State is Succeeded or Failed.
	State      State
	Class      string
	HTTPStatus int
	// Error is kept for failures; it is trimmed to Options.MaxErrorLen.
	Error string
	// ConnectorID and Version are what the API returned; the import
	// handler leaves ConnectorID empty when it is the rollout's own.
	ConnectorID string
	Version     string
	Duration    time.Duration
	// CountAttempt adds one to the record's attempts: set it when the
	// outcome comes from an API call not already recorded by Attempt.
	CountAttempt bool
}

// Attempt records a call that left the organisation pending (a retry
// follows): attempts+1, and the call's class, status, error and duration.
// The record then counts as retrying. A record that is no longer pending
// (finished or cancelled meanwhile) is left alone.
func (l *Ledger) Attempt(ctx context.Context, rolloutID string, orgID versori.OrgID, a Attempt) error {
	if err := checkIDs(rolloutID, orgID); err != nil {
		return err
	}
	if err := checkClass(a.Class); err != nil {
		return err
	}
	code, err := attemptScript.Run(ctx, l.rdb, l.keys(rolloutID).list(),
		string(orgID), a.Class, a.HTTPStatus, sanitize(a.Error, l.opts.MaxErrorLen),
		a.Duration.Microseconds(), l.opts.Clock().UnixMilli()).Int64()
	if err != nil {
		return fmt.Errorf("ledger: record attempt of organisation %q in rollout %q: %w", orgID, rolloutID, err)
	}
	if code < 0 {
		return scriptErr(code, rolloutID, string(orgID))
	}
	return nil
}

// Finish records how an organisation finished. A succeeded record never
// changes; a failed or cancelled one changes only to succeeded (the import
// did happen); a pending one changes to either. Counters move only when the
// record changes, so a task delivered twice is counted once. The result
// says whether the record changed and how many of the rollout's
// organisations are still pending.
func (l *Ledger) Finish(ctx context.Context, rolloutID string, orgID versori.OrgID, o Outcome) (Finished, error) {
	res, err := l.FinishAll(ctx, rolloutID, []OrgOutcome{{OrgID: orgID, Outcome: o}})
	switch {
	case res == nil:
		return Finished{}, err
	case res[0].Err != nil:
		return res[0].Finished, res[0].Err
	}
	// An ErrNotReplicated comes with what the write did.
	return res[0].Finished, err
}

// Org returns one organisation's record.
func (l *Ledger) Org(ctx context.Context, rolloutID string, orgID versori.OrgID) (Record, error) {
	if err := checkIDs(rolloutID, orgID); err != nil {
		return Record{}, err
	}
	k := l.keys(rolloutID)
	raw, err := l.rdb.HGet(ctx, k.orgs, string(orgID)).Result()
	if errors.Is(err, redis.Nil) {
		return Record{}, l.missing(ctx, k, rolloutID, orgID)
	}
	if err != nil {
		return Record{}, fmt.Errorf("ledger: read organisation %q in rollout %q: %w", orgID, rolloutID, err)
	}
	return decodeRecord(string(orgID), raw)
}

// Succeeded reports whether the organisation's record is succeeded: the
// import handler's check before calling the API. It is one HGET.
func (l *Ledger) Succeeded(ctx context.Context, rolloutID string, orgID versori.OrgID) (bool, error) {
	r, err := l.Org(ctx, rolloutID, orgID)
	if err != nil {
		return false, err
	}
	return r.State == Succeeded, nil
}

// missing tells a missing organisation from a missing rollout.
func (l *Ledger) missing(ctx context.Context, k keys, rolloutID string, orgID versori.OrgID) error {
	n, err := l.rdb.Exists(ctx, k.def).Result()
	if err != nil {
		return fmt.Errorf("ledger: read rollout %q: %w", rolloutID, err)
	}
	if n == 0 {
		return scriptErr(-1, rolloutID, string(orgID))
	}
	return scriptErr(-2, rolloutID, string(orgID))
}

// Requeue moves the listed organisations that are failed back to pending,
// for a retry, and returns how many moved. Others (succeeded, pending,
// cancelled or unknown) are left alone. The records keep their attempts and
// last error, so they count as retrying until they finish again.
func (l *Ledger) Requeue(ctx context.Context, rolloutID string, orgIDs []versori.OrgID) (int, error) {
	moved, err := l.transition(ctx, rolloutID, orgIDs, Failed, Pending)
	return len(moved), err
}

// ClaimFailed is Requeue returning which organisations this call moved, in
// the order listed. The move is atomic per batch, so of two retries running
// at once each organisation is claimed by one only, and a caller that
// enqueues tasks for what it claimed never counts or enqueues another's.
func (l *Ledger) ClaimFailed(ctx context.Context, rolloutID string, orgIDs []versori.OrgID) ([]versori.OrgID, error) {
	return l.transition(ctx, rolloutID, orgIDs, Failed, Pending)
}

// Cancel moves the listed organisations that are pending to cancelled and
// returns how many moved. Others are left alone.
func (l *Ledger) Cancel(ctx context.Context, rolloutID string, orgIDs []versori.OrgID) (int, error) {
	moved, err := l.transition(ctx, rolloutID, orgIDs, Pending, Cancelled)
	return len(moved), err
}

// transition moves the listed organisations found in state from to state to
// and returns those it moved.
func (l *Ledger) transition(ctx context.Context, rolloutID string, orgIDs []versori.OrgID, from, to State) ([]versori.OrgID, error) {
	if err := checkID("rollout", rolloutID, true); err != nil {
		return nil, err
	}
	for _, id := range orgIDs {
		if err := checkOrg(id); err != nil {
			return nil, err
		}
	}
	if len(orgIDs) == 0 {
		_, _, err := l.Rollout(ctx, rolloutID)
		return nil, err
	}
	k := l.keys(rolloutID).list()
	var moved []versori.OrgID
	for start := 0; start < len(orgIDs); start += l.opts.BatchSize {
		batch := orgIDs[start:min(start+l.opts.BatchSize, len(orgIDs))]
		args := make([]any, 0, len(batch)+3)
		args = append(args, string(from), string(to), l.opts.Clock().UnixMilli())
		for _, id := range batch {
			args = append(args, string(id))
		}
		res, err := transitionScript.Run(ctx, l.rdb, k, args...).Result()
		if err != nil {
			return moved, fmt.Errorf("ledger: move organisations of rollout %q from %s to %s: %w", rolloutID, from, to, err)
		}
		switch v := res.(type) {
		case int64:
			return moved, scriptErr(v, rolloutID, "")
		case []any:
			for _, id := range v {
				s, ok := id.(string)
				if !ok {
					return moved, fmt.Errorf("ledger: move organisations of rollout %q: unexpected script result %v", rolloutID, res)
				}
				moved = append(moved, versori.OrgID(s))
			}
		default:
			return moved, fmt.Errorf("ledger: move organisations of rollout %q: unexpected script result %v", rolloutID, res)
		}
	}
	return moved, nil
}

func checkIDs(rolloutID string, orgID versori.OrgID) error {
	if err := checkID("rollout", rolloutID, true); err != nil {
		return err
	}
	return checkOrg(orgID)
}
