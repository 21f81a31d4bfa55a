package ledger

import (
	"context"

	"github.com/versori/import-worker/versori"
)

// A rollout's backlog is the list, in the order the producer gave them, of
// its organisations registered but not yet handed to the queue. Releasing
// from it rather than enqueueing the whole list at once is what lets canary
// waves hold organisations back and lets rollouts share the fleet fairly.
// It lives in the rollout's cluster slot, so registering a record and
// listing it are one atomic script: a producer that crashes in between
// leaves neither.

// BacklogKey is the Redis key of rollout id's backlog (a list).
func (l *Ledger) BacklogKey(id string) string { return l.keys(id).backlog }

// Enlist is Register for a rollout released from its backlog: each
// organisation new to the rollout gets a pending record with its Position
// and is appended to the backlog, in the order given. It reports each
// organisation's state before the call, "" when new. Batches run one after
// another, so positions follow the list across batches; calling again with
// the same list adds nothing.
func (l *Ledger) Enlist(ctx context.Context, rolloutID string, orgIDs []versori.OrgID) ([]State, error) {
	if err := l.checkBatch(ctx, rolloutID, orgIDs); err != nil || len(orgIDs) == 0 {
		return nil, err
	}
	k := l.keys(rolloutID)
	keys := []string{k.def, k.orgs, k.counts, k.backlog}
	rec := pendingRecord(l.opts.Clock())
	out := make([]State, 0, len(orgIDs))
	for lo := 0; lo < len(orgIDs); lo += l.opts.BatchSize {
		hi := min(lo+l.opts.BatchSize, len(orgIDs))
		states, err := l.register(ctx, rolloutID, keys, orgIDs[lo:hi], rec)
		out = append(out, states...)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// BatchSize is how many organisations one script call handles
// (Options.BatchSize).
func (l *Ledger) BatchSize() int { return l.opts.BatchSize }
