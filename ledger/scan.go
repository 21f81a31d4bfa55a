package ledger

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/versori/import-worker/versori"
)

// ErrStop, returned by a Scan callback, ends the scan early without error.
var ErrStop = errors.New("stop scan")

// Filter selects records in ScanFilter. Empty fields select everything.
type Filter struct {
	States  []State
	Classes []string
}

func (f Filter) match(r Record) bool {
	return (len(f.States) == 0 || slices.Contains(f.States, r.State)) &&
		(len(f.Classes) == 0 || slices.Contains(f.Classes, r.Class))
}

// Scan calls fn for every record of a rollout, in no particular order. It
// streams with HSCAN, Options.ScanCount records at a time, so memory does
// not grow with the rollout. As with HSCAN, a record present for the whole
// scan is seen at least once, and may be seen twice if the hash is resized
// meanwhile; records added or changed during the scan may or may not be
// seen, and fn may itself change records. An error from fn stops the scan
// and is returned, except ErrStop which stops it quietly.
func (l *Ledger) Scan(ctx context.Context, rolloutID string, fn func(Record) error) error {
	return l.ScanFilter(ctx, rolloutID, Filter{}, fn)
}

// ScanFilter is Scan restricted to the records f selects.
func (l *Ledger) ScanFilter(ctx context.Context, rolloutID string, f Filter, fn func(Record) error) error {
	if err := checkID("rollout", rolloutID, true); err != nil {
		return err
	}
	k := l.keys(rolloutID)
	n, err := l.rdb.Exists(ctx, k.def).Result()
	if err != nil {
		return fmt.Errorf("ledger: scan rollout %q: %w", rolloutID, err)
	}
	if n == 0 {
		return scriptErr(-1, rolloutID, "")
	}
	var cursor uint64
	for {
		kv, next, err := l.rdb.HScan(ctx, k.orgs, cursor, "", int64(l.opts.ScanCount)).Result()
		if err != nil {
			return fmt.Errorf("ledger: scan rollout %q: %w", rolloutID, err)
		}
		for i := 0; i+1 < len(kv); i += 2 {
			r, err := decodeRecord(kv[i], kv[i+1])
			if err != nil {
				return fmt.Errorf("ledger: scan rollout %q: %w", rolloutID, err)
			}
			if !f.match(r) {
				continue
			}
			if err := fn(r); err != nil {
				if errors.Is(err, ErrStop) {
					return nil
				}
				return err
			}
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}

// Failed streams the failed records of a rollout whose class is one of
// classes (any class when classes is empty): what a retry re-drives.
func (l *Ledger) Failed(ctx context.Context, rolloutID string, classes []string, fn func(Record) error) error {
	return l.ScanFilter(ctx, rolloutID, Filter{States: []State{Failed}, Classes: classes}, fn)
}

// Recount computes a rollout's counters from its records, without writing
// anything. On a quiet rollout it equals the counters Rollout reads; it
// exists to check them, and costs a full scan.
func (l *Ledger) Recount(ctx context.Context, rolloutID string) (Counts, error) {
	c := Counts{
		ByClass:         map[string]int64{},
		RetryingByClass: map[string]int64{},
		ByVersion:       map[string]int64{},
	}
	// HSCAN may return a record twice; count each organisation once.
	seen := map[versori.OrgID]struct{}{}
	err := l.Scan(ctx, rolloutID, func(r Record) error {
		if _, dup := seen[r.OrgID]; dup {
			return nil
		}
		seen[r.OrgID] = struct{}{}
		c.Total++
		switch r.State {
		case Pending:
			c.Pending++
			if r.Attempts > 0 {
				c.Retrying++
				if r.Class != "" {
					c.RetryingByClass[r.Class]++
				}
			}
		case Succeeded, Failed:
			if r.State == Succeeded {
				c.Succeeded++
				if r.Version != "" {
					c.ByVersion[r.Version]++
				}
			} else {
				c.Failed++
			}
			if r.Class != "" {
				c.ByClass[r.Class]++
			}
		case Cancelled:
			c.Cancelled++
		}
		return nil
	})
	if err != nil {
		return Counts{}, err
	}
	return c, nil
}
